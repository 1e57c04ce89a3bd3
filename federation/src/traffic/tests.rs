use std::collections::BTreeMap;
use std::time::Duration;

use super::retry::{BUDGET_MIN_PER_SECOND, BUDGET_WINDOW, GRPC_UNAVAILABLE};
use super::*;
use crate::model::traffic::{parse_retry_on, parse_weights, MAX_ROUTES};
use crate::routing::{Hop, Plan};
use crate::testutil::{addr, cid, sname, t0};

// ------------------------------------------------------------------ policy text

#[test]
fn weights_parse_and_print_back() {
    let split = parse_weights(" east=90, west=10 ").unwrap();
    let Split::Weights(w) = &split else { panic!() };
    assert_eq!(w.get(&cid("east")), Some(&90));
    assert_eq!(w.get(&cid("west")), Some(&10));
    assert_eq!(split.to_string(), "weights=east=90,west=10");
    assert_eq!(split.to_string().parse::<Split>().unwrap(), split);
    assert_eq!(
        parse_weights("east=100,west=0").unwrap().to_string(),
        "weights=east=100,west=0"
    );
}

#[test]
fn bad_weights_say_what_is_wrong() {
    let cases: &[(&str, &str)] = &[
        ("east", "has no '='"),
        ("east=ninety", "not 0 to 10000"),
        ("east=10001", "not 0 to 10000"),
        ("east=-1", "not 0 to 10000"),
        ("east=1,east=2", "twice"),
        ("east=0,west=0", "at least one cluster a weight above 0"),
        ("East=1", "cluster id"),
        ("", "has no '='"),
    ];
    for (input, expect) in cases {
        let err = parse_weights(input).unwrap_err().to_string();
        assert!(err.contains(expect), "{input:?}: {err}");
    }
    let many: Vec<String> = (0..17).map(|i| format!("c{i}=1")).collect();
    let err = parse_weights(&many.join(",")).unwrap_err().to_string();
    assert!(err.contains("more than 16"), "{err}");
}

#[test]
fn splits_parse_from_their_config_text() {
    assert_eq!("failover".parse::<Split>().unwrap(), Split::Failover);
    assert_eq!("local-only".parse::<Split>().unwrap(), Split::LocalOnly);
    assert_eq!(
        "pinned=west".parse::<Split>().unwrap(),
        Split::Pinned(cid("west"))
    );
    let err = "nearest".parse::<Split>().unwrap_err().to_string();
    assert!(err.contains("expected failover, local-only"), "{err}");
}

#[test]
fn routes_parse_lowercase_and_refuse_connection_headers() {
    let r: HeaderRoute = "X-Canary=1 -> west".parse().unwrap();
    assert_eq!((r.header.as_str(), r.value.as_str()), ("x-canary", "1"));
    assert_eq!(r.cluster, cid("west"));
    assert_eq!(r.to_string(), "x-canary=1 -> west");
    let cases: &[(&str, &str)] = &[
        ("x-canary=1 west", "no '->'"),
        ("x-canary -> west", "no '='"),
        ("x canary=1 -> west", "contains ' '"),
        ("=1 -> west", "1 to 64 characters"),
        ("connection=close -> west", "about the connection"),
        ("x-canary=1\u{7} -> west", "contains"),
        ("x-canary=1 -> West", "cluster id"),
    ];
    for (input, expect) in cases {
        let err = input.parse::<HeaderRoute>().unwrap_err().to_string();
        assert!(err.contains(expect), "{input:?}: {err}");
    }
}

#[test]
fn retry_conditions_parse_once_each_in_order() {
    assert_eq!(
        parse_retry_on("unavailable, 5xx,reset,5xx").unwrap(),
        vec![RetryOn::ServerError, RetryOn::Reset, RetryOn::Unavailable]
    );
    let err = parse_retry_on("5xx,gateway-error").unwrap_err().to_string();
    assert!(err.contains("\"gateway-error\" is not one of"), "{err}");
}

#[test]
fn a_stored_policy_out_of_bounds_is_refused() {
    let ok = policy("web.shop");
    assert_eq!(ok.validate(), Ok(()));
    let mut p = ok.clone();
    p.retries = 6;
    assert!(p
        .validate()
        .unwrap_err()
        .to_string()
        .contains("more than 5"));
    let mut p = ok.clone();
    p.timeout = Some(Duration::ZERO);
    assert!(p.validate().is_err());
    let mut p = ok.clone();
    p.split = Split::Weights(BTreeMap::from([(cid("east"), 0)]));
    assert_eq!(p.validate(), Err(InvalidPolicy::NoWeight));
    let mut p = ok.clone();
    p.routes = vec!["x=1 -> west".parse().unwrap(); MAX_ROUTES + 1];
    assert!(p.validate().is_err());
    let mut p = ok;
    p.routes = vec![HeaderRoute {
        header: "x-a".into(),
        value: "a\nb".into(),
        cluster: cid("west"),
    }];
    assert!(p.validate().is_err());
}

