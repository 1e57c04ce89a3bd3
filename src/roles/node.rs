//! `ferry node`: runs the node proxy against the control plane.
//!
//! Besides proxying, it reports the `VIP:port`s it cannot listen on (an address in use) to
//! the control plane, which shows them in `ferry services` and `ferry status`, and says so
//! on standard error at start.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ferry_gateway::tunnel::TunnelClient;
use ferry_proxy::{ListenFailures, NodeProxy};
use tokio::sync::watch;

use crate::client::{self, Client};
use crate::config::Config;
use crate::pb;
use crate::roles::{identity, snapshots};

/// Lease of a node's listen report; refreshed every second.
const REPORT_LEASE: Duration = Duration::from_secs(5);

/// Runs the node proxy until `stop` resolves, then drains open connections for at most
/// `node.drain_timeout`.
pub async fn run(cfg: Config, stop: impl Future<Output = ()>) -> anyhow::Result<()> {
    let tls = identity::obtain(cfg.role_socket(), "node", cfg.node_name.to_string()).await?;
    let snapshots = snapshots::follow(cfg.role_socket()).await?;
    let tunnel = Arc::new(TunnelClient::new(tls.identity.clone(), tls.trust.clone())?);
    tracing::info!(node = %cfg.node_name, "node proxy running");
    let versions = snapshots.clone();
    let proxy = NodeProxy::new(snapshots, tunnel)
        .with_idle_timeout(cfg.node_idle_timeout)
        .with_max_in_flight(cfg.node_max_in_flight);
    let failures = proxy.listen_failures();
    let reporter = tokio::spawn(report_failures(
        cfg.role_socket(),
        cfg.node_name.to_string(),
        failures,
        versions,
        tls.held.clone(),
    ));
    proxy.run(stop, cfg.drain_timeout).await;
    reporter.abort();
    Ok(())
}

/// Says at start which listeners failed, then keeps the control plane told.
async fn report_failures(
    socket: PathBuf,
    node: String,
    mut failures: watch::Receiver<ListenFailures>,
    snapshots: watch::Receiver<Arc<ferry_federation::MeshSnapshot>>,
    held: identity::Held,
) {
    // The first reconciliation's result.
    if failures.changed().await.is_ok() {
        crate::admin::set_ready(crate::admin::Role::Node, true);
        for (addr, error) in failures.borrow_and_update().iter() {
            eprintln!(
                "ferry: the node proxy cannot listen on {addr}: {error}; calls to it will fail until the address is free (`ferry services` shows it)"
            );
        }
    }
    let mut client: Option<Client> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            changed = failures.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
        }
        if client.is_none() {
            client = client::connect(&socket).await.ok();
        }
        let Some(c) = client.as_mut() else { continue };
        let cert = held.get();
        let req = pb::NodeStatusRequest {
            node: node.clone(),
            failures: failures
                .borrow()
                .iter()
                .map(|(addr, error)| pb::ListenFailure {
                    addr: addr.to_string(),
                    error: error.clone(),
                })
                .collect(),
            lease_ms: REPORT_LEASE.as_millis() as u64,
            snapshot_version: snapshots.borrow().version,
            cert_not_before_unix: cert.0,
            cert_not_after_unix: cert.1,
        };
        if c.report_node_status(req).await.is_err() {
            client = None;
        }
    }
}
