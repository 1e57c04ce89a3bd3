//! HTTP and gRPC ports: the application's connection is served with hyper (HTTP/1.1 and
//! HTTP/2 with prior knowledge on `http` ports, HTTP/2 on `grpc` ports) and every request
//! is routed on its own: the service's policy groups the hops (header routes, split,
//! locality), the balancer orders them, and the request goes to the first that answers,
//! over a pooled upstream connection ([`upstream`]). Retries follow the policy within the
//! retry budget; the policy's timeout covers the whole request. What the proxy answers
//! itself is an [`errors::ProxyError`].

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use ferry_federation::traffic::{
    backoff, may_retry, Attempt as AttemptFacts, Failure, RetryBudget,
};
use ferry_federation::{ClusterId, Hop, NoRoute, Plan, Refusal, ServiceName, TrafficPolicy};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tracing::Instrument as _;

use super::{Active, Shared};
use crate::metrics::Outcome;
use crate::route::{route, Routed, Unrouted};

mod errors;
mod upstream;

use errors::ProxyError;
use upstream::{Pool, PooledBody, Proto};

pub(crate) use ferry_gateway::http::Body;
use ferry_gateway::http::{empty_body, is_upgrade, splice_upgraded};

/// Requests that may come back unsent (a pooled connection closed under them) before the
/// call gives up.
const MAX_UNSENT: usize = 4;

/// Retry budgets, one per service called.
#[derive(Default)]
pub(crate) struct Budgets(Mutex<HashMap<ServiceName, RetryBudget>>);

/// What the HTTP layer keeps across connections.
#[derive(Default)]
pub(crate) struct HttpState {
    pool: Arc<Pool>,
    budgets: Budgets,
}

/// Serves one application connection on an HTTP (`grpc == false`) or gRPC port.
pub(super) async fn serve(
    shared: Arc<Shared>,
    client: TcpStream,
    addr: SocketAddr,
    peer: SocketAddr,
    grpc: bool,
) {
    let _active = Active::new(&shared);
    let _ = client.set_nodelay(true);
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        // One span per request, continuing the caller's trace.
        let span = tracing::info_span!("request", method = %req.method());
        if let Some(parent) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            ferry_gateway::trace::continue_trace(&span, parent);
        }
        async move { Ok::<_, Infallible>(handle(shared, addr, peer, grpc, req).await) }
            .instrument(span)
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if grpc {
        builder = builder.http2_only();
    }
    let served = builder
        .serve_connection_with_upgrades(TokioIo::new(client), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(%addr, error = %e, "application HTTP connection ended");
    }
}

/// One request, start to end.
async fn handle(
    shared: Arc<Shared>,
    addr: SocketAddr,
    peer: SocketAddr,
    grpc: bool,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let method = req.method().clone();
    let asked = Asked {
        peer,
        method: &method,
        started: Instant::now(),
        grpc,
    };
    let snapshot = shared.snapshots.borrow().clone();
    let local = &snapshot.cluster;
    let routed = if snapshot.policies.iter().any(|p| !p.routes.is_empty()) {
        // Header routes read the request's headers; without any, nothing is collected.
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)))
            .collect();
        route(&shared, &snapshot, addr, &headers)
    } else {
        route(&shared, &snapshot, addr, &[])
    };
    let Routed {
        plan: route,
        decision,
    } = match routed {
        Ok(routed) => routed,
        Err(Unrouted::Plan(NoRoute::NoHealthyEndpoints(service))) => {
            let outcome = Err(ProxyError::NoHealthyEndpoint);
            return finish(&shared, local, None, &service, &asked, outcome);
        }
        Err(Unrouted::Plan(e)) => {
            tracing::warn!(%addr, reason = %e, "no route");
            return ProxyError::NoRoute.response(grpc);
        }
        Err(Unrouted::Policy(service, e)) => {
            tracing::warn!(%service, reason = %e, "no route under the service's policy");
            let outcome = Err(ProxyError::NoAllowedEndpoint);
            return finish(&shared, local, None, &service, &asked, outcome);
        }
    };
    let policy = snapshot.policy(&route.service);
    // An upgrade (WebSocket) keeps its Connection and Upgrade headers and becomes a byte
    // stream both ways once the endpoint agrees (101).
    let upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    prepare_headers(&mut parts.headers, peer, upgrade.is_some());
    let request = Head {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        upgrade,
    };
    let hops = shared
        .balancer
        .order(&route.service, &decision, Instant::now());
    if hops.is_empty() {
        let outcome = Err(ProxyError::CircuitOpen);
        return finish(&shared, local, None, &route.service, &asked, outcome);
    }
    let call = forward(&shared, &route, policy, hops, request, body, grpc);
    let (hop, outcome) = match policy.and_then(|p| p.timeout) {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => (None, Err(ProxyError::Timeout)),
        },
        None => call.await,
    };
    let service = &route.service;
    finish(&shared, local, hop.as_ref(), service, &asked, outcome)
}

