//! gRPC client for the control plane's Unix socket, used by the CLI and the roles.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::pb::control_client::ControlClient;

/// A connected control-plane client.
pub type Client = ControlClient<Channel>;

/// Connects to the control plane listening on the Unix socket at `path`.
pub async fn connect(path: &Path) -> anyhow::Result<Client> {
    let path: PathBuf = path.to_owned();
    if !path.exists() {
        anyhow::bail!(
            "no control plane socket at {}; start the cluster with `ferry up --config <file>` or point --control / FERRY_CONTROL at its socket",
            path.display()
        );
    }
    check_owner(&path)?;
    let socket = path.clone();
    let channel = Endpoint::try_from("http://ferry-control.invalid")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| {
            format!(
                "cannot connect to the control plane at {}; is `ferry up` / `ferry control` running?",
                path.display()
            )
        })?;
    Ok(ControlClient::new(channel))
}

/// Refuses a socket another user owns: whoever created it could impersonate the control
/// plane (and collect the certificate requests and tokens sent to it).
fn check_owner(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)
        .with_context(|| format!("cannot read the control plane socket {}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        anyhow::bail!(
            "the control plane socket {} is owned by uid {}, not by you (uid {me}); refusing to use a socket another user could have put there. Run as the cluster's user or fix the path",
            path.display(),
            meta.uid()
        );
    }
    Ok(())
}

/// Turns a gRPC status into an error carrying the server's message only.
pub fn status_error(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}
