//! `ferry node`: runs the node proxy against the control plane.

use std::sync::Arc;

use ferry_gateway::tunnel::TunnelClient;
use ferry_proxy::NodeProxy;

use crate::config::Config;
use crate::roles::{identity, snapshots};

/// Runs the node proxy until the process ends.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let tls = identity::obtain(cfg.role_socket(), "node", cfg.node_name.to_string()).await?;
    let snapshots = snapshots::follow(cfg.role_socket()).await?;
    let tunnel = Arc::new(TunnelClient::new(tls.identity.clone(), tls.trust.clone())?);
    tracing::info!(node = %cfg.node_name, "node proxy running");
    NodeProxy::new(snapshots, tunnel).run().await;
    Ok(())
}