/// The parts of a request kept to send it again.
struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    /// The application's side of an upgrade it asked for.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Head {
    /// The request to send with `body`; `again` keeps a copy of the headers for a later
    /// attempt, otherwise they move into the request (see [`Head::restore`]).
    fn build(&mut self, body: Body, again: bool) -> Request<Body> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = match again {
            true => self.headers.clone(),
            false => std::mem::take(&mut self.headers),
        };
        req
    }

    /// Takes back the headers of a request that came back unsent, and returns its body.
    fn restore(&mut self, unsent: Request<Body>) -> Body {
        let (parts, body) = unsent.into_parts();
        self.headers = parts.headers;
        body
    }
}

/// Sends the request to the hops in order until one answers. Connections that cannot be
/// made move on to the next hop with the request intact; an answer that failed is sent
/// again only as the policy, the request's safety and the budget allow. Returns the hop
/// that answered, with the answer.
async fn forward(
    shared: &Arc<Shared>,
    route: &Plan,
    policy: Option<&TrafficPolicy>,
    hops: Vec<Hop>,
    mut head: Head,
    body: Incoming,
    grpc: bool,
) -> (Option<Hop>, Result<Response<Body>, ProxyError>) {
    let proto = Proto::of(head.version);
    let empty = body.is_end_stream();
    let facts = AttemptFacts {
        idempotent: grpc
            || matches!(
                head.method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            ),
        body_sent: !empty,
        replayable: empty,
    };
    let mut body = Some(body.boxed());
    let retries = policy.map_or(0, |p| p.retries);
    let mut retried = 0u32;
    let mut failed_to_connect = 0usize;
    shared.http.budgets.deposit(&route.service);
    let mut next = 0usize;
    let mut last = ProxyError::Unreachable;
    while !hops.is_empty() {
        let hop = &hops[next % hops.len()];
        next += 1;
        let attempt = shared.balancer.start(&route.service, hop, Instant::now());
        // An upgraded connection is never given back: it gets one of its own.
        let pooled = match head.upgrade {
            Some(_) => None,
            None => shared.http.pool.take(&route.service, hop, proto),
        };
        let sender = match pooled {
            Some(sender) => Ok(sender),
            None => {
                let fallback = hops.len() > 1;
                upstream::connect(&shared.tunnel, hop, &route.service, proto, fallback).await
            }
        };
        let sender = match sender {
            Ok(mut s) => s
                .ready()
                .await
                .map(|()| s)
                .map_err(upstream::ConnectError::from),
            Err(e) => Err(e),
        };
        let mut sender = match sender {
            Ok(s) => s,
            Err(e) => {
                attempt.failed(Instant::now());
                tracing::debug!(%hop, error = %e, "upstream unreachable; trying the next");
                failed_to_connect += 1;
                if failed_to_connect >= hops.len() + retried as usize {
                    return (None, Err(ProxyError::Unreachable));
                }
                continue;
            }
        };
        let Some(this_body) = body.take().or_else(|| empty.then(empty_body)) else {
            // The body went with an earlier attempt and cannot be sent again.
            return (None, Err(last));
        };
        let again = retried < u32::from(retries);
        let failure = match sender.send(head.build(this_body, again)).await {
            Ok(mut response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                attempt.answered(Instant::now());
                let Some(client_side) = head.upgrade.take() else {
                    // An upgrade nobody asked for.
                    return (Some(hop.clone()), Err(ProxyError::Upstream));
                };
                let upstream_side = hyper::upgrade::on(&mut response);
                tokio::spawn(splice_upgraded(client_side, upstream_side, attempt));
                let response = response.map(|_| empty_body());
                return (Some(hop.clone()), Ok(response));
            }
            Ok(response) if empty && not_forwarded(hop, &response) => {
                // The remote gateway had no endpoint for it: like a hop that cannot be
                // reached, the next one gets the (bodyless) request, retries untouched.
                attempt.failed(Instant::now());
                tracing::debug!(%hop, "the remote gateway had no endpoint; trying the next");
                failed_to_connect += 1;
                if failed_to_connect >= hops.len() + retried as usize {
                    return (Some(hop.clone()), Ok(response.map(|b| b.boxed())));
                }
                continue;
            }
            Ok(response) => {
                let failure = answer_failure(&response, grpc);
                match failure {
                    None => attempt.answered(Instant::now()),
                    Some(_) => attempt.failed(Instant::now()),
                }
                let retry = failure.filter(|f| {
                    retried < u32::from(retries)
                        && may_retry(policy, facts, *f)
                        && shared.http.budgets.withdraw(&route.service)
                });
                let Some(failure) = retry else {
                    // The server's answer, good or failed, goes to the caller as it is.
                    let pool = shared.http.pool.clone();
                    let response = response.map(|b| {
                        PooledBody::new(b, pool, (&route.service, hop, proto), sender, attempt)
                            .boxed()
                    });
                    return (Some(hop.clone()), Ok(response));
                };
                failure
            }
            Err((e, Some(unsent))) => {
                // Nothing was written: the same request goes on another connection (a
                // pooled one the server had closed is the usual cause, not the hop).
                tracing::debug!(%hop, error = %e, "request not sent; trying another connection");
                body = Some(head.restore(unsent));
                failed_to_connect += 1;
                if failed_to_connect >= hops.len() + retried as usize + MAX_UNSENT {
                    return (None, Err(ProxyError::Unreachable));
                }
                next -= 1;
                continue;
            }
            Err((e, None)) => {
                attempt.failed(Instant::now());
                tracing::debug!(%hop, error = %e, "upstream failed during the request");
                last = ProxyError::Upstream;
                if !(retried < u32::from(retries)
                    && may_retry(policy, facts, Failure::Reset)
                    && shared.http.budgets.withdraw(&route.service))
                {
                    return (Some(hop.clone()), Err(ProxyError::Upstream));
                }
                Failure::Reset
            }
        };
        retried += 1;
        tracing::debug!(service = %route.service, %hop, ?failure, retry = retried, "retrying");
        tokio::time::sleep(backoff(retried, fastrand::u32(..))).await;
    }
    (None, Err(ProxyError::Unreachable))
}