// ------------------------------------------------------------------ decide

fn policy(service: &str) -> TrafficPolicy {
    TrafficPolicy::new(sname(service))
}

fn remote(cluster: &str) -> Hop {
    Hop::Remote {
        cluster: cid(cluster),
        port: "http".parse().unwrap(),
        gateways: vec![addr("192.0.2.1:4433")],
        endpoint: None,
    }
}

fn local(a: &str) -> Hop {
    Hop::Local(addr(a))
}

/// A plan with two local endpoints (unless `no_local`) and the named remote clusters.
fn plan(no_local: bool, remotes: &[&str]) -> Plan {
    let mut hops = Vec::new();
    if !no_local {
        hops.push(local("10.0.0.1:8080"));
        hops.push(local("10.0.0.2:8080"));
    }
    hops.extend(remotes.iter().map(|c| remote(c)));
    Plan {
        service: sname("web.shop"),
        port: "http=80:8080/http".parse().unwrap(),
        hops,
        endpoint: None,
    }
}

fn rtts(pairs: &[(&str, u64)]) -> BTreeMap<ClusterId, Duration> {
    pairs
        .iter()
        .map(|(c, ms)| (cid(c), Duration::from_millis(*ms)))
        .collect()
}

use crate::model::ClusterId;

/// The clusters of a decision's groups, `home` for local endpoints.
fn clusters(d: &Decision) -> Vec<String> {
    d.groups
        .iter()
        .map(|g| match &g[0] {
            Hop::Local(_) => {
                assert!(g.iter().all(|h| matches!(h, Hop::Local(_))));
                "home".to_string()
            }
            Hop::Remote { cluster, .. } => cluster.to_string(),
        })
        .collect()
}

/// A request's headers.
type Headers<'a> = &'a [(&'a str, &'a str)];
/// The clusters of the groups, or the allowance an error names.
type Want<'a> = Result<&'a [&'a str], &'a str>;

fn facts<'a>(
    rtt: &'a BTreeMap<ClusterId, Duration>,
    headers: &'a [(&'a str, &'a str)],
    roll: u32,
) -> CallFacts<'a> {
    static HOME: std::sync::OnceLock<ClusterId> = std::sync::OnceLock::new();
    CallFacts {
        local: HOME.get_or_init(|| cid("home")),
        rtt,
        headers,
        roll,
    }
}

