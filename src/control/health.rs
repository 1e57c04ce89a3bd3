//! Active health checks of local endpoints: a TCP connect per endpoint per interval.
//!
//! The result (healthy or not, per endpoint) feeds the snapshot, and from there the
//! healthy counts that travel with exports, so peers fail over per service. A probe
//! never blocks another: all endpoints are probed concurrently with a short timeout.

use std::sync::Arc;
use std::time::Duration;

use super::ControlPlane;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Probes every local endpoint forever; wakes early when services change.
pub async fn run(cp: Arc<ControlPlane>) {
    loop {
        if let Err(e) = probe_all(&cp).await {
            tracing::error!(error = %e, "health check round failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(cp.cfg.health_interval) => {}
            _ = cp.services_changed.notified() => {}
        }
    }
}

async fn probe_all(cp: &ControlPlane) -> anyhow::Result<()> {
    let services = cp.store.services()?;
    let mut rounds = Vec::new();
    for doc in services.values() {
        let Some(port) = doc.spec.ports.first() else {
            continue;
        };
        let targets: Vec<_> = doc.spec.endpoints.iter().map(|e| e.target(port)).collect();
        rounds.push((doc.spec.name.clone(), targets));
    }
    let checks = rounds.into_iter().map(|(name, targets)| async move {
        let probes = targets.into_iter().map(|addr| async move {
            matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            )
        });
        (name, futures_join_all(probes).await)
    });
    for (name, health) in futures_join_all(checks).await {
        cp.set_health(&name, health)?;
    }
    Ok(())
}

/// Runs futures concurrently and collects their outputs in order.
async fn futures_join_all<F>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.expect("health probe task panicked"));
    }
    out
}
