//! The gateway's side of tunnel streams: read the header, admit it against the snapshot
//! (linked caller, exported service, known port, healthy endpoint, or the one named
//! endpoint of a headless service), connect to a local endpoint admission answered with
//! only, answer a status, then relay bytes both ways with half-closes, for as long as the
//! stream stays admitted. Never connects to an address the caller chose.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::relay::RelayEnd;
use ferry_federation::{
    admit, revoked, Carries, Identity, Protocol, Refusal, TunnelHeader, TunnelStatus,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::Instrument as _;

use super::HEADER_TIMEOUT;
use crate::server::Shared;

mod http;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEADER: usize = 1024;

/// Accepts tunnel streams on one connection until it closes.
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    caller: Identity,
) {
    let caller = Arc::new(caller);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let shared = shared.clone();
                let caller = caller.clone();
                tokio::spawn(async move { serve_stream(shared, send, recv, caller).await });
            }
            Err(e) => {
                tracing::debug!(reason = %e, "tunnel connection ended");
                return;
            }
        }
    }
}

async fn read_header(recv: &mut quinn::RecvStream) -> Result<(TunnelHeader, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        match TunnelHeader::decode(&buf) {
            Ok(Some((header, used))) => return Ok((header, buf.split_off(used))),
            Ok(None) if buf.len() < MAX_HEADER => {}
            _ => return Err(Refusal::BadHeader),
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(Refusal::BadHeader),
        }
    }
}

async fn refuse(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    caller: &Identity,
    header: Option<&TunnelHeader>,
    refusal: Refusal,
) {
    metrics::counter!("ferry_gateway_refusals_total", "reason" => refusal.as_str()).increment(1);
    if crate::access::enabled(false) {
        // The caller's service name is only echoed once admission could read it.
        let service: &dyn std::fmt::Display = match header {
            Some(h) => &h.service,
            None => &"-",
        };
        crate::access::tcp(&crate::access::TcpCall {
            direction: "inbound",
            source: caller,
            service,
            destination: &"-",
            sent: 0,
            received: 0,
            duration: std::time::Duration::ZERO,
            result: refusal.as_str(),
        });
    } else {
        // Access logs are off: a refusal still says why, once.
        match header {
            Some(h) => tracing::warn!(
                caller = %caller, service = %h.service, port = %h.port,
                endpoint = h.endpoint.as_ref().map_or("", |e| e.as_str()),
                reason = refusal.as_str(), "tunnel stream refused"
            ),
            None => {
                tracing::warn!(caller = %caller, reason = refusal.as_str(), "tunnel stream refused")
            }
        }
    }
    let _ = send
        .write_all(&TunnelStatus::Refused(refusal).encode())
        .await;
    // Bytes the caller sent after its header go nowhere; tell it to stop sending them
    // (after the status, so the status is what the caller learns first).
    let _ = recv.stop(quinn::VarInt::from_u32(u32::from(refusal.code())));
    let _ = send.finish();
    // Give the status a moment to leave before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
}

/// One tunnel stream: its header, then the rest in a span that continues the caller's
/// trace (the header's `traceparent`). A stream of HTTP requests to an `http` or `grpc`
/// port is served request by request ([`http`]); any other is relayed as bytes.
async fn serve_stream(
    shared: Arc<Shared>,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    caller: Arc<Identity>,
) {
    let started = std::time::Instant::now();
    let (header, early) = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(h)) => h,
        Ok(Err(r)) => return refuse(send, recv, &caller, None, r).await,
        Err(_) => return refuse(send, recv, &caller, None, Refusal::BadHeader).await,
    };
    let span = tracing::info_span!("stream", caller = %caller, service = %header.service);
    if let Some(traceparent) = &header.traceparent {
        crate::trace::continue_trace(&span, traceparent);
    }
    // One snapshot decides both what the stream is served as and whether it is admitted.
    let snapshot = shared.snapshot();
    let protocol = snapshot
        .service(&header.service)
        .and_then(|s| s.ports.iter().find(|p| p.name == header.port))
        .map(|p| p.protocol);
    let l7 = match (header.carries, protocol) {
        (Carries::Http, Some(Protocol::Http)) => Some(false),
        (Carries::Http, Some(Protocol::Grpc)) => Some(true),
        _ => None,
    };
    // The span covers admission up to the status: a pooled stream may carry calls for
    // minutes, and a span open that long would reach the collector only at its end.
    let relayed_early = if l7.is_some() { &[][..] } else { &early[..] };
    let stream = (send, recv);
    let admitted = admit_and_connect(&shared, &snapshot, stream, &caller, &header, relayed_early)
        .instrument(span)
        .await;
    let Some((send, recv, tcp)) = admitted else {
        return;
    };
    let Some(grpc) = l7 else {
        let early = early.len();
        return relay_admitted(
            &shared, send, recv, tcp, &snapshot, &caller, &header, early, started,
        )
        .await;
    };
    let _active = StreamActive::new();
    let served = http::serve(&shared, send, recv, early, tcp, &caller, &header, grpc).await;
    if let Err(refusal) = served {
        stream_cut(&header, refusal);
    }
}

