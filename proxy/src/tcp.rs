//! TCP ports: one client connection to one hop. The service's policy groups the plan's
//! hops ([`ferry_federation::traffic::decide`]); the balancer orders them (P2C over
//! peak-EWMA of connect and admission latency, weighted by open connections, ejected hops
//! last); each is tried until one answers: a local endpoint directly, a remote cluster as
//! one stream on a pooled QUIC connection. Refusals and dead ends reach the application as
//! a reset connection.

use std::sync::Arc;
use std::time::Instant;

use ferry_federation::Hop;
use ferry_gateway::relay::{relay_quic, relay_tcp, RelayEnd, TcpMetrics};
use ferry_gateway::tunnel::TunnelError;
use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::{Active, Shared};
use crate::route::{connect_local, tunnel_header, Routed, Unrouted};

/// Counts connections closed for being idle.
fn relay_ended(end: RelayEnd) {
    if let RelayEnd::Idle = end {
        metrics::counter!("ferry_proxy_idle_closed_total").increment(1);
    }
}

/// Drops the client connection with a TCP reset, so the application sees a refusal.
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

pub(super) async fn handle(shared: Arc<Shared>, mut client: TcpStream, addr: SocketAddr) {
    let _active = Active::new(&shared);
    let _ = client.set_nodelay(true);
    let snapshot = shared.snapshots.borrow().clone();
    let Routed {
        plan: route,
        decision,
    } = match super::route::route(&shared, &snapshot, addr, &[]) {
        Ok(routed) => routed,
        Err(Unrouted::Plan(e)) => {
            metrics::counter!("ferry_proxy_connections_total", "result" => "no_route").increment(1);
            tracing::warn!(%addr, reason = %e, "no route");
            return reset(client);
        }
        Err(Unrouted::Policy(service, e)) => {
            metrics::counter!("ferry_proxy_connections_total", "result" => "policy").increment(1);
            tracing::warn!(%service, reason = %e, "no route under the service's policy");
            return reset(client);
        }
    };
    // The caller's bytes a remote attempt took before its status: replayed if another
    // cluster gets the call after a refusal that allows it.
    let mut early = Vec::new();
    let hops = shared
        .balancer
        .order(&route.service, &decision, Instant::now());
    if hops.is_empty() {
        metrics::counter!("ferry_proxy_connections_total", "result" => "circuit_open").increment(1);
        tracing::warn!(service = %route.service, "every endpoint is at its in-flight limit");
        return reset(client);
    }
    for hop in hops {
        let attempt = shared.balancer.start(&route.service, &hop, Instant::now());
        match hop {
            Hop::Local(endpoint) => match connect_local(endpoint).await {
                Ok(mut upstream) => {
                    attempt.answered(Instant::now());
                    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
                        return reset(client);
                    }
                    metrics::counter!("ferry_proxy_connections_total", "result" => "local")
                        .increment(1);
                    let local = &snapshot.cluster;
                    let m = TcpMetrics::open("outbound", &route.service, local, local);
                    m.sent.increment(early.len() as u64);
                    relay_ended(
                        relay_tcp(&mut client, &mut upstream, shared.idle, &m.caller_first()).await,
                    );
                    return;
                }
                Err(e) => {
                    attempt.failed(Instant::now());
                    tracing::debug!(%endpoint, error = %e, "local endpoint failed; trying the next");
                }
            },
            Hop::Remote {
                cluster,
                port,
                gateways,
                endpoint,
            } => {
                let header = tunnel_header(&route.service, &cluster, &port, &endpoint);
                match shared
                    .tunnel
                    .open_pipelined(&cluster, &gateways, &header, &mut client, &mut early)
                    .await
                {
                    Ok((mut send, mut recv)) => {
                        attempt.answered(Instant::now());
                        metrics::counter!("ferry_proxy_connections_total", "result" => "remote")
                            .increment(1);
                        let (local, service) = (&snapshot.cluster, &route.service);
                        let m = TcpMetrics::open("outbound", service, local, &cluster);
                        // What went with the tunnel header is the caller's too.
                        m.sent.increment(early.len() as u64);
                        let meter = m.caller_first();
                        let relayed =
                            relay_quic(&mut client, &mut send, &mut recv, shared.idle, &meter);
                        relay_ended(relayed.await);
                        return;
                    }
                    Err(e) if e.try_next_cluster() => {
                        attempt.failed(Instant::now());
                        tracing::debug!(%cluster, error = %e, "remote cluster failed; trying the next");
                    }
                    Err(e) => {
                        let result = match e {
                            TunnelError::Refused { .. } => "refused",
                            TunnelError::CallerFailed(_) => "caller_failed",
                            _ => {
                                attempt.failed(Instant::now());
                                "interrupted"
                            }
                        };
                        metrics::counter!("ferry_proxy_connections_total", "result" => result)
                            .increment(1);
                        tracing::warn!(service = %route.service, error = %e, "call failed");
                        return reset(client);
                    }
                }
            }
        }
    }
    metrics::counter!("ferry_proxy_connections_total", "result" => "unreachable").increment(1);
    tracing::warn!(service = %route.service, "no endpoint answered");
    reset(client)
}
