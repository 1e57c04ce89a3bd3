//! One request's attempts: the hops in the balancer's order until one answers, retries as
//! the policy, the request's safety and the service's retry budget allow (with jittered
//! backoff), and the policy's timeout over all of it. The connections come from an
//! [`Upstream`]: the proxy's pool and dialer ([`super::upstream::Live`]) or, in the tests
//! below, a scripted fake on a paused clock.

use foldhash::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferry_federation::traffic::{
    backoff, may_retry, Attempt as AttemptFacts, Failure, RetryBudget,
};
use ferry_federation::{Hop, Plan, Refusal, ServiceName, TrafficPolicy};
use http::header::HeaderMap;
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt as _;

use super::errors::ProxyError;
use super::upstream::{ConnectError, Proto};
use super::Body;
use crate::balance::{Attempt, Balancer};
use ferry_gateway::http::{empty_body, splice_upgraded, FERRY_ERROR};

/// Requests that may come back unsent (a pooled connection closed under them) before the
/// call gives up.
const MAX_UNSENT: usize = 4;

/// A failed send: why, and the request when none of it was written.
pub(crate) type SendFailed = (
    Box<dyn std::error::Error + Send + Sync>,
    Option<Request<Body>>,
);

/// Where a request's attempts get their connections.
pub(crate) trait Upstream: Sync {
    /// One connection's request side.
    type Conn: Send;
    /// A response body from a connection.
    type Body: http_body::Body<Data = Bytes, Error = hyper::Error> + Send + Sync + Unpin + 'static;

    /// An idle connection to `hop` for `service`, if one is kept.
    fn take(&self, service: &ServiceName, hop: &Hop, proto: Proto) -> Option<Self::Conn>;

    /// A new connection to `hop`; `fallback` says another hop could take the call;
    /// `upgrade` that it is for a request to switch protocols (never pooled).
    fn connect(
        &self,
        hop: &Hop,
        service: &ServiceName,
        proto: Proto,
        fallback: bool,
        upgrade: bool,
    ) -> impl Future<Output = Result<Self::Conn, ConnectError>> + Send;

    /// Waits until `conn` can take a request.
    fn ready(&self, conn: &mut Self::Conn)
        -> impl Future<Output = Result<(), ConnectError>> + Send;

    /// Sends `req` on `conn`.
    fn send(
        &self,
        conn: &mut Self::Conn,
        req: Request<Body>,
    ) -> impl Future<Output = Result<Response<Self::Body>, SendFailed>> + Send;

    /// The answer the caller gets: `conn` is kept for another request once the body has
    /// been read to the end, and `attempt` stops counting as in flight then.
    fn answer(
        &self,
        response: Response<Self::Body>,
        service: &ServiceName,
        hop: &Hop,
        conn: Self::Conn,
        attempt: Attempt,
    ) -> Response<Body>;
}

/// Retry budgets, one per service called.
#[derive(Default)]
pub(crate) struct Budgets(Mutex<HashMap<ServiceName, RetryBudget>>);