/// Whether a remote hop's gateway answered itself that no endpoint there could take the
/// request (503 with `ferry-error`; a gRPC port answers `UNAVAILABLE` with it): nothing
/// reached a server.
fn not_forwarded(hop: &Hop, response: &Response<Incoming>) -> bool {
    matches!(hop, Hop::Remote { .. })
        && response
            .headers()
            .get(ferry_gateway::http::FERRY_ERROR)
            .is_some_and(|reason| {
                reason == Refusal::NoEndpoints.as_str()
                    || reason == Refusal::EndpointUnhealthy.as_str()
            })
}

/// What makes an answer a failure to retry on: a 5xx, or gRPC `UNAVAILABLE` in the
/// headers of a trailers-only response.
fn answer_failure(response: &Response<Incoming>, grpc: bool) -> Option<Failure> {
    if response.status().is_server_error() {
        return Some(Failure::Status(response.status().as_u16()));
    }
    if grpc {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u32>().ok())?;
        if code == ferry_federation::traffic::retry::GRPC_UNAVAILABLE {
            return Some(Failure::Grpc(code));
        }
    }
    None
}

/// Removes hop-by-hop headers (and those `Connection` names), continues or starts the
/// W3C trace, and records the caller's address.
fn prepare_headers(headers: &mut HeaderMap, peer: SocketAddr, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == http::header::UPGRADE) {
            headers.remove(name);
        }
    }
    // `Expect: 100-continue` was answered here (hyper sends the 100 when the body is
    // read); the upstream gets the body without waiting.
    for hop in ["keep-alive", "proxy-connection", "expect"] {
        headers.remove(hop);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(http::header::UPGRADE);
    }
    let parent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_traceparent);
    // The request's own span when spans are exported; else a new span id under the
    // caller's trace (or a new trace).
    let value = ferry_gateway::trace::current_traceparent()
        .and_then(|t| HeaderValue::from_str(&t).ok())
        .unwrap_or_else(|| traceparent(parent));
    headers.insert("traceparent", value);
    let xff = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let value = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(xff, v);
    }
}

/// A version-00 `traceparent` with a new span id under the caller's trace (`parent`: its
/// trace id and flags), or starting a sampled trace when there is none.
fn traceparent(parent: Option<(&str, &str)>) -> HeaderValue {
    fn hex(out: &mut [u8], mut v: u128) {
        for b in out.iter_mut().rev() {
            *b = b"0123456789abcdef"[(v & 0xf) as usize];
            v >>= 4;
        }
    }
    // 00-<trace id: 32>-<span id: 16>-<flags: 2>
    let mut out = *b"00-________________________________-________________-__";
    match parent {
        Some((trace, flags)) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
        }
        None => {
            hex(&mut out[3..35], fastrand::u128(1..));
            out[53..55].copy_from_slice(b"01");
        }
    }
    hex(&mut out[36..52], u128::from(fastrand::u64(1..)));
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

