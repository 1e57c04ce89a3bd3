//! Follows the control plane's snapshot stream into a local watch channel.
//!
//! The data plane reads the watch channel only. When the control plane is down the
//! last snapshot stays in force and the follower reconnects with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_federation::MeshSnapshot;
use tokio::sync::watch;
use tonic::Streaming;

use crate::client;
use crate::pb;

/// Connects, waits for the first snapshot, then keeps the channel fed in the background.
pub async fn follow(socket: PathBuf) -> anyhow::Result<watch::Receiver<Arc<MeshSnapshot>>> {
    let mut stream = open(&socket).await?;
    let first = stream
        .message()
        .await
        .map_err(client::status_error)?
        .ok_or_else(|| anyhow::anyhow!("the control plane closed the snapshot stream"))?;
    let first: MeshSnapshot = serde_json::from_str(&first.snapshot_json)?;
    let (tx, rx) = watch::channel(Arc::new(first));
    let tx = Arc::new(tx);
    let watcher = tx.clone();
    tokio::spawn(async move {
        pump(
            socket,
            Some(stream),
            || watcher.is_closed(),
            |s| {
                tx.send_replace(Arc::new(s));
                !tx.is_closed()
            },
        )
        .await
    });
    Ok(rx)
}

/// Returns at once with `None` in the channel; snapshots replace it as they arrive, whether
/// or not the control plane is up yet (for the DNS server, which must answer SERVFAIL rather
/// than nothing until it knows the mesh).
pub fn follow_lazy(socket: PathBuf) -> watch::Receiver<Option<Arc<MeshSnapshot>>> {
    let (tx, rx) = watch::channel(None);
    let tx = Arc::new(tx);
    let watcher = tx.clone();
    tokio::spawn(async move {
        pump(
            socket,
            None,
            || watcher.is_closed(),
            |s| {
                tx.send_replace(Some(Arc::new(s)));
                !tx.is_closed()
            },
        )
        .await
    });
    rx
}

async fn open(socket: &std::path::Path) -> anyhow::Result<Streaming<pb::SnapshotMessage>> {
    let mut client = client::connect(socket).await?;
    Ok(client
        .watch(pb::Empty {})
        .await
        .map_err(client::status_error)?
        .into_inner())
}

/// Feeds `publish` from the stream, reconnecting forever, until `publish` returns false or
/// `closed` says nobody listens any more.
async fn pump(
    socket: PathBuf,
    mut stream: Option<Streaming<pb::SnapshotMessage>>,
    closed: impl Fn() -> bool,
    mut publish: impl FnMut(MeshSnapshot) -> bool,
) {
    loop {
        if let Some(s) = stream.as_mut() {
            while let Ok(Some(msg)) = s.message().await {
                match serde_json::from_str::<MeshSnapshot>(&msg.snapshot_json) {
                    Ok(snapshot) => {
                        if !publish(snapshot) {
                            return;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "undecodable snapshot ignored"),
                }
            }
            tracing::warn!("snapshot stream lost; serving the last snapshot and reconnecting");
        }
        let had_stream = stream.take().is_some();
        if had_stream {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        while stream.is_none() {
            if closed() {
                return;
            }
            match open(&socket).await {
                Ok(s) => stream = Some(s),
                Err(e) => {
                    tracing::debug!(error = %e, "control plane not reachable yet");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
