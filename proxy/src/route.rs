//! One call's route: the pure plan for the address it was made to, then the service's
//! policy over that plan, with the measured round trips to the peers that could take it.
//! Shared by the TCP and HTTP handlers; no I/O beyond reading the snapshot and the pool.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use ferry_federation::traffic::{decide, CallFacts, Decision, Unroutable};
use ferry_federation::{
    plan, Carries, ClusterId, Hop, Label, MeshSnapshot, NoRoute, Plan, PortName, ServiceName,
    Target, TunnelHeader,
};

use super::Shared;

/// A call with somewhere to go.
pub(crate) struct Routed {
    pub(crate) plan: Plan,
    pub(crate) decision: Decision,
}

/// A call with nowhere to go.
pub(crate) enum Unrouted {
    /// Nothing at the address, or nothing healthy behind it.
    Plan(NoRoute),
    /// The service's policy allows nothing that is healthy.
    Policy(ServiceName, Unroutable),
}

/// Routes a call made to `addr` carrying `headers` (empty for TCP) in `snapshot`.
pub(crate) fn route(
    shared: &Shared,
    snapshot: &MeshSnapshot,
    addr: SocketAddr,
    headers: &[(&str, &str)],
) -> Result<Routed, Unrouted> {
    let target = Target {
        vip: addr.ip(),
        port: addr.port(),
    };
    // The pick rotates each remote cluster's gateways; the balancer orders the hops.
    let pick = shared.pick.fetch_add(1, Ordering::Relaxed);
    let plan = plan(snapshot, &target, pick).map_err(Unrouted::Plan)?;
    // Round trips order clusters, so they are read only when the hops span more than one
    // (reading them takes a lock per peer connection).
    fn cluster(hop: &Hop) -> Option<&ClusterId> {
        match hop {
            Hop::Local(_) => None,
            Hop::Remote { cluster, .. } => Some(cluster),
        }
    }
    let several = plan
        .hops
        .windows(2)
        .any(|w| cluster(&w[0]) != cluster(&w[1]));
    let rtt = match several {
        true => shared.tunnel.rtts(),
        false => Default::default(),
    };
    let facts = CallFacts {
        local: &snapshot.cluster,
        rtt: &rtt,
        headers,
        roll: fastrand::u32(..),
    };
    let decision = decide(&plan, snapshot.policy(&plan.service), &facts)
        .map_err(|e| Unrouted::Policy(plan.service.clone(), e))?;
    Ok(Routed { plan, decision })
}

/// The tunnel header of a call to `service` through a remote hop's fields.
pub(crate) fn tunnel_header(
    service: &ServiceName,
    cluster: &ClusterId,
    port: &PortName,
    endpoint: &Option<Label>,
    carries: Carries,
) -> TunnelHeader {
    TunnelHeader {
        service: service.clone(),
        port: port.clone(),
        cluster: Some(cluster.clone()),
        hops: 0,
        // The gateway's span continues the caller's trace (when spans are exported).
        traceparent: ferry_gateway::trace::current_traceparent(),
        endpoint: endpoint.clone(),
        carries,
    }
}

/// How long a local endpoint may take to accept a connection before the next hop is tried.
const LOCAL_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Connects to a local endpoint, with no delay on small writes; a timeout is
/// `ErrorKind::TimedOut`. Shared by the TCP and HTTP handlers.
pub(crate) async fn connect_local(addr: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    if ferry_gateway::guard::is_protected(addr) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the endpoint is this process's admin listener; never proxied to",
        ));
    }
    let tcp = tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    Ok(tcp)
}
