//! Follows the control plane's snapshot stream into a local watch channel.
//!
//! The data plane reads the watch channel only. When the control plane is down the
//! last snapshot stays in force and the follower reconnects with backoff.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_federation::MeshSnapshot;
use tokio::sync::watch;

use crate::client;
use crate::pb;

/// Connects, waits for the first snapshot, then keeps the channel fed in the background.
pub async fn follow(socket: PathBuf) -> anyhow::Result<watch::Receiver<Arc<MeshSnapshot>>> {
    let mut client = client::connect(&socket).await?;
    let mut stream = client
        .watch(pb::Empty {})
        .await
        .map_err(client::status_error)?
        .into_inner();
    let first = stream
        .message()
        .await
        .map_err(client::status_error)?
        .ok_or_else(|| anyhow::anyhow!("the control plane closed the snapshot stream"))?;
    let first: MeshSnapshot = serde_json::from_str(&first.snapshot_json)?;
    let (tx, rx) = watch::channel(Arc::new(first));
    tokio::spawn(async move {
        loop {
            while let Ok(Some(msg)) = stream.message().await {
                match serde_json::from_str::<MeshSnapshot>(&msg.snapshot_json) {
                    Ok(s) => {
                        tx.send_replace(Arc::new(s));
                    }
                    Err(e) => tracing::error!(error = %e, "undecodable snapshot ignored"),
                }
            }
            tracing::warn!("snapshot stream lost; serving the last snapshot and reconnecting");
            loop {
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Ok(mut c) = client::connect(&socket).await else {
                    continue;
                };
                if let Ok(resp) = c.watch(pb::Empty {}).await {
                    stream = resp.into_inner();
                    break;
                }
            }
        }
    });
    Ok(rx)
}
