//! The attempt loop on a paused clock, against a scripted upstream: no sockets, and the
//! waits (backoff, timeouts) pass in virtual time, so the tests are exact and instant.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use ferry_federation::traffic::{OutlierConfig, RetryOn};
use ferry_federation::ServicePort;
use http::HeaderMap;
use http_body_util::Full;
use tokio::time::Instant as Virtual;

use super::*;

/// What a hop does with the next connection or request made to it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    /// The connection cannot be made.
    Refuse,
    /// Connects, then never answers the request.
    Hang,
    /// Answers with this status.
    Answer(u16),
    /// Fails after the request was sent.
    Reset,
    /// Fails before any of the request was written (a pooled connection just closed).
    Unsent,
    /// A remote gateway's own answer: 503 with `ferry-error` and this reason.
    Gateway(&'static str),
}

#[derive(Default)]
struct Fake {
    /// Per hop, the steps to take in turn; past them, `then`.
    script: Mutex<HashMap<String, VecDeque<Step>>>,
    then: Mutex<HashMap<String, Step>>,
    /// The hops requests were sent to, in order.
    sent: Mutex<Vec<String>>,
    /// The headers of each request sent.
    headers: Mutex<Vec<HeaderMap>>,
}

struct FakeConn {
    hop: String,
    step: Step,
}

impl Fake {
    fn hop(self, hop: &Hop, steps: &[Step], then: Step) -> Fake {
        self.script
            .lock()
            .unwrap()
            .insert(hop.to_string(), steps.iter().copied().collect());
        self.then.lock().unwrap().insert(hop.to_string(), then);
        self
    }

    fn next(&self, hop: &str) -> Step {
        let scripted = self
            .script
            .lock()
            .unwrap()
            .get_mut(hop)
            .and_then(VecDeque::pop_front);
        scripted.unwrap_or_else(|| self.then.lock().unwrap()[hop])
    }

    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }
}

impl Upstream for Fake {
    type Conn = FakeConn;
    type Body = Body;

    fn take(&self, _: &ServiceName, _: &Hop, _: Proto) -> Option<FakeConn> {
        None
    }

    async fn connect(
        &self,
        hop: &Hop,
        _: &ServiceName,
        _: Proto,
        _: bool,
        _: bool,
    ) -> Result<FakeConn, ConnectError> {
        let hop = hop.to_string();
        match self.next(&hop) {
            Step::Refuse => Err(ConnectError::Tcp(
                std::io::ErrorKind::ConnectionRefused.into(),
            )),
            step => Ok(FakeConn { hop, step }),
        }
    }

    async fn ready(&self, _: &mut FakeConn) -> Result<(), ConnectError> {
        Ok(())
    }

    async fn send(
        &self,
        conn: &mut FakeConn,
        req: Request<Body>,
    ) -> Result<Response<Body>, SendFailed> {
        let failed = |what: &str| -> Box<dyn std::error::Error + Send + Sync> { what.into() };
        if conn.step != Step::Unsent {
            self.sent.lock().unwrap().push(conn.hop.clone());
            self.headers.lock().unwrap().push(req.headers().clone());
        }
        match conn.step {
            Step::Answer(status) => Ok(Response::builder()
                .status(status)
                .body(empty_body())
                .unwrap()),
            Step::Gateway(reason) => Ok(Response::builder()
                .status(503)
                .header(FERRY_ERROR, reason)
                .body(empty_body())
                .unwrap()),
            Step::Hang => std::future::pending().await,
            Step::Reset => Err((failed("reset"), None)),
            Step::Unsent => Err((failed("closed before the request"), Some(req))),
            Step::Refuse => unreachable!("refused connections are not made"),
        }
    }

    fn answer(
        &self,
        response: Response<Body>,
        _: &ServiceName,
        _: &Hop,
        _: FakeConn,
        _: Attempt,
    ) -> Response<Body> {
        response
    }
}

fn remote(cluster: &str) -> Hop {
    Hop::Remote {
        cluster: cluster.parse().unwrap(),
        port: "http".parse().unwrap(),
        gateways: vec![std::net::SocketAddr::from(([127, 0, 0, 1], 4433))],
        endpoint: None,
    }
}

