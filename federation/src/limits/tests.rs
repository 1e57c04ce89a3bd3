use super::*;
use crate::testutil::{export, export_headless};
use std::time::Duration;

fn names(list: &[ExportedService]) -> Vec<String> {
    list.iter().map(|s| s.name.to_string()).collect()
}

fn small() -> ImportLimits {
    ImportLimits {
        services: 3,
        ports: 2,
        endpoints: 2,
        gateways: 2,
        frames_per_second: 10,
        frame_burst: 5,
        allow_loopback: false,
    }
}

#[test]
fn services_over_the_bound_keep_the_ones_imported_before() {
    let offered: Vec<ExportedService> = ["a.ns", "b.ns", "c.ns", "d.ns", "e.ns"]
        .iter()
        .map(|n| export(n, &["http=80"], &[("http", 1)]))
        .collect();
    let (kept, exceeded) = bound_exports(&[], offered.clone(), &small());
    assert_eq!(names(&kept), ["a.ns", "b.ns", "c.ns"]);
    assert_eq!(exceeded, [LimitExceeded::Services { max: 3, offered: 5 }]);
    // A peer that adds names sorting first cannot push out what it exported before.
    let previous = vec![offered[3].clone(), offered[4].clone()];
    let (kept, _) = bound_exports(&previous, offered, &small());
    assert_eq!(names(&kept), ["a.ns", "d.ns", "e.ns"]);
}

#[test]
fn services_with_too_many_or_duplicate_ports_or_endpoints_are_refused_whole() {
    let offered = vec![
        export("a.ns", &["a=1", "b=2", "c=3"], &[]),
        export("b.ns", &["a=1", "a=2"], &[]),
        export("c.ns", &["a=1", "b=1"], &[]),
        export_headless("d.ns", "a=1", &[("x", true), ("y", true), ("z", true)]),
        export_headless("e.ns", "a=1", &[("x", true), ("x", false)]),
        export(
            "ok.ns",
            &["http=80", "grpc=90"],
            &[("http", 2), ("bogus", 7)],
        ),
    ];
    let (kept, exceeded) = bound_exports(&[], offered, &small());
    assert_eq!(names(&kept), ["ok.ns"]);
    assert_eq!(
        kept[0]
            .healthy
            .keys()
            .map(|k| k.to_string())
            .collect::<Vec<_>>(),
        ["http"],
        "health for ports the service does not have is dropped"
    );
    let kinds: Vec<String> = exceeded.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        kinds,
        [
            "a.ns refused: more than 2 ports, or a port name or number twice",
            "b.ns refused: more than 2 ports, or a port name or number twice",
            "c.ns refused: more than 2 ports, or a port name or number twice",
            "d.ns refused: more than 2 endpoints, or a hostname twice",
            "e.ns refused: more than 2 endpoints, or a hostname twice",
        ]
    );
}

#[test]
fn gateway_addresses_are_checked() {
    let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
    /// (what, offered, allow loopback, usable, kinds reported)
    type Case = (
        &'static str,
        Vec<&'static str>,
        bool,
        Vec<&'static str>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "unicast kept in order, duplicates folded",
            vec!["192.0.2.1:443", "[2001:db8::1]:443", "192.0.2.1:443"],
            false,
            vec!["192.0.2.1:443", "[2001:db8::1]:443"],
            vec![],
        ),
        (
            "loopback, link-local, unspecified, multicast, broadcast, port 0 refused",
            vec![
                "127.0.0.1:443",
                "[::1]:443",
                "169.254.1.1:443",
                "[fe80::1]:443",
                "0.0.0.0:443",
                "224.0.0.1:443",
                "255.255.255.255:443",
                "192.0.2.9:0",
                "[::ffff:127.0.0.1]:443",
            ],
            false,
            vec![],
            vec!["gateway_address"; 2],
        ),
        (
            "loopback allowed where the config says so",
            vec!["127.0.0.1:443", "[::1]:443"],
            true,
            vec!["127.0.0.1:443", "[::1]:443"],
            vec![],
        ),
        (
            "more than the bound: the rest ignored",
            vec!["192.0.2.1:1", "192.0.2.2:1", "192.0.2.3:1"],
            false,
            vec!["192.0.2.1:1", "192.0.2.2:1"],
            vec!["gateways"],
        ),
    ];
    for (what, offered, allow_loopback, want, want_kinds) in cases {
        let limits = ImportLimits {
            allow_loopback,
            ..small()
        };
        let offered: Vec<SocketAddr> = offered.iter().map(|s| a(s)).collect();
        let (usable, exceeded) = check_gateways(&offered, &limits);
        let want: Vec<SocketAddr> = want.iter().map(|s| a(s)).collect();
        assert_eq!(usable, want, "{what}");
        let kinds: Vec<&str> = exceeded.iter().map(|e| e.kind()).collect();
        assert_eq!(kinds, want_kinds, "{what}: reports stay bounded too");
    }
}

#[test]
fn frame_budget_allows_a_burst_then_the_rate() {
    let limits = small();
    let t0 = crate::testutil::t0();
    let mut budget = FrameBudget::new(&limits);
    let burst = (0..20).filter(|_| budget.take(t0, &limits)).count();
    assert_eq!(burst, 5);
    // One second refills ten (the rate), but the bucket never holds more than the burst.
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!((0..20).filter(|_| budget.take(t1, &limits)).count(), 5);
    let t2 = t1 + Duration::from_millis(200);
    assert_eq!((0..20).filter(|_| budget.take(t2, &limits)).count(), 2);
}
