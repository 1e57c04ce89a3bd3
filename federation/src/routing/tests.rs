use super::*;
use crate::testutil::*;

fn target(vip: &str, port: u16) -> Target {
    Target { vip: ip(vip), port }
}

fn remote(cluster: &str, port: &str, gateways: &[&str]) -> Hop {
    Hop::Remote {
        cluster: cid(cluster),
        port: port.parse().unwrap(),
        gateways: gateways.iter().map(|g| addr(g)).collect(),
    }
}

#[test]
fn plan_table() {
    let snap = fixture();
    let west = ["192.0.2.1:4443", "192.0.2.2:4443"];
    let west_rot = ["192.0.2.2:4443", "192.0.2.1:4443"];
    let north = ["198.51.100.1:4443"];
    type Case = (&'static str, Target, u64, Result<Vec<Hop>, NoRoute>);
    let cases: Vec<Case> = vec![
        (
            "local first, unhealthy skipped, then remotes with gateways and healthy counts",
            target("10.96.0.1", 80),
            0,
            Ok(vec![
                Hop::Local(addr("10.0.0.1:8080")),
                Hop::Local(addr("10.0.0.3:8080")),
                remote("north", "http", &north),
                remote("west", "http", &west),
            ]),
        ),
        (
            "pick rotates locals, remotes and gateways",
            target("10.96.0.1", 80),
            1,
            Ok(vec![
                Hop::Local(addr("10.0.0.3:8080")),
                Hop::Local(addr("10.0.0.1:8080")),
                remote("west", "http", &west_rot),
                remote("north", "http", &north),
            ]),
        ),
        (
            "remote with zero healthy for this port skipped",
            target("10.96.0.1", 9090),
            0,
            Ok(vec![
                Hop::Local(addr("10.0.0.1:9090")),
                Hop::Local(addr("10.0.0.3:9090")),
            ]),
        ),
        (
            "import-only fails over to remote",
            target("10.96.0.3", 80),
            5,
            Ok(vec![remote("west", "http", &west_rot)]),
        ),
        (
            "explicit endpoint port wins",
            target("10.96.0.2", 5432),
            0,
            Ok(vec![Hop::Local(addr("10.0.1.1:5432"))]),
        ),
        (
            "all unhealthy and no remote",
            target("10.96.0.4", 80),
            0,
            Err(NoRoute::NoHealthyEndpoints(sname("down.shop"))),
        ),
        (
            "unknown vip",
            target("10.96.9.9", 80),
            0,
            Err(NoRoute::UnknownVip(ip("10.96.9.9"))),
        ),
        (
            "unknown port (target port is not a service port)",
            target("10.96.0.1", 8080),
            0,
            Err(NoRoute::UnknownPort {
                service: sname("web.shop"),
                port: 8080,
            }),
        ),
    ];
    for (what, t, pick, want) in cases {
        let got = plan(&snap, &t, pick).map(|p| p.hops);
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn plan_carries_service_and_port() {
    let p = plan(&fixture(), &target("10.96.0.1", 80), 0).unwrap();
    assert_eq!(p.service, sname("web.shop"));
    assert_eq!(p.port.to_string(), "http=80:8080/http");
}

#[test]
fn failover_when_local_all_unhealthy() {
    let mut snap = fixture();
    let web = snap
        .services
        .iter_mut()
        .find(|s| s.name == sname("web.shop"))
        .unwrap();
    for e in &mut web.local {
        e.healthy = false;
    }
    let hops = plan(&snap, &target("10.96.0.1", 80), 0).unwrap().hops;
    assert!(
        hops.iter().all(|h| matches!(h, Hop::Remote { .. })),
        "{hops:?}"
    );
    assert_eq!(hops.len(), 2);
    // A remote without a link record is never a hop.
    snap.links.retain(|l| l.peer != cid("west"));
    let hops = plan(&snap, &target("10.96.0.1", 80), 0).unwrap().hops;
    assert_eq!(hops, vec![remote("north", "http", &["198.51.100.1:4443"])]);
}

#[test]
fn every_pick_spreads_over_all_hops() {
    let snap = fixture();
    let mut firsts = std::collections::BTreeSet::new();
    for pick in 0..10 {
        let hops = plan(&snap, &target("10.96.0.1", 80), pick).unwrap().hops;
        assert_eq!(hops.len(), 4);
        assert!(matches!(hops[0], Hop::Local(_)), "local always first");
        firsts.insert(hops[0].to_string());
    }
    assert_eq!(firsts.len(), 2);
}