fn hop(port: u16) -> Hop {
    Hop::Local(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}

fn plan() -> Plan {
    Plan {
        service: "web.shop".parse().unwrap(),
        port: "http=8080/http".parse::<ServicePort>().unwrap(),
        hops: Vec::new(),
        endpoint: None,
    }
}

fn policy(retries: u8, retry_on: &[RetryOn], timeout: Option<Duration>) -> TrafficPolicy {
    TrafficPolicy {
        retries,
        retry_on: retry_on.to_vec(),
        timeout,
        ..TrafficPolicy::new("web.shop".parse().unwrap())
    }
}

fn head(method: Method) -> Head {
    Head {
        method,
        uri: Uri::from_static("/"),
        version: Version::HTTP_11,
        headers: HeaderMap::new(),
        upgrade: None,
    }
}

fn empty() -> Payload {
    Payload {
        body: empty_body(),
        empty: true,
    }
}

fn with_body() -> Payload {
    Payload {
        body: Full::new(Bytes::from_static(b"order=1"))
            .map_err(|never| match never {})
            .boxed(),
        empty: false,
    }
}

/// What a call ended with: the hop that answered and the status (or the proxy's error).
type Ended = (Option<String>, Result<u16, ProxyError>);

struct Harness {
    balancer: Arc<Balancer>,
    budgets: Budgets,
    upstream: Fake,
}

impl Harness {
    fn new(upstream: Fake) -> Harness {
        Harness {
            balancer: Balancer::new(OutlierConfig::default(), u32::MAX),
            budgets: Budgets::default(),
            upstream,
        }
    }

    async fn call(
        &self,
        policy: Option<&TrafficPolicy>,
        hops: &[Hop],
        head: Head,
        payload: Payload,
    ) -> Ended {
        let ctx = Ctx {
            balancer: &self.balancer,
            budgets: &self.budgets,
            upstream: &self.upstream,
        };
        let route = plan();
        let call = std::pin::pin!(forward(
            ctx,
            &route,
            policy,
            hops.to_vec(),
            head,
            payload,
            false
        ));
        let (hop, outcome) = within_timeout(policy.and_then(|p| p.timeout), call).await;
        (
            hop.map(|h| h.to_string()),
            outcome.map(|r| r.status().as_u16()),
        )
    }
}

impl Harness {
    /// A bodiless GET.
    async fn get(&self, policy: Option<&TrafficPolicy>, hops: &[Hop]) -> Ended {
        self.call(policy, hops, head(Method::GET), empty()).await
    }
}

#[tokio::test(start_paused = true)]
async fn a_5xx_is_sent_again_to_the_next_hop_after_a_short_backoff() {
    let (a, b) = (hop(1), hop(2));
    let h = Harness::new(Fake::default().hop(&a, &[], Step::Answer(503)).hop(
        &b,
        &[],
        Step::Answer(200),
    ));
    let p = policy(2, &[RetryOn::ServerError], None);
    let started = Virtual::now();
    let ended = h.get(Some(&p), &[a.clone(), b.clone()]).await;
    assert_eq!(ended, (Some(b.to_string()), Ok(200)));
    assert_eq!(h.upstream.sent(), [a.to_string(), b.to_string()]);
    assert!(
        started.elapsed() <= Duration::from_millis(25),
        "the first retry waits at most 25 ms: {:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_policy_that_asks_a_5xx_goes_back_as_it_is() {
    let (a, b) = (hop(1), hop(2));
    let h = Harness::new(Fake::default().hop(&a, &[], Step::Answer(503)).hop(
        &b,
        &[],
        Step::Answer(200),
    ));
    for p in [None, Some(policy(2, &[RetryOn::Reset], None))] {
        let ended = h.get(p.as_ref(), &[a.clone(), b.clone()]).await;
        assert_eq!(ended, (Some(a.to_string()), Ok(503)));
    }
    // Retried on 5xx only when idempotent: a POST's 503 is the answer.
    let p = policy(2, &[RetryOn::ServerError], None);
    let ended = h
        .call(
            Some(&p),
            &[a.clone(), b.clone()],
            head(Method::POST),
            empty(),
        )
        .await;
    assert_eq!(ended, (Some(a.to_string()), Ok(503)));
    assert_eq!(
        h.upstream.sent(),
        [a.to_string(), a.to_string(), a.to_string()]
    );
}

#[tokio::test(start_paused = true)]
async fn connections_that_cannot_be_made_move_on_without_a_retry_or_a_wait() {
    let (a, b) = (hop(1), hop(2));
    let h = Harness::new(Fake::default().hop(&a, &[], Step::Refuse).hop(
        &b,
        &[],
        Step::Answer(200),
    ));
    let started = Virtual::now();
    // No policy, no retries: yet a POST with a body goes to b, since nothing reached a.
    let ended = h
        .call(
            None,
            &[a.clone(), b.clone()],
            head(Method::POST),
            with_body(),
        )
        .await;
    assert_eq!(ended, (Some(b.to_string()), Ok(200)));
    assert_eq!(started.elapsed(), Duration::ZERO);
    let h = Harness::new(
        Fake::default()
            .hop(&a, &[], Step::Refuse)
            .hop(&b, &[], Step::Refuse),
    );
    let ended = h.get(None, &[a.clone(), b.clone()]).await;
    assert_eq!(ended, (None, Err(ProxyError::Unreachable)));
    assert!(h.upstream.sent().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_reset_is_retried_only_when_the_request_is_safe_to_send_again() {
    let (a, b) = (hop(1), hop(2));
    let fake = || {
        Fake::default()
            .hop(&a, &[], Step::Reset)
            .hop(&b, &[], Step::Answer(200))
    };
    let p = policy(2, &[RetryOn::Reset], None);
    // A GET without a body: sent again, to b.
    let h = Harness::new(fake());
    let ended = h.get(Some(&p), &[a.clone(), b.clone()]).await;
    assert_eq!(ended, (Some(b.to_string()), Ok(200)));
    // A POST whose body went out: never again; the caller gets a 502.
    let h = Harness::new(fake());
    let ended = h
        .call(
            Some(&p),
            &[a.clone(), b.clone()],
            head(Method::POST),
            with_body(),
        )
        .await;
    assert_eq!(ended, (Some(a.to_string()), Err(ProxyError::Upstream)));
    assert_eq!(h.upstream.sent(), [a.to_string()]);
}

#[tokio::test(start_paused = true)]
async fn an_unsent_request_goes_on_a_new_connection_to_the_same_hop() {
    let a = hop(1);
    let h = Harness::new(Fake::default().hop(&a, &[Step::Unsent], Step::Answer(200)));
    let started = Virtual::now();
    // No retries allowed and a body: still sent, since none of it had left.
    let ended = h
        .call(
            None,
            std::slice::from_ref(&a),
            head(Method::POST),
            with_body(),
        )
        .await;
    assert_eq!(ended, (Some(a.to_string()), Ok(200)));
    assert_eq!(h.upstream.sent(), [a.to_string()]);
    assert_eq!(started.elapsed(), Duration::ZERO);
    // A connection that keeps closing under the request is given up, not looped on.
    let h = Harness::new(Fake::default().hop(&a, &[], Step::Unsent));
    let ended = h.get(None, std::slice::from_ref(&a)).await;
    assert_eq!(ended, (None, Err(ProxyError::Unreachable)));
}

#[tokio::test(start_paused = true)]
async fn the_timeout_covers_the_whole_request_retries_included() {
    let (a, b) = (hop(1), hop(2));
    let h = Harness::new(
        Fake::default()
            .hop(&a, &[], Step::Answer(503))
            .hop(&b, &[], Step::Hang),
    );
    let p = policy(3, &[RetryOn::ServerError], Some(Duration::from_secs(2)));
    let started = Virtual::now();
    let ended = h.get(Some(&p), &[a.clone(), b.clone()]).await;
    assert_eq!(ended, (None, Err(ProxyError::Timeout)));
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "exactly the policy's limit"
    );
    assert_eq!(h.upstream.sent(), [a.to_string(), b.to_string()]);
}

#[tokio::test(start_paused = true)]
async fn retries_stay_inside_the_budget_under_a_failing_endpoint() {
    use ferry_federation::traffic::retry::{BUDGET_MIN_PER_SECOND, BUDGET_RATIO, BUDGET_WINDOW};
    let a = hop(1);
    let h = Harness::new(Fake::default().hop(&a, &[], Step::Answer(503)));
    let p = policy(1, &[RetryOn::ServerError], None);
    let calls = 1000;
    for _ in 0..calls {
        let ended = h.get(Some(&p), std::slice::from_ref(&a)).await;
        assert_eq!(ended, (Some(a.to_string()), Ok(503)));
    }
    let retries = h.upstream.sent().len() - calls;
    let allowed = (calls as f64 * BUDGET_RATIO) as usize
        + (BUDGET_MIN_PER_SECOND as usize) * BUDGET_WINDOW.as_secs() as usize;
    assert!(retries <= allowed, "{retries} retries, budget {allowed}");
    assert!(
        retries >= allowed - 1,
        "the budget is used, not starved: {retries} of {allowed}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_remote_gateway_with_no_endpoint_hands_a_bodiless_request_on_whole() {
    let (west, north) = (remote("west"), remote("north"));
    let h = Harness::new(
        Fake::default()
            .hop(&west, &[], Step::Gateway("no_endpoints"))
            .hop(&north, &[], Step::Answer(200)),
    );
    let mut get = head(Method::GET);
    get.headers
        .insert("x-app", http::HeaderValue::from_static("kept"));
    // No policy, no retries: still north's, with every header, and no retry spent.
    let ended = h
        .call(None, &[west.clone(), north.clone()], get, empty())
        .await;
    assert_eq!(ended, (Some(north.to_string()), Ok(200)));
    let headers = h.upstream.headers.lock().unwrap().clone();
    assert_eq!(headers.len(), 2);
    assert_eq!(
        headers[1]["x-app"], "kept",
        "the next hop gets the headers too"
    );
    // The last hop's own answer is the caller's.
    let h = Harness::new(Fake::default().hop(&west, &[], Step::Gateway("no_endpoints")));
    let ended = h.get(None, std::slice::from_ref(&west)).await;
    assert_eq!(ended, (Some(west.to_string()), Ok(503)));
    // What may have reached a server is not sent again: a failed endpoint, a request
    // with a body, or a local hop's (an application's) `ferry-error`.
    for (hops, step, payload) in [
        (
            vec![west.clone(), north.clone()],
            Step::Gateway("upstream_reset"),
            empty(),
        ),
        (
            vec![west.clone(), north.clone()],
            Step::Gateway("no_endpoints"),
            with_body(),
        ),
        (
            vec![hop(1), north.clone()],
            Step::Gateway("no_endpoints"),
            empty(),
        ),
    ] {
        let h = Harness::new(Fake::default().hop(&hops[0], &[], step).hop(
            &north,
            &[],
            Step::Answer(200),
        ));
        let ended = h.call(None, &hops, head(Method::GET), payload).await;
        assert_eq!(ended, (Some(hops[0].to_string()), Ok(503)), "{step:?}");
    }
}

/// The attempt loop's future is large; the timeout around it holds it by reference, so a
/// request moves it once (at most), not once per wrapper.
#[test]
fn the_timeout_holds_the_attempt_loop_by_reference() {
    let h = Harness::new(Fake::default());
    let ctx = Ctx {
        balancer: &h.balancer,
        budgets: &h.budgets,
        upstream: &h.upstream,
    };
    let route = plan();
    let call = forward(ctx, &route, None, vec![], head(Method::GET), empty(), false);
    let loop_size = std::mem::size_of_val(&call);
    let call = std::pin::pin!(call);
    let timed = within_timeout(Some(Duration::from_secs(1)), call);
    assert!(
        std::mem::size_of_val(&timed) < 512 && loop_size > 512,
        "timeout wrapper {} bytes around a {loop_size}-byte loop",
        std::mem::size_of_val(&timed)
    );
}
