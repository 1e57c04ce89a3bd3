use super::*;
use crate::testutil::*;

fn target(vip: &str, port: u16) -> Target {
    Target { vip: ip(vip), port }
}

fn remote(cluster: &str, port: &str, gateways: &[&str]) -> Hop {
    remote_hop(cluster, port, gateways, None)
}

fn remote_endpoint(cluster: &str, port: &str, gateways: &[&str], endpoint: &str) -> Hop {
    remote_hop(cluster, port, gateways, Some(endpoint))
}

fn remote_hop(cluster: &str, port: &str, gateways: &[&str], endpoint: Option<&str>) -> Hop {
    Hop::Remote {
        cluster: cid(cluster),
        port: port.parse().unwrap(),
        gateways: gateways.iter().map(|g| addr(g)).collect(),
        endpoint: endpoint.map(|e| e.parse().unwrap()),
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

#[test]
fn endpoint_vip_plans_exactly_one_hop() {
    let snap = headless_fixture();
    let west = ["192.0.2.1:4443", "192.0.2.2:4443"];
    let west_rot = ["192.0.2.2:4443", "192.0.2.1:4443"];
    let unavailable = |cluster: &str, hostname: &str| {
        Err(NoRoute::EndpointUnavailable {
            service: sname("kafka.data"),
            cluster: cid(cluster),
            hostname: hostname.parse().unwrap(),
        })
    };
    type Case = (&'static str, Target, u64, Result<Vec<Hop>, NoRoute>);
    let cases: Vec<Case> = vec![
        (
            "local endpoint, direct",
            target("10.96.2.1", 9092),
            0,
            Ok(vec![Hop::Local(addr("10.0.3.1:9092"))]),
        ),
        (
            "local endpoint with a default hostname",
            target("10.96.2.3", 9092),
            7,
            Ok(vec![Hop::Local(addr("10.0.3.3:9092"))]),
        ),
        (
            "remote endpoint, through its cluster's gateways, named",
            target("10.96.2.10", 9092),
            0,
            Ok(vec![remote_endpoint("west", "broker", &west, "kafka-0")]),
        ),
        (
            "pick rotates the gateways only",
            target("10.96.2.10", 9092),
            1,
            Ok(vec![remote_endpoint(
                "west", "broker", &west_rot, "kafka-0",
            )]),
        ),
        (
            "unhealthy local endpoint",
            target("10.96.2.2", 9092),
            0,
            unavailable("east", "kafka-1"),
        ),
        (
            "unhealthy remote endpoint",
            target("10.96.2.11", 9092),
            0,
            unavailable("west", "kafka-5"),
        ),
        (
            "remote endpoint whose cluster has no gateway",
            target("10.96.2.12", 9092),
            0,
            unavailable("south", "kafka-9"),
        ),
        (
            "unknown port on an endpoint VIP",
            target("10.96.2.1", 80),
            0,
            Err(NoRoute::UnknownPort {
                service: sname("kafka.data"),
                port: 80,
            }),
        ),
        (
            "an endpoint VIP of an unlinked cluster is unknown",
            target("10.96.2.13", 9092),
            0,
            Err(NoRoute::UnknownVip(ip("10.96.2.13"))),
        ),
    ];
    for (what, t, pick, want) in cases {
        let got = plan(&snap, &t, pick).map(|p| p.hops);
        assert_eq!(got, want, "{what}");
    }
    let p = plan(&snap, &target("10.96.2.10", 9092), 0).unwrap();
    assert_eq!(p.service, sname("kafka.data"));
    assert_eq!(p.port.to_string(), "broker=9092/tcp");
}

#[test]
fn headless_service_vip_still_reaches_any_endpoint() {
    let snap = headless_fixture();
    let hops = plan(&snap, &target("10.96.1.1", 9092), 0).unwrap().hops;
    assert_eq!(
        hops,
        vec![
            Hop::Local(addr("10.0.3.1:9092")),
            Hop::Local(addr("10.0.3.3:9092")),
            // north exports kafka.data as a plain service: a conflict, never a hop.
            remote("west", "broker", &["192.0.2.1:4443", "192.0.2.2:4443"]),
        ],
        "healthy locals, then peers, none naming an endpoint"
    );
    let text = remote_endpoint("west", "broker", &[], "kafka-0").to_string();
    assert_eq!(text, "cluster west endpoint kafka-0 port broker");
}
