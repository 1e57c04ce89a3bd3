//! `ferry trust init` and `ferry trust issue`: the mesh root CA and a cluster's
//! intermediate CA, written to directories with private keys in mode-0600 files.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use ferry_federation::{ClusterId, TrustDomain};
use ferry_gateway::pki::{self, Ca};

const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const CLUSTER_CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

fn refuse_overwrite(path: &Path) -> anyhow::Result<()> {
    if path.exists() {
        anyhow::bail!(
            "{} already exists; refusing to overwrite key material (choose another --out or remove it)",
            path.display()
        );
    }
    Ok(())
}

/// Creates a mesh root CA in `out`: `root.crt`, `root.key` (0600).
pub fn init(td: &TrustDomain, out: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (crt, key) = (out.join("root.crt"), out.join("root.key"));
    refuse_overwrite(&crt)?;
    refuse_overwrite(&key)?;
    let root = pki::create_root(td, SystemTime::now(), ROOT_VALIDITY)?;
    pki::write_secret_file(&key, root.key_pem.as_bytes())?;
    pki::write_public_file(&crt, root.cert_pem.as_bytes())?;
    Ok(())
}

/// Creates `cluster`'s intermediate CA from the root in `root_dir`, into `out`:
/// `ca.crt`, `ca.key` (0600) and `bundle.crt` (the roots peers are checked against).
/// `validity` defaults to a year; it never reaches past the root's end.
pub fn issue(
    root_dir: &Path,
    cluster: &ClusterId,
    out: &Path,
    validity: Option<std::time::Duration>,
) -> anyhow::Result<()> {
    let read = |name: &str| {
        std::fs::read_to_string(root_dir.join(name)).with_context(|| {
            format!(
                "cannot read {}; --root must be a directory made by `ferry trust init`",
                root_dir.join(name).display()
            )
        })
    };
    let root_pem = read("root.crt")?;
    let root = Ca::from_pem(&root_pem, &read("root.key")?)
        .with_context(|| format!("invalid root CA in {}", root_dir.display()))?;
    if root.cluster().is_some() {
        anyhow::bail!(
            "{} holds a cluster CA, not a root; pass the `ferry trust init` directory",
            root_dir.display()
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (crt, key, bundle) = (
        out.join("ca.crt"),
        out.join("ca.key"),
        out.join("bundle.crt"),
    );
    refuse_overwrite(&crt)?;
    refuse_overwrite(&key)?;
    let validity = validity.unwrap_or(CLUSTER_CA_VALIDITY);
    let ca = pki::create_cluster_ca(&root, cluster, SystemTime::now(), validity)?;
    pki::write_secret_file(&key, ca.key_pem.as_bytes())?;
    pki::write_public_file(&crt, ca.cert_pem.as_bytes())?;
    pki::write_public_file(&bundle, root_pem.as_bytes())?;
    Ok(())
}