/// The trace id and flags of a version-00 `traceparent`, if it is well formed.
fn parse_traceparent(v: &str) -> Option<(&str, &str)> {
    let mut parts = v.trim().split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = version == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    ok.then_some((trace, flags))
}

/// The request a [`finish`] reports on: who sent it, how, and when it arrived.
struct Asked<'a> {
    peer: SocketAddr,
    method: &'a Method,
    started: Instant,
    grpc: bool,
}

/// Records the request's metrics and access log line, and turns the outcome into the
/// application's answer.
fn finish(
    shared: &Shared,
    local: &ClusterId,
    hop: Option<&Hop>,
    service: &ServiceName,
    asked: &Asked<'_>,
    outcome: Result<Response<Body>, ProxyError>,
) -> Response<Body> {
    let (grpc, started) = (asked.grpc, asked.started);
    let destination = match hop {
        Some(Hop::Local(_)) => Some(local),
        Some(Hop::Remote { cluster, .. }) => Some(cluster),
        None => None,
    };
    let (response, result) = match outcome {
        Ok(r) => (r, "ok"),
        Err(e) => {
            tracing::warn!(%service, reason = e.reason(), "request failed in the proxy");
            (e.response(grpc), e.reason())
        }
    };
    let grpc_status = grpc
        .then(|| ferry_gateway::http::grpc_status_of(&response))
        .flatten();
    let outcome = Outcome {
        service,
        source: local,
        destination,
        status: response.status().as_u16(),
        grpc_status,
        result,
    };
    shared.requests.record(&outcome, started.elapsed());
    ferry_gateway::access::http(&ferry_gateway::access::HttpCall {
        direction: "outbound",
        source: &asked.peer,
        service,
        destination: destination.map(|d| d as &dyn std::fmt::Display),
        method: asked.method.as_str(),
        status: outcome.status,
        grpc_status,
        duration: started.elapsed(),
        result,
    });
    response
}

impl Budgets {
    fn deposit(&self, service: &ServiceName) {
        let now = Instant::now();
        let mut budgets = self.0.lock().expect("budget lock");
        budgets
            .entry(service.clone())
            .or_insert_with(|| RetryBudget::new(now))
            .deposit(now);
    }

    fn withdraw(&self, service: &ServiceName) -> bool {
        let now = Instant::now();
        let mut budgets = self.0.lock().expect("budget lock");
        budgets
            .entry(service.clone())
            .or_insert_with(|| RetryBudget::new(now))
            .withdraw(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

    #[test]
    fn a_trace_is_continued_with_a_new_span() {
        let header = format!("00-{TRACE}-00f067aa0ba902b7-00");
        let parent = parse_traceparent(&header);
        assert_eq!(parent, Some((TRACE, "00")));
        let next = traceparent(parent);
        let next = next.to_str().unwrap();
        assert_eq!(parse_traceparent(next), Some((TRACE, "00")), "{next}");
        assert_ne!(&next[36..52], "00f067aa0ba902b7", "a new span id");
    }

    #[test]
    fn a_trace_is_started_when_there_is_none() {
        let started = traceparent(None);
        let started = started.to_str().unwrap();
        let (trace, flags) = parse_traceparent(started).expect(started);
        assert_eq!(flags, "01");
        assert_ne!(trace, &traceparent(None).to_str().unwrap()[3..35]);
    }

    #[test]
    fn malformed_traceparents_are_not_continued() {
        for bad in [
            "",
            "00",
            &format!("01-{TRACE}-00f067aa0ba902b7-01"),
            &format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            &format!("00-{TRACE}-0000000000000000-01"),
            &format!("00-{TRACE}-00F067AA0BA902B7-01"),
            &format!("00-{TRACE}-00f067aa0ba902b7-01-extra"),
            &format!("00-{TRACE}x-00f067aa0ba902b7-01"),
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_the_caller_recorded() {
        let mut headers = HeaderMap::new();
        headers.insert(
            CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("expect", HeaderValue::from_static("100-continue"));
        headers.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        prepare_headers(&mut headers, "10.0.0.7:5000".parse().unwrap(), false);
        for gone in ["connection", "x-private", "keep-alive", "expect"] {
            assert!(!headers.contains_key(gone), "{gone} kept");
        }
        assert_eq!(headers["x-app"], "kept");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert!(headers.contains_key("traceparent"));
    }
}
