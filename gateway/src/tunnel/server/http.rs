//! Tunnel streams that carry HTTP (a node proxy's `http` or `grpc` port, header
//! [`Carries::Http`], to a port this cluster declares `http` or `grpc`): the gateway serves
//! the requests one by one instead of relaying bytes. Each request is admitted by the same
//! pure `admit` as a stream (exported, linked, healthy), continues the caller's trace in a
//! span of its own, goes to a healthy endpoint over a connection kept for the stream, and
//! is counted (`ferry_requests_total{direction="inbound"}`) and access-logged. The endpoint
//! sees the request the application sent (HTTP/1.1 or HTTP/2). Upgrades (WebSocket) do not
//! come this way: the node proxy sends each on a byte stream of its own, which stays under
//! admission and the idle timeout while it flows.
//!
//! [`Carries::Http`]: ferry_federation::Carries::Http

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use ferry_federation::{admit, ClusterId, Identity, MeshSnapshot, Refusal, TunnelHeader};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpStream;
use tracing::Instrument as _;

use crate::http::{
    error_response, grpc_status_of, handshake, is_upgrade, Body, Proto, Sender, FERRY_ERROR,
};
use crate::requests::{Outcome, RequestMetrics};
use crate::server::Shared;

/// Idle endpoint connections a stream keeps (HTTP/2 callers may send several requests at
/// once on one stream).
const MAX_IDLE_PER_STREAM: usize = 4;

/// Requests one stream may have in progress at once (HTTP/2; HTTP/1.1 has one).
const MAX_REQUESTS_PER_STREAM: u32 = 16;

/// Why the gateway answered a request itself.
#[derive(Clone, Copy, Debug)]
enum Unanswered {
    /// Admission refused it, or no admitted endpoint took a connection: nothing of it
    /// reached an endpoint.
    Refused(Refusal),
    /// The endpoint's connection failed after the request went out: it may have been served.
    EndpointFailed,
    /// An upgrade (WebSocket) asked on a stream of HTTP requests: upgrades go on a byte
    /// stream of their own, which stays under admission and the idle timeout as it flows.
    Upgrade,
}

impl Unanswered {
    fn reason(self) -> &'static str {
        match self {
            Unanswered::Refused(r) => r.as_str(),
            Unanswered::EndpointFailed => "upstream_reset",
            Unanswered::Upgrade => "upgrade_on_request_stream",
        }
    }

    /// The answer: 503 / `UNAVAILABLE` when no endpoint could take it (another cluster
    /// may), 403 / `PERMISSION_DENIED` when the caller may not have it here, 502 /
    /// `UNAVAILABLE` when the endpoint failed under it, 400 for an upgrade.
    fn response(self, grpc: bool) -> Response<Body> {
        let (status, code, message) = match self {
            Unanswered::Refused(Refusal::NoEndpoints | Refusal::EndpointUnhealthy) => (
                StatusCode::SERVICE_UNAVAILABLE,
                14,
                "no endpoint of the service in this cluster took the request",
            ),
            Unanswered::Refused(_) => (
                StatusCode::FORBIDDEN,
                7,
                "the service is not exported to the calling cluster here",
            ),
            Unanswered::EndpointFailed => (
                StatusCode::BAD_GATEWAY,
                14,
                "the endpoint's connection failed during the request",
            ),
            Unanswered::Upgrade => (
                StatusCode::BAD_REQUEST,
                13,
                "upgrades go on a tunnel stream of their own",
            ),
        };
        error_response(self.reason(), message, status, grpc.then_some(code))
    }
}

/// What every request of one stream shares.
struct Stream {
    shared: Arc<Shared>,
    caller: Arc<Identity>,
    header: TunnelHeader,
    grpc: bool,
    /// The connection admission made to answer the stream's status, until a request uses it.
    first: Mutex<Option<(SocketAddr, TcpStream)>>,
    idle: Mutex<Vec<(SocketAddr, Sender)>>,
    /// Requests whose answer is not yet done, and when the last one ended: a stream with
    /// none for the gateway's relay idle timeout is closed, as an idle relayed one is.
    busy: Mutex<(usize, tokio::time::Instant)>,
    /// Set when the stream is no longer admitted.
    cut: Arc<Cut>,
}

