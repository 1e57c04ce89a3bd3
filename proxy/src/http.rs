//! HTTP and gRPC ports: the application's connection is served with hyper (HTTP/1.1 and
//! HTTP/2 with prior knowledge on `http` ports, HTTP/2 on `grpc` ports) and every request
//! is routed on its own: the service's policy groups the hops (header routes, split,
//! locality), the balancer orders them, and the request goes to the first that answers,
//! over a pooled upstream connection ([`upstream`]). Retries follow the policy within the
//! retry budget; the policy's timeout covers the whole request. What the proxy answers
//! itself is an [`errors::ProxyError`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use ferry_federation::{ClusterId, Hop, NoRoute, ServiceName};
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, EXPECT, UPGRADE};
use http::{Method, Request, Response};
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
mod forward;
mod upstream;

use errors::ProxyError;
use upstream::Pool;

use ferry_gateway::http::is_upgrade;
pub(crate) use ferry_gateway::http::Body;

/// What the HTTP layer keeps across connections.
#[derive(Default)]
pub(crate) struct HttpState {
    pool: Arc<Pool>,
    budgets: forward::Budgets,
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
    // The caller's address as `x-forwarded-for` appends it, made once per connection.
    let ip = HeaderValue::from_str(&peer.ip().to_string())
        .expect("an IP address is a valid header value");
    let service = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        let ip = ip.clone();
        // One span per request, continuing the caller's trace.
        let span = match ferry_gateway::trace::request_spans() {
            true => tracing::info_span!("request", method = %req.method()),
            false => tracing::Span::none(),
        };
        if let Some(parent) = req
            .headers()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
        {
            ferry_gateway::trace::continue_trace(&span, parent);
        }
        async move { Ok::<_, Infallible>(handle(shared, addr, (peer, &ip), grpc, req).await) }
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
    (peer, ip): (SocketAddr, &HeaderValue),
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
    prepare_headers(&mut parts.headers, ip, upgrade.is_some());
    let request = forward::Head {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        upgrade,
    };
    let hops = shared
        .balancer
        .order(&route.service, &decision, asked.started);
    if hops.is_empty() {
        let outcome = Err(ProxyError::CircuitOpen);
        return finish(&shared, local, None, &route.service, &asked, outcome);
    }
    let upstream = upstream::Live {
        pool: &shared.http.pool,
        tunnel: &shared.tunnel,
    };
    let ctx = forward::Ctx {
        balancer: &shared.balancer,
        budgets: &shared.http.budgets,
        upstream: &upstream,
    };
    let payload = forward::Payload {
        empty: body.is_end_stream(),
        body: body.boxed(),
    };
    let call = std::pin::pin!(forward::forward(
        ctx, &route, policy, hops, request, payload, grpc
    ));
    let (hop, outcome) = forward::within_timeout(policy.and_then(|p| p.timeout), call).await;
    let service = &route.service;
    finish(&shared, local, hop.as_ref(), service, &asked, outcome)
}

/// Header names the proxy reads or writes on every request, made once.
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Removes hop-by-hop headers (and those `Connection` names), continues or starts the
/// W3C trace, and records the caller's address.
fn prepare_headers(headers: &mut HeaderMap, ip: &HeaderValue, upgrade: bool) {
    // One pass over the names first: most requests carry no hop-by-hop header, and each
    // lookup or removal by name costs a hash.
    let (mut hop_by_hop, mut traced, mut forwarded) = (false, false, false);
    for name in headers.keys() {
        hop_by_hop |= name == CONNECTION
            || name == UPGRADE
            || name == EXPECT
            || name == KEEP_ALIVE
            || name == PROXY_CONNECTION;
        traced |= name == TRACEPARENT;
        forwarded |= name == X_FORWARDED_FOR;
    }
    if hop_by_hop {
        remove_hop_by_hop(headers, upgrade);
    }
    let parent = match traced {
        true => headers
            .get(&TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent),
        false => None,
    };
    // The request's own span when spans are exported; else a new span id under the
    // caller's trace (or a new trace).
    let value = ferry_gateway::trace::current_traceparent()
        .and_then(|t| HeaderValue::from_str(&t).ok())
        .unwrap_or_else(|| traceparent(parent));
    headers.insert(TRACEPARENT.clone(), value);
    let value = match forwarded.then(|| headers.get(&X_FORWARDED_FOR)).flatten() {
        None => Some(ip.clone()),
        Some(before) => match before.to_str() {
            Ok(before) => {
                let ip = ip.to_str().unwrap_or_default();
                HeaderValue::from_str(&format!("{before}, {ip}")).ok()
            }
            // A value that is not text is replaced, not appended to.
            Err(_) => Some(ip.clone()),
        },
    };
    if let Some(v) = value {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
}

/// Removes the hop-by-hop headers and those the `Connection` header names; an `upgrade`
/// keeps `Upgrade` and says `Connection: upgrade`.
fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == UPGRADE) {
            headers.remove(name);
        }
    }
    // `Expect: 100-continue` was answered here (hyper sends the 100 when the body is
    // read); the upstream gets the body without waiting.
    for hop in [&KEEP_ALIVE, &PROXY_CONNECTION, &EXPECT] {
        headers.remove(hop);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
}

/// A version-00 `traceparent` with a new span id under the caller's trace (`parent`: its
/// trace id and flags), or starting a sampled trace when there is none.
fn traceparent(parent: Option<(&str, &str)>) -> HeaderValue {
    fn hex(out: &mut [u8], bytes: &[u8]) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 0xf)];
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
            hex(&mut out[3..35], &fastrand::u128(1..).to_be_bytes());
            out[53..55].copy_from_slice(b"01");
        }
    }
    hex(&mut out[36..52], &fastrand::u64(1..).to_be_bytes());
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
            let client = asked.peer;
            tracing::warn!(%service, %client, reason = e.reason(), "request failed in the proxy");
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
    let took = started.elapsed();
    shared.requests.record(&outcome, took);
    ferry_gateway::access::http(&ferry_gateway::access::HttpCall {
        direction: "outbound",
        source: &asked.peer,
        service,
        destination: destination.map(|d| d as &dyn std::fmt::Display),
        method: asked.method.as_str(),
        status: outcome.status,
        grpc_status,
        duration: took,
        result,
    });
    response
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
    fn a_request_with_no_hop_by_hop_header_keeps_its_own() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("web"));
        headers.insert("x-app", HeaderValue::from_static("kept"));
        prepare_headers(&mut headers, &HeaderValue::from_static("10.0.0.7"), false);
        assert_eq!(headers.len(), 4, "{headers:?}");
        assert_eq!(headers["x-app"], "kept");
        assert_eq!(headers["x-forwarded-for"], "10.0.0.7");
        let trace = headers["traceparent"].to_str().unwrap();
        assert!(parse_traceparent(trace).is_some(), "{trace}");
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
        prepare_headers(&mut headers, &HeaderValue::from_static("10.0.0.7"), false);
        for gone in ["connection", "x-private", "keep-alive", "expect"] {
            assert!(!headers.contains_key(gone), "{gone} kept");
        }
        assert_eq!(headers["x-app"], "kept");
        assert_eq!(headers["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert!(headers.contains_key("traceparent"));
    }
}