impl Budgets {
    fn deposit(&self, service: &ServiceName, now: Instant) {
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

/// What the attempts of every request share.
pub(crate) struct Ctx<'a, U> {
    pub(crate) balancer: &'a std::sync::Arc<Balancer>,
    pub(crate) budgets: &'a Budgets,
    pub(crate) upstream: &'a U,
}

/// The parts of a request kept to send it again.
pub(crate) struct Head {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    /// The application's side of an upgrade it asked for.
    pub(crate) upgrade: Option<hyper::upgrade::OnUpgrade>,
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

/// The request's body and whether it is empty (an empty one can be sent again).
pub(crate) struct Payload {
    pub(crate) body: Body,
    pub(crate) empty: bool,
}

/// `call` under the policy's timeout, if it sets one. `call` is pinned where the caller
/// keeps it: the attempt loop's future is large, and moving it (or holding it twice, with
/// and without a timeout) would cost a copy of it per request.
pub(crate) async fn within_timeout<F>(
    limit: Option<Duration>,
    call: std::pin::Pin<&mut F>,
) -> (Option<Hop>, Result<Response<Body>, ProxyError>)
where
    F: Future<Output = (Option<Hop>, Result<Response<Body>, ProxyError>)>,
{
    match limit {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => (None, Err(ProxyError::Timeout)),
        },
        None => call.await,
    }
}

/// Sends the request to the hops in order until one answers. Connections that cannot be
/// made move on to the next hop with the request intact; an answer that failed is sent
/// again only as the policy, the request's safety and the budget allow. Returns the hop
/// that answered, with the answer.
pub(crate) async fn forward<U: Upstream>(
    ctx: Ctx<'_, U>,
    route: &Plan,
    policy: Option<&TrafficPolicy>,
    hops: Vec<Hop>,
    mut head: Head,
    payload: Payload,
    grpc: bool,
) -> (Option<Hop>, Result<Response<Body>, ProxyError>) {
    let proto = Proto::of(head.version);
    let empty = payload.empty;
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
    let mut body = Some(payload.body);
    let retries = policy.map_or(0, |p| p.retries);
    let mut retried = 0u32;
    let mut failed_to_connect = 0usize;
    // One clock reading serves the deposit and the first attempt; later attempts read it
    // again (they start after a failure or a backoff).
    let started = Instant::now();
    ctx.budgets.deposit(&route.service, started);
    let mut next = 0usize;
    let mut last = ProxyError::Unreachable;
    while !hops.is_empty() {
        let hop = &hops[next % hops.len()];
        let now = match next {
            0 => started,
            _ => Instant::now(),
        };
        next += 1;
        let attempt = ctx.balancer.start(&route.service, hop, now);
        // An upgraded connection is never given back: it gets one of its own.
        let pooled = match head.upgrade {
            Some(_) => None,
            None => ctx.upstream.take(&route.service, hop, proto),
        };
        let conn = match pooled {
            Some(conn) => Ok(conn),
            None => {
                let fallback = hops.len() > 1;
                let upgrade = head.upgrade.is_some();
                ctx.upstream
                    .connect(hop, &route.service, proto, fallback, upgrade)
                    .await
            }
        };
        let conn = match conn {
            Ok(mut c) => ctx.upstream.ready(&mut c).await.map(|()| c),
            Err(e) => Err(e),
        };
        let mut conn = match conn {
            Ok(c) => c,
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
        // Headers are kept for another attempt when one may follow: a retry, or a bodiless
        // request a remote gateway may hand back unplaced (see `not_forwarded`).
        let again = retried < u32::from(retries) || (empty && matches!(hop, Hop::Remote { .. }));
        let sent = ctx
            .upstream
            .send(&mut conn, head.build(this_body, again))
            .await;
        let failure = match sent {
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
                        && ctx.budgets.withdraw(&route.service)
                });
                let Some(failure) = retry else {
                    // The server's answer, good or failed, goes to the caller as it is.
                    let answer = ctx
                        .upstream
                        .answer(response, &route.service, hop, conn, attempt);
                    return (Some(hop.clone()), Ok(answer));
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
                    && ctx.budgets.withdraw(&route.service))
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

/// Whether a remote hop's gateway answered itself that no endpoint there took the request:
/// 503 (or gRPC `UNAVAILABLE`) with `ferry-error` naming no endpoint or the named
/// endpoint unhealthy. The gateway says so only when nothing of the request reached an
/// endpoint, and never passes an endpoint's own `ferry-error` on.
fn not_forwarded<B>(hop: &Hop, response: &Response<B>) -> bool {
    if !matches!(hop, Hop::Remote { .. }) {
        return false;
    }
    let unavailable = response.status() == StatusCode::SERVICE_UNAVAILABLE
        || (response.status() == StatusCode::OK
            && response
                .headers()
                .get("grpc-status")
                .is_some_and(|s| s == "14"));
    unavailable
        && response.headers().get(FERRY_ERROR).is_some_and(|reason| {
            reason == Refusal::NoEndpoints.as_str() || reason == Refusal::EndpointUnhealthy.as_str()
        })
}

/// What makes an answer a failure to retry on: a 5xx, or gRPC `UNAVAILABLE` in the
/// headers of a trailers-only response.
fn answer_failure<B>(response: &Response<B>, grpc: bool) -> Option<Failure> {
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

#[cfg(test)]
mod tests;