/// Why a stream was cut, once it is: its sending side is reset and its receiving side
/// stopped with the refusal's code, and requests in progress on it are dropped (their
/// endpoint connections with them).
#[derive(Default)]
struct Cut {
    refusal: Mutex<Option<Refusal>>,
    notify: tokio::sync::Notify,
}

impl Cut {
    fn set(&self, refusal: Refusal) {
        *self.refusal.lock().expect("cut lock") = Some(refusal);
        self.notify.notify_waiters();
    }

    fn code(&self) -> Option<quinn::VarInt> {
        let refusal = *self.refusal.lock().expect("cut lock");
        refusal.map(|r| quinn::VarInt::from_u32(u32::from(r.code())))
    }

    /// Resolves once the stream is cut.
    async fn cancelled(&self) -> Refusal {
        loop {
            // Registered before the check, so a cut between the two still wakes it.
            let notified = self.notify.notified();
            if let Some(refusal) = *self.refusal.lock().expect("cut lock") {
                return refusal;
            }
            notified.await;
        }
    }
}

/// One request in progress on a stream, until its answer's body is done or dropped.
struct Busy(Arc<Stream>);

impl Busy {
    fn new(stream: &Arc<Stream>) -> Busy {
        stream.busy.lock().expect("busy lock").0 += 1;
        Busy(stream.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().expect("busy lock");
        *busy = (busy.0.saturating_sub(1), tokio::time::Instant::now());
    }
}

/// A response body that keeps its request counted as busy until it is done.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// The gateway's inbound request metrics, shared by every stream.
fn requests() -> &'static RequestMetrics {
    static REQUESTS: std::sync::OnceLock<RequestMetrics> = std::sync::OnceLock::new();
    REQUESTS.get_or_init(|| RequestMetrics::new("inbound"))
}

/// Serves the requests of an admitted stream until it ends or is cut. `early` are the
/// bytes that came with the header (the start of the first request); `first` the endpoint
/// connection admission made. `Err` names why the stream was cut.
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    shared: &Arc<Shared>,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    early: Vec<u8>,
    first: TcpStream,
    caller: &Arc<Identity>,
    header: &TunnelHeader,
    grpc: bool,
) -> Result<(), Refusal> {
    let first = first.peer_addr().ok().map(|addr| (addr, first));
    let cut = Arc::new(Cut::default());
    let stream = Arc::new(Stream {
        shared: shared.clone(),
        caller: caller.clone(),
        header: header.clone(),
        grpc,
        first: Mutex::new(first),
        idle: Mutex::new(Vec::new()),
        busy: Mutex::new((0, tokio::time::Instant::now())),
        cut: cut.clone(),
    });
    let watched = stream.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let stream = stream.clone();
        let span = match crate::trace::request_spans() {
            true => {
                tracing::info_span!("request", method = %req.method(), service = %stream.header.service)
            }
            false => tracing::Span::none(),
        };
        if let Some(parent) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            crate::trace::continue_trace(&span, parent);
        }
        async move {
            let busy = Busy::new(&stream);
            let response = stream.handle(req).await;
            Ok::<_, Infallible>(response.map(|body| Tracked { body, _busy: busy }.boxed()))
        }
        .instrument(span)
    });
    let io = tokio::io::join(
        std::io::Cursor::new(early).chain(CuttableRecv {
            inner: recv,
            cut: cut.clone(),
        }),
        CuttableSend {
            inner: send,
            cut: cut.clone(),
        },
    );
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Each request in progress may hold an endpoint connection of its own: a peer's HTTP/2
    // stream gets a few at once, not hyper's default of 200.
    builder
        .http2()
        .max_concurrent_streams(MAX_REQUESTS_PER_STREAM);
    if grpc {
        builder = builder.http2_only();
    }
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    let conn = until_idle(conn, &watched, shared.relay_idle);
    let on_cut = |refusal| cut.set(refusal);
    match super::while_admitted(shared, caller, header, conn, on_cut).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::debug!(service = %header.service, error = %e, "tunnel HTTP stream ended");
            Ok(())
        }
        // Dropping the connection dropped the stream: with `cut` set, it was reset and
        // stopped; requests still in progress end at their next poll.
        Err(refusal) => Err(refusal),
    }
}