#[test]
fn splits_group_hops_local_first_then_nearest() {
    let rtt = rtts(&[("west", 30), ("north", 5), ("south", 5)]);
    let all = plan(false, &["west", "east", "north", "south"]);
    let none_local = plan(true, &["west", "east", "north"]);
    let local_only = plan(false, &[]);
    let one_peer = plan(true, &["west"]);
    let with = |split: &str| {
        let mut p = policy("web.shop");
        p.split = split.parse().unwrap();
        p
    };
    // (plan, policy, groups by cluster, or the error's allowance)
    let cases: Vec<(&Plan, Option<TrafficPolicy>, Want<'_>)> = vec![
        // No policy is failover: home, then by RTT (ties by name), unmeasured last.
        (&all, None, Ok(&["home", "north", "south", "west", "east"])),
        (
            &all,
            Some(with("failover")),
            Ok(&["home", "north", "south", "west", "east"]),
        ),
        (&none_local, None, Ok(&["north", "west", "east"])),
        // Hops in one cluster: one group, whether home or a peer.
        (&local_only, None, Ok(&["home"])),
        (&one_peer, Some(with("failover")), Ok(&["west"])),
        (&all, Some(with("local-only")), Ok(&["home"])),
        (&none_local, Some(with("local-only")), Err("local-only")),
        (&all, Some(with("pinned=west")), Ok(&["west"])),
        (&all, Some(with("pinned=home")), Ok(&["home"])),
        (&none_local, Some(with("pinned=south")), Err("pinned=south")),
        // Weighted: the drawn side first, the other weighted sides nearest first; sides
        // not named are not used.
        (
            &all,
            Some(with("weights=east=1,home=1,west=1")),
            Ok(&["east", "home", "west"]),
        ),
        // Weight 0: failover only.
        (
            &none_local,
            Some(with("weights=home=1,west=0")),
            Ok(&["west"]),
        ),
        (
            &none_local,
            Some(with("weights=home=1,south=1")),
            Err("weights=home=1,south=1"),
        ),
    ];
    for (i, (plan, policy, want)) in cases.into_iter().enumerate() {
        let got = decide(plan, policy.as_ref(), &facts(&rtt, &[], 0));
        match (got, want) {
            (Ok(d), Ok(want)) => assert_eq!(clusters(&d), want, "case {i}"),
            (Err(Unroutable::NoAllowedEndpoint { allowed, service }), Err(want)) => {
                assert_eq!(
                    (allowed.as_str(), service),
                    (want, sname("web.shop")),
                    "case {i}"
                )
            }
            (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn failover_within_one_cluster_keeps_the_plan_order() {
    let rtt = rtts(&[]);
    for plan in [plan(false, &[]), plan(true, &["west"])] {
        let decision = decide(&plan, None, &facts(&rtt, &[], 0)).unwrap();
        assert_eq!(decision.groups, vec![plan.hops.clone()]);
        assert_eq!(decision.reason, Reason::Failover);
    }
}

#[test]
fn a_weighted_split_follows_its_weights_and_fails_over_when_a_side_is_empty() {
    let mut p = policy("web.shop");
    p.split = parse_weights("home=90,west=10").unwrap();
    let rtt = rtts(&[]);
    let both = plan(false, &["west"]);
    let mut firsts: BTreeMap<String, u32> = BTreeMap::new();
    for roll in 0..10_000u32 {
        let d = decide(&both, Some(&p), &facts(&rtt, &[], roll)).unwrap();
        assert_eq!(d.reason, Reason::Weighted);
        assert_eq!(d.groups.len(), 2, "the other side is the failover");
        *firsts.entry(clusters(&d)[0].clone()).or_default() += 1;
    }
    assert_eq!(firsts.get("home"), Some(&9_000));
    assert_eq!(firsts.get("west"), Some(&1_000));
    // West has no healthy endpoint: every call goes home, and the other way round.
    for roll in [0, 95, u32::MAX] {
        let d = decide(&plan(false, &[]), Some(&p), &facts(&rtt, &[], roll)).unwrap();
        assert_eq!(clusters(&d), ["home"]);
        let d = decide(&plan(true, &["west"]), Some(&p), &facts(&rtt, &[], roll)).unwrap();
        assert_eq!(clusters(&d), ["west"]);
    }
}

#[test]
fn header_routes_come_before_the_split_and_never_fall_back() {
    let mut p = policy("web.shop");
    p.split = Split::LocalOnly;
    p.routes = vec![
        "x-canary=1 -> west".parse().unwrap(),
        "x-user=beta -> east".parse().unwrap(),
    ];
    let rtt = rtts(&[]);
    let all = plan(false, &["west", "east"]);
    let cases: &[(Headers<'_>, Want<'_>, Option<usize>)] = &[
        (&[("x-canary", "1")], Ok(&["west"]), Some(0)),
        (
            &[("x-user", "beta"), ("x-canary", "1")],
            Ok(&["west"]),
            Some(0),
        ),
        (&[("x-user", "beta")], Ok(&["east"]), Some(1)),
        // Exact value only; otherwise the split.
        (&[("x-canary", "10")], Ok(&["home"]), None),
        (&[("x-canary", "1 ")], Ok(&["home"]), None),
        (&[], Ok(&["home"]), None),
    ];
    for (headers, want, route) in cases {
        let d = decide(&all, Some(&p), &facts(&rtt, headers, 0)).unwrap();
        assert_eq!(clusters(&d), want.unwrap(), "{headers:?}");
        let reason = route.map_or(Reason::LocalOnly, Reason::Route);
        assert_eq!(d.reason, reason, "{headers:?}");
    }
    // The canary cluster has no healthy endpoint: the canary call fails rather than
    // quietly reaching the stable version.
    let err = decide(
        &plan(false, &["east"]),
        Some(&p),
        &facts(&rtt, &[("x-canary", "1")], 0),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("route x-canary=1 -> west"),
        "{err}"
    );
    assert_eq!(err.reason(), "no_allowed_endpoint");
}

#[test]
fn a_named_endpoint_is_not_moved_by_policy() {
    let mut p = policy("web.shop");
    p.split = Split::Pinned(cid("east"));
    let mut endpoint_plan = plan(true, &[]);
    endpoint_plan.hops = vec![local("10.0.0.7:8080")];
    endpoint_plan.endpoint = Some("web-0".parse().unwrap());
    let d = decide(&endpoint_plan, Some(&p), &facts(&rtts(&[]), &[], 0)).unwrap();
    assert_eq!(d.reason, Reason::Endpoint);
    assert_eq!(d.groups, vec![vec![local("10.0.0.7:8080")]]);
}

// ------------------------------------------------------------------ balance

#[test]
fn peak_ewma_jumps_to_a_slow_answer_and_decays_back() {
    let t = t0();
    let mut e = PeakEwma::new(t);
    let ms = |d: f64| d / 1e6;
    assert_eq!(ms(e.estimate(t)), 30.0);
    e.observe(t, Duration::from_millis(200));
    assert_eq!(
        ms(e.estimate(t)),
        200.0,
        "a peak replaces the estimate at once"
    );
    // Fast answers pull it down by how much time has passed.
    e.observe(t + Duration::from_millis(1), Duration::from_millis(1));
    assert!(ms(e.estimate(t + Duration::from_millis(1))) > 199.0);
    e.observe(t + Duration::from_secs(10), Duration::from_millis(1));
    let after = ms(e.estimate(t + Duration::from_secs(10)));
    assert!((70.0..80.0).contains(&after), "{after}");
    // Idle, it decays toward zero so the hop is tried again.
    assert!(ms(e.estimate(t + Duration::from_secs(60))) < 1.0);
    // In-flight calls multiply the cost.
    let now = t + Duration::from_secs(10);
    assert_eq!(e.cost(now, 3), e.cost(now, 0) * 4.0);
    // Time going backwards does not panic or grow the estimate.
    e.observe(t, Duration::from_millis(1));
    assert!(ms(e.estimate(t)) <= after);
}

fn load(cost: f64) -> Load {
    Load {
        cost,
        ejected: false,
        full: false,
    }
}

#[test]
fn pick_takes_the_cheaper_of_two_distinct_draws() {
    let loads = [load(10.0), load(1.0), load(5.0)];
    // Every pair of draws lands on two different hops and keeps the cheaper.
    for a in 0..3 {
        for b in 0..2 {
            let i = pick(&loads, a, b).unwrap();
            let first = a as usize % 3;
            let second = (first + 1 + b as usize % 2) % 3;
            assert_ne!(first, second);
            let want = if loads[second].cost < loads[first].cost {
                second
            } else {
                first
            };
            assert_eq!(i, want);
        }
    }
    // Over many draws the dearest hop is never picked and the cheapest most often.
    let mut count = [0u32; 3];
    for n in 0..3000u32 {
        count[pick(&loads, n.wrapping_mul(2_654_435_761), n / 3).unwrap()] += 1;
    }
    assert_eq!(count[0], 0, "{count:?}");
    assert!(count[1] > count[2], "{count:?}");
}

#[test]
fn pick_skips_ejected_and_full_hops_but_never_ejects_the_last() {
    let ejected = |cost| Load {
        ejected: true,
        ..load(cost)
    };
    let full = |cost| Load {
        full: true,
        ..load(cost)
    };
    for a in 0..10 {
        for b in 0..10 {
            assert_eq!(
                pick(&[ejected(0.1), load(9.0), ejected(0.1)], a, b),
                Some(1)
            );
            assert_eq!(pick(&[full(0.1), load(9.0)], a, b), Some(1));
            // Every usable hop ejected: they are used anyway, cheapest of two.
            let i = pick(&[ejected(2.0), full(0.1), ejected(3.0)], a, b).unwrap();
            assert!(i == 0 || i == 2);
            assert_eq!(pick(&[full(1.0), full(2.0)], a, b), None);
        }
    }
    assert_eq!(pick(&[], 0, 0), None);
    assert_eq!(pick(&[load(1.0)], 7, 9), Some(0));
}

// ------------------------------------------------------------------ outliers

#[test]
fn consecutive_failures_eject_longer_each_time_and_a_success_forgives() {
    let config = OutlierConfig {
        consecutive: 3,
        base: Duration::from_secs(5),
        max: Duration::from_secs(12),
    };
    let t = t0();
    let s = Duration::from_secs;
    let mut o = Outlier::default();
    assert_eq!(o.record(t, false, &config), None);
    assert_eq!(o.record(t, false, &config), None);
    assert_eq!(o.record(t, false, &config), Some(t + s(5)));
    assert!(o.is_ejected(t + s(4)));
    // Failures while ejected (used as the last resort) do not stretch it.
    assert_eq!(o.record(t + s(1), false, &config), None);
    assert!(!o.is_ejected(t + s(5)));
    // Ejected again without a success between: twice as long, then capped.
    for _ in 0..2 {
        assert_eq!(o.record(t + s(6), false, &config), None);
    }
    assert_eq!(o.record(t + s(6), false, &config), Some(t + s(16)));
    for _ in 0..2 {
        o.record(t + s(20), false, &config);
    }
    assert_eq!(o.record(t + s(20), false, &config), Some(t + s(32)));
    // A success resets both counts.
    o.record(t + s(40), true, &config);
    for _ in 0..2 {
        o.record(t + s(41), false, &config);
    }
    assert_eq!(o.record(t + s(41), false, &config), Some(t + s(46)));
    // A success between failures restarts the run.
    let mut o = Outlier::default();
    for ok in [false, false, true, false, false] {
        assert_eq!(o.record(t, ok, &config), None);
    }
}

// ------------------------------------------------------------------ retries

#[test]
fn only_safe_attempts_are_retried_and_only_as_the_policy_says() {
    let mut p = policy("web.shop");
    p.retries = 2;
    p.retry_on = vec![RetryOn::ServerError, RetryOn::Reset, RetryOn::Unavailable];
    let mut gateway_errors_only = p.clone();
    gateway_errors_only.retry_on = vec![RetryOn::Unavailable];
    let mut none = p.clone();
    none.retries = 0;
    let get = Attempt {
        idempotent: true,
        body_sent: false,
        replayable: false,
    };
    let post = Attempt {
        idempotent: false,
        ..get
    };
    let streamed_put = Attempt {
        body_sent: true,
        ..get
    };
    let kept_put = Attempt {
        body_sent: true,
        replayable: true,
        ..get
    };
    use Failure::*;
    let cases: &[(Option<&TrafficPolicy>, Attempt, Failure, bool)] = &[
        // Nothing reached a server: retried whatever the policy (if the body is intact).
        (None, post, Connect, true),
        (Some(&none), post, Connect, true),
        (Some(&p), streamed_put, Connect, false),
        (Some(&p), kept_put, Connect, true),
        // A reset or a 5xx: idempotent requests only, and only if the policy says so.
        (Some(&p), get, Reset, true),
        (Some(&p), post, Reset, false),
        (Some(&p), get, Status(503), true),
        (Some(&p), get, Status(404), false),
        (Some(&p), post, Status(503), false),
        (Some(&p), streamed_put, Status(503), false),
        (Some(&p), kept_put, Status(503), true),
        (Some(&gateway_errors_only), get, Status(503), false),
        (Some(&none), get, Reset, false),
        (None, get, Status(502), false),
        // gRPC UNAVAILABLE means not processed: retried even for a non-idempotent call.
        (Some(&p), post, Grpc(GRPC_UNAVAILABLE), true),
        (Some(&p), post, Grpc(13), false),
        (Some(&none), post, Grpc(GRPC_UNAVAILABLE), false),
    ];
    for (i, (policy, attempt, failure, want)) in cases.iter().enumerate() {
        assert_eq!(
            may_retry(*policy, *attempt, *failure),
            *want,
            "case {i}: {failure:?}"
        );
    }
}

#[test]
fn the_budget_allows_a_fraction_of_calls_plus_a_floor_and_forgets_old_calls() {
    let t = t0();
    let floor = BUDGET_MIN_PER_SECOND as usize * BUDGET_WINDOW.as_secs() as usize;
    // No calls at all: the floor.
    let mut b = RetryBudget::new(t);
    assert_eq!((0..1000).filter(|_| b.withdraw(t)).count(), floor);
    // 1000 calls: 20 % of them on top.
    let mut b = RetryBudget::new(t);
    for _ in 0..1000 {
        b.deposit(t);
    }
    assert_eq!((0..1000).filter(|_| b.withdraw(t)).count(), floor + 200);
    // A window later, the old calls and retries no longer count.
    let later = t + BUDGET_WINDOW + Duration::from_secs(1);
    assert_eq!((0..1000).filter(|_| b.withdraw(later)).count(), floor);
    // Time going backwards neither panics nor frees budget.
    assert!(!b.withdraw(t));
}

#[test]
fn backoff_is_jittered_below_a_doubling_ceiling() {
    let ms = Duration::from_millis;
    assert_eq!(backoff(1, 0), Duration::ZERO);
    assert_eq!(backoff(1, u32::MAX), ms(25));
    assert_eq!(backoff(2, u32::MAX), ms(50));
    assert_eq!(backoff(4, u32::MAX), ms(200));
    assert_eq!(backoff(9, u32::MAX), ms(250));
    let half = backoff(3, u32::MAX / 2);
    assert!(half > ms(49) && half < ms(51), "{half:?}");
}