/// Admits the stream, connects to an endpoint and answers the status; `None` when the
/// stream was refused or went away.
async fn admit_and_connect(
    shared: &Arc<Shared>,
    snapshot: &ferry_federation::MeshSnapshot,
    (send, recv): (quinn::SendStream, quinn::RecvStream),
    caller: &Identity,
    header: &TunnelHeader,
    early: &[u8],
) -> Option<(quinn::SendStream, quinn::RecvStream, TcpStream)> {
    let endpoints = match admit(snapshot, caller, header, shared.next_pick()) {
        Ok(e) => e,
        Err(r) => {
            refuse(send, recv, caller, Some(header), r).await;
            return None;
        }
    };
    let upstream = connect_first(&endpoints, &header.service).await;
    let Some(mut tcp) = upstream else {
        // A named endpoint that does not answer is that endpoint's failure, not the service's.
        let refusal = match header.endpoint {
            Some(_) => Refusal::EndpointUnhealthy,
            None => Refusal::NoEndpoints,
        };
        refuse(send, recv, caller, Some(header), refusal).await;
        return None;
    };
    let mut send = send;
    if send.write_all(&TunnelStatus::Ok.encode()).await.is_err() {
        return None;
    }
    if !early.is_empty() && tcp.write_all(early).await.is_err() {
        return None;
    }
    Some((send, recv, tcp))
}

/// A connection to the first of `endpoints` that accepts one (never this process's admin
/// listener), with no delay on small writes.
async fn connect_first(
    endpoints: &[std::net::SocketAddr],
    service: &ferry_federation::ServiceName,
) -> Option<TcpStream> {
    for &addr in endpoints {
        if crate::guard::is_protected(addr) {
            tracing::warn!(%addr, %service, "endpoint is this process's admin listener; never proxied to");
            continue;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => {
                let _ = tcp.set_nodelay(true);
                return Some(tcp);
            }
            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "endpoint refused the connection"),
            Err(_) => tracing::debug!(%addr, "endpoint connect timed out"),
        }
    }
    None
}

/// Relays an admitted stream until it ends or is no longer admitted, then writes its
/// access log line.
#[allow(clippy::too_many_arguments)]
async fn relay_admitted(
    shared: &Arc<Shared>,
    mut send: quinn::SendStream,
    recv: quinn::RecvStream,
    mut tcp: TcpStream,
    snapshot: &ferry_federation::MeshSnapshot,
    caller: &Identity,
    header: &TunnelHeader,
    early: usize,
    started: std::time::Instant,
) {
    let _active = StreamActive::new();
    // Admission passed: the service is exported and the caller a linked cluster, so both
    // label values are names this cluster knows.
    let tcp_metrics = crate::relay::TcpMetrics::open(
        "inbound",
        &header.service,
        caller.cluster(),
        &snapshot.cluster,
    );
    // The caller's bytes that came with the header went to the endpoint above.
    tcp_metrics.sent.add(early as u64);
    let meter = tcp_metrics.service_first();
    let mut recv = recv;
    let relay = crate::relay::relay_quic(&mut tcp, &mut send, &mut recv, shared.relay_idle, &meter);
    let (cut, ended) = match while_admitted(shared, caller, header, relay, |_| {}).await {
        Ok(done) => {
            let result = match &done {
                RelayEnd::Done(..) => "ok",
                RelayEnd::Idle => "idle",
                RelayEnd::Failed(_) => "failed",
            };
            match done {
                RelayEnd::Done(up, down) => {
                    tracing::debug!(service = %header.service, up, down, "tunnel stream done")
                }
                RelayEnd::Failed(e) => {
                    tracing::debug!(service = %header.service, error = %e, "tunnel stream ended")
                }
                RelayEnd::Idle => {
                    metrics::counter!("ferry_gateway_streams_idle_closed_total").increment(1);
                    tracing::debug!(service = %header.service, "tunnel stream idle; closed");
                }
            }
            (None, result)
        }
        Err(refusal) => (Some(refusal), "cut"),
    };
    let result = cut.map_or(ended, |refusal| refusal.as_str());
    crate::access::tcp(&crate::access::TcpCall {
        direction: "inbound",
        source: caller,
        service: &header.service,
        destination: &snapshot.cluster,
        sent: tcp_metrics.sent.total(),
        received: tcp_metrics.received.total(),
        duration: started.elapsed(),
        result,
    });
    if let Some(refusal) = cut {
        stream_cut(header, refusal);
        let code = quinn::VarInt::from_u32(u32::from(refusal.code()));
        let _ = send.reset(code);
        let _ = recv.stop(code);
    }
}

/// Runs `work` for as long as what admitted the stream holds: an unexport or a link
/// removal cuts it at the next snapshot, not when the transfer happens to end. When cut,
/// `on_cut` runs before `work` is dropped, and the refusal is returned.
async fn while_admitted<T>(
    shared: &Shared,
    caller: &Identity,
    header: &TunnelHeader,
    work: impl Future<Output = T>,
    on_cut: impl FnOnce(Refusal),
) -> Result<T, Refusal> {
    let mut snapshots = shared.snapshots.clone();
    tokio::pin!(work);
    loop {
        tokio::select! {
            done = &mut work => return Ok(done),
            changed = snapshots.changed() => {
                if changed.is_err() {
                    // The snapshot source is gone (shutting down): finish the work.
                    return Ok(work.await);
                }
                let snapshot = snapshots.borrow_and_update().clone();
                if let Some(refusal) = revoked(&snapshot, caller, header) {
                    on_cut(refusal);
                    return Err(refusal);
                }
            }
        }
    }
}

fn stream_cut(header: &TunnelHeader, refusal: Refusal) {
    tracing::info!(service = %header.service, reason = refusal.as_str(), "open tunnel stream cut: no longer admitted");
    metrics::counter!("ferry_gateway_streams_cut_total", "reason" => refusal.as_str()).increment(1);
}

/// An admitted stream: counted in `ferry_gateway_streams_total` when made and in
/// `ferry_gateway_streams_active` while it lasts.
struct StreamActive(metrics::Gauge);

impl StreamActive {
    fn new() -> StreamActive {
        metrics::counter!("ferry_gateway_streams_total", "result" => "ok").increment(1);
        let active = metrics::gauge!("ferry_gateway_streams_active");
        active.increment(1.0);
        StreamActive(active)
    }
}

impl Drop for StreamActive {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