/// Serves `conn` until it ends, or until no request has been in progress for `idle`.
async fn until_idle<F, E>(conn: F, stream: &Stream, idle: std::time::Duration) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    loop {
        let (in_progress, since) = *stream.busy.lock().expect("busy lock");
        // While a request is in progress, look again in `idle`; else when it would be quiet.
        let check_at = match in_progress {
            0 => since + idle,
            _ => tokio::time::Instant::now() + idle,
        };
        tokio::select! {
            done = &mut conn => return done,
            _ = tokio::time::sleep_until(check_at) => {
                let (in_progress, since) = *stream.busy.lock().expect("busy lock");
                if in_progress == 0 && tokio::time::Instant::now() >= since + idle {
                    metrics::counter!("ferry_gateway_streams_idle_closed_total").increment(1);
                    tracing::debug!(service = %stream.header.service, "HTTP tunnel stream idle; closed");
                    return Ok(());
                }
            }
        }
    }
}

impl Stream {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<Body> {
        let started = Instant::now();
        let snapshot = self.shared.snapshot();
        let method = req.method().clone();
        let outcome = match admit(
            &snapshot,
            &self.caller,
            &self.header,
            self.shared.next_pick(),
        ) {
            Err(refusal) => {
                metrics::counter!("ferry_gateway_refusals_total", "reason" => refusal.as_str())
                    .increment(1);
                Err(Unanswered::Refused(refusal))
            }
            Ok(endpoints) => {
                if let Some(traceparent) =
                    crate::trace::current_traceparent().and_then(|t| HeaderValue::from_str(&t).ok())
                {
                    req.headers_mut().insert("traceparent", traceparent);
                }
                // A cut drops the request in progress (and its endpoint connection).
                tokio::select! {
                    outcome = self.forward(req, &endpoints) => outcome,
                    refusal = self.cut.cancelled() => Err(Unanswered::Refused(refusal)),
                }
            }
        };
        self.finish(&snapshot, method.as_str(), started, outcome)
    }

