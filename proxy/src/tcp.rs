//! TCP ports: one client connection to one hop. The service's policy groups the plan's
//! hops ([`ferry_federation::traffic::decide`]); the balancer orders them (P2C over
//! peak-EWMA of connect and admission latency, weighted by open connections, ejected hops
//! last); each is tried until one answers: a local endpoint directly, a remote cluster as
//! one stream on a pooled QUIC connection. Refusals and dead ends reach the application as
//! a reset connection.

use std::sync::Arc;
use std::time::Instant;

use ferry_federation::{Carries, Hop};
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
fn reset(client: TcpStream, call: Call) -> Call {
    let _ = client.set_zero_linger();
    drop(client);
    call
}

/// One client connection, with its access log line.
pub(super) async fn handle(shared: Arc<Shared>, client: TcpStream, addr: SocketAddr) {
    let started = Instant::now();
    let source = client.peer_addr().ok();
    let call = route_and_relay(shared, client, addr).await;
    let (sent, received) = call
        .metrics
        .as_ref()
        .map_or((0, 0), |m| (m.sent.total(), m.received.total()));
    ferry_gateway::access::tcp(&ferry_gateway::access::TcpCall {
        direction: "outbound",
        source: match &source {
            Some(s) => s,
            None => &"unknown",
        },
        service: &call.service.as_deref().unwrap_or("-"),
        destination: &call.destination.as_deref().unwrap_or("-"),
        sent,
        received,
        duration: started.elapsed(),
        result: call.result,
    });
}

/// How one connection went, for its access log line.
struct Call {
    service: Option<String>,
    destination: Option<String>,
    metrics: Option<TcpMetrics>,
    result: &'static str,
}

impl Call {
    fn ended(result: &'static str) -> Call {
        Call {
            service: None,
            destination: None,
            metrics: None,
            result,
        }
    }

    fn of(mut self, service: &impl ToString) -> Call {
        self.service = Some(service.to_string());
        self
    }
}

fn relayed(
    end: RelayEnd,
    service: &impl ToString,
    destination: &impl ToString,
    m: TcpMetrics,
) -> Call {
    let result = match &end {
        RelayEnd::Done(..) => "ok",
        RelayEnd::Idle => "idle",
        RelayEnd::Failed(_) => "failed",
    };
    relay_ended(end);
    Call {
        service: Some(service.to_string()),
        destination: Some(destination.to_string()),
        metrics: Some(m),
        result,
    }
}

async fn route_and_relay(shared: Arc<Shared>, mut client: TcpStream, addr: SocketAddr) -> Call {
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
            return reset(client, Call::ended("no_route"));
        }
        Err(Unrouted::Policy(service, e)) => {
            metrics::counter!("ferry_proxy_connections_total", "result" => "policy").increment(1);
            tracing::warn!(%service, reason = %e, "no route under the service's policy");
            return reset(client, Call::ended("policy").of(&service));
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
        return reset(client, Call::ended("circuit_open").of(&route.service));
    }
    for hop in hops {
        let attempt = shared.balancer.start(&route.service, &hop, Instant::now());
        match hop {
            Hop::Local(endpoint) => match connect_local(endpoint).await {
                Ok(mut upstream) => {
                    attempt.answered(Instant::now());
                    if !early.is_empty() && upstream.write_all(&early).await.is_err() {
                        return reset(client, Call::ended("failed").of(&route.service));
                    }
                    metrics::counter!("ferry_proxy_connections_total", "result" => "local")
                        .increment(1);
                    let local = &snapshot.cluster;
                    let m = TcpMetrics::open("outbound", &route.service, local, local);
                    m.sent.add(early.len() as u64);
                    let end =
                        relay_tcp(&mut client, &mut upstream, shared.idle, &m.caller_first()).await;
                    return relayed(end, &route.service, local, m);
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
                let header =
                    tunnel_header(&route.service, &cluster, &port, &endpoint, Carries::Bytes);
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
                        m.sent.add(early.len() as u64);
                        let meter = m.caller_first();
                        let end =
                            relay_quic(&mut client, &mut send, &mut recv, shared.idle, &meter)
                                .await;
                        return relayed(end, service, &cluster, m);
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
                        return reset(client, Call::ended(result).of(&route.service));
                    }
                }
            }
        }
    }
    metrics::counter!("ferry_proxy_connections_total", "result" => "unreachable").increment(1);
    tracing::warn!(service = %route.service, "no endpoint answered");
    reset(client, Call::ended("unreachable").of(&route.service))
}