    /// Sends the request to an admitted endpoint: over a kept connection when there is one,
    /// else a new one, trying the endpoints in admission's order.
    async fn forward(
        &self,
        req: Request<Incoming>,
        endpoints: &[SocketAddr],
    ) -> Result<Response<Body>, Unanswered> {
        if is_upgrade(&req) {
            return Err(Unanswered::Upgrade);
        }
        let proto = Proto::of(req.version());
        // A named endpoint that takes no connection is that endpoint's failure, as at
        // stream admission; otherwise no endpoint of the service took it.
        let unreachable = Unanswered::Refused(match self.header.endpoint {
            Some(_) => Refusal::EndpointUnhealthy,
            None => Refusal::NoEndpoints,
        });
        let mut req = req.map(|b| b.boxed());
        // A kept connection the endpoint had closed gives the request back unsent; each
        // endpoint is tried on a fresh connection at most once.
        let mut fresh_tries = 0;
        loop {
            let (addr, mut sender) = match self.kept(endpoints, proto) {
                Some(kept) => kept,
                None if fresh_tries < endpoints.len() => {
                    fresh_tries += 1;
                    match self.connect(endpoints, proto).await {
                        Some(new) => new,
                        None => return Err(unreachable),
                    }
                }
                None => return Err(unreachable),
            };
            let ready = sender.ready().await;
            let sent = match ready {
                Ok(()) => sender.send(req).await,
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "kept endpoint connection closed");
                    continue;
                }
            };
            match sent {
                Ok(mut response) => {
                    self.keep(addr, sender);
                    // `ferry-error` is what a mesh hop says of its own answers: an
                    // endpoint's is not passed on as one.
                    response.headers_mut().remove(FERRY_ERROR);
                    return Ok(response.map(|b| b.boxed()));
                }
                Err((e, Some(unsent))) => {
                    tracing::debug!(%addr, error = %e, "request not sent; trying another connection");
                    req = unsent;
                }
                Err((e, None)) => {
                    tracing::debug!(%addr, error = %e, "endpoint failed during the request");
                    return Err(Unanswered::EndpointFailed);
                }
            }
        }
    }

    /// A kept connection to one of `endpoints` speaking `proto`, or the stream's first
    /// connection (made ready for `proto`).
    fn kept(&self, endpoints: &[SocketAddr], proto: Proto) -> Option<(SocketAddr, Sender)> {
        let mut idle = self.idle.lock().expect("idle lock");
        idle.retain(|(addr, s)| !s.is_closed() && endpoints.contains(addr));
        let at = idle.iter().position(|(_, s)| s.proto() == proto)?;
        Some(idle.swap_remove(at))
    }

    fn keep(&self, addr: SocketAddr, sender: Sender) {
        let mut idle = self.idle.lock().expect("idle lock");
        if idle.len() < MAX_IDLE_PER_STREAM && !sender.is_closed() {
            idle.push((addr, sender));
        }
    }

    /// A new connection to the first of `endpoints` that accepts one (the stream's first
    /// connection when it is still unused and still admitted).
    async fn connect(
        &self,
        endpoints: &[SocketAddr],
        proto: Proto,
    ) -> Option<(SocketAddr, Sender)> {
        let first = self.first.lock().expect("first lock").take();
        if let Some((addr, tcp)) = first.filter(|(addr, _)| endpoints.contains(addr)) {
            match handshake(tcp, proto).await {
                Ok(sender) => return Some((addr, sender)),
                Err(e) => tracing::debug!(%addr, error = %e, "endpoint handshake failed"),
            }
        }
        let tcp = super::connect_first(endpoints, &self.header.service).await?;
        let addr = tcp.peer_addr().ok()?;
        match handshake(tcp, proto).await {
            Ok(sender) => Some((addr, sender)),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "endpoint handshake failed");
                None
            }
        }
    }

    /// Records the request's metrics and access log line, and makes a refusal an answer.
    fn finish(
        &self,
        snapshot: &MeshSnapshot,
        method: &str,
        started: Instant,
        outcome: Result<Response<Body>, Unanswered>,
    ) -> Response<Body> {
        let (response, result) = match outcome {
            Ok(response) => (response, "ok"),
            Err(unanswered) => (unanswered.response(self.grpc), unanswered.reason()),
        };
        let grpc_status = self.grpc.then(|| grpc_status_of(&response)).flatten();
        let status = response.status().as_u16();
        let local: &ClusterId = &snapshot.cluster;
        let took = started.elapsed();
        // Admission read the header's service against the snapshot; a refused request's
        // service may be one this cluster does not know, so it is not a label then.
        if result == "ok" || snapshot.service(&self.header.service).is_some() {
            requests().record(
                &Outcome {
                    service: &self.header.service,
                    source: self.caller.cluster(),
                    destination: Some(local),
                    status,
                    grpc_status,
                    result,
                },
                took,
            );
        }
        crate::access::http(&crate::access::HttpCall {
            direction: "inbound",
            source: &*self.caller,
            service: &self.header.service,
            destination: Some(local),
            method,
            status,
            grpc_status,
            duration: took,
            result,
        });
        response
    }
}

/// The stream's sending side; when the stream is cut (no longer admitted) it is reset with
/// the refusal's code as it is dropped, not finished.
struct CuttableSend {
    inner: quinn::SendStream,
    cut: Arc<Cut>,
}

impl Drop for CuttableSend {
    fn drop(&mut self) {
        if let Some(code) = self.cut.code() {
            let _ = self.inner.reset(code);
        }
    }
}

impl AsyncWrite for CuttableSend {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.inner), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.inner), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.inner), cx)
    }
}

/// The stream's receiving side; when the stream is cut it is stopped with the refusal's
/// code as it is dropped, so the caller learns why.
struct CuttableRecv {
    inner: quinn::RecvStream,
    cut: Arc<Cut>,
}

impl Drop for CuttableRecv {
    fn drop(&mut self) {
        if let Some(code) = self.cut.code() {
            let _ = self.inner.stop(code);
        }
    }
}

impl AsyncRead for CuttableRecv {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        AsyncRead::poll_read(Pin::new(&mut self.inner), cx, buf)
    }
}
