use super::*;
use crate::model::ClusterId;
use crate::testutil::*;
use std::net::SocketAddr;

fn gw(c: &str) -> Identity {
    Identity::Gateway { cluster: cid(c) }
}

fn hdr(service: &str, port: &str, cluster: Option<&str>, hops: u8) -> TunnelHeader {
    TunnelHeader {
        service: sname(service),
        port: port.parse().unwrap(),
        cluster: cluster.map(cid),
        hops,
        traceparent: None,
        endpoint: None,
        carries: Default::default(),
    }
}

fn ep_hdr(service: &str, port: &str, endpoint: &str) -> TunnelHeader {
    TunnelHeader {
        endpoint: Some(endpoint.parse().unwrap()),
        ..hdr(service, port, None, 1)
    }
}

#[test]
fn admission_table() {
    let snap = fixture();
    let node = Identity::Node {
        cluster: cid("north"),
        node: "n1".parse().unwrap(),
    };
    let ok_web = Ok(vec![addr("10.0.0.1:8080"), addr("10.0.0.3:8080")]);
    type Case = (
        &'static str,
        Identity,
        TunnelHeader,
        Result<Vec<SocketAddr>, Refusal>,
    );
    let cases: Vec<Case> = vec![
        (
            "gateway of linked peer",
            gw("west"),
            hdr("web.shop", "http", None, 1),
            ok_web.clone(),
        ),
        (
            "node of linked peer",
            node,
            hdr("web.shop", "http", None, 0),
            ok_web.clone(),
        ),
        (
            "linked peer without gateways",
            gw("south"),
            hdr("web.shop", "http", None, 0),
            ok_web.clone(),
        ),
        (
            "header names us",
            gw("west"),
            hdr("web.shop", "http", Some("east"), 1),
            ok_web,
        ),
        (
            "second port",
            gw("west"),
            hdr("web.shop", "grpc", None, 1),
            Ok(vec![addr("10.0.0.1:9090"), addr("10.0.0.3:9090")]),
        ),
        (
            "unlinked caller",
            gw("rogue"),
            hdr("web.shop", "http", None, 1),
            Err(Refusal::UnknownPeer),
        ),
        (
            "local cluster caller",
            gw("east"),
            hdr("web.shop", "http", None, 1),
            Err(Refusal::UnknownPeer),
        ),
        (
            "cluster CA as caller",
            Identity::ClusterCa {
                cluster: cid("west"),
            },
            hdr("web.shop", "http", None, 1),
            Err(Refusal::UnknownPeer),
        ),
        (
            "wrong cluster",
            gw("west"),
            hdr("web.shop", "http", Some("north"), 1),
            Err(Refusal::WrongCluster),
        ),
        (
            "max hops ok",
            gw("west"),
            hdr("web.shop", "http", None, MAX_HOPS),
            Ok(vec![addr("10.0.0.1:8080"), addr("10.0.0.3:8080")]),
        ),
        (
            "too many hops",
            gw("west"),
            hdr("web.shop", "http", None, MAX_HOPS + 1),
            Err(Refusal::TooManyHops),
        ),
        (
            "not exported",
            gw("west"),
            hdr("db.shop", "db", None, 1),
            Err(Refusal::NotExported),
        ),
        (
            "unknown service",
            gw("west"),
            hdr("nope.shop", "db", None, 1),
            Err(Refusal::NotExported),
        ),
        (
            "import-only service",
            gw("west"),
            hdr("api.shop", "http", None, 1),
            Err(Refusal::NotExported),
        ),
        (
            "unknown port",
            gw("west"),
            hdr("web.shop", "admin", None, 1),
            Err(Refusal::UnknownPort),
        ),
        (
            "no healthy endpoints",
            gw("west"),
            hdr("down.shop", "http", None, 1),
            Err(Refusal::NoEndpoints),
        ),
    ];
    for (what, caller, header, want) in cases {
        assert_eq!(admit(&snap, &caller, &header, 0), want, "{what}");
    }
}

#[test]
fn unknown_and_unexported_look_the_same() {
    let snap = fixture();
    let a = admit(&snap, &gw("west"), &hdr("db.shop", "db", None, 0), 3);
    let b = admit(&snap, &gw("west"), &hdr("zzz.shop", "db", None, 0), 3);
    // Even a wrong port on an unexported service must not reveal it exists.
    let c = admit(&snap, &gw("west"), &hdr("db.shop", "nope", None, 0), 3);
    assert_eq!(a, b);
    assert_eq!(a, c);
    assert_eq!(a, Err(Refusal::NotExported));
}

#[test]
fn pick_rotates_endpoints() {
    let snap = fixture();
    let h = hdr("web.shop", "http", None, 0);
    let first: Vec<_> = (0..4)
        .map(|pick| admit(&snap, &gw("west"), &h, pick).unwrap()[0])
        .collect();
    assert_eq!(
        first,
        [
            addr("10.0.0.1:8080"),
            addr("10.0.0.3:8080"),
            addr("10.0.0.1:8080"),
            addr("10.0.0.3:8080")
        ]
    );
    let all = admit(&snap, &gw("west"), &h, u64::MAX).unwrap();
    assert_eq!(all.len(), 2, "rotation keeps every endpoint");
}

#[test]
fn refusal_codes_and_names() {
    let all = [
        (Refusal::UnknownPeer, "unknown_peer"),
        (Refusal::NotExported, "not_exported"),
        (Refusal::UnknownPort, "unknown_port"),
        (Refusal::NoEndpoints, "no_endpoints"),
        (Refusal::TooManyHops, "too_many_hops"),
        (Refusal::BadHeader, "bad_header"),
        (Refusal::WrongCluster, "wrong_cluster"),
        (Refusal::UnknownEndpoint, "unknown_endpoint"),
        (Refusal::EndpointUnhealthy, "endpoint_unhealthy"),
    ];
    let mut codes = std::collections::BTreeSet::new();
    for (r, name) in all {
        assert_eq!(r.as_str(), name);
        assert!(codes.insert(r.code()), "codes are unique");
        assert_ne!(r.code(), 0);
        assert_eq!(Refusal::from_code(r.code()), Some(r));
        assert!(!r.to_string().is_empty());
    }
    assert_eq!(Refusal::from_code(0), None);
    assert_eq!(Refusal::from_code(10), None);
    let _: Option<ClusterId> = None;
}

#[test]
fn endpoint_admission_table() {
    let snap = headless_fixture();
    type Case = (
        &'static str,
        Identity,
        TunnelHeader,
        Result<Vec<SocketAddr>, Refusal>,
    );
    let cases: Vec<Case> = vec![
        (
            "named healthy endpoint: exactly that one",
            gw("west"),
            ep_hdr("kafka.data", "broker", "kafka-0"),
            Ok(vec![addr("10.0.3.1:9092")]),
        ),
        (
            "default hostname",
            gw("north"),
            ep_hdr("kafka.data", "broker", "10-0-3-3"),
            Ok(vec![addr("10.0.3.3:9092")]),
        ),
        (
            "unhealthy endpoint",
            gw("west"),
            ep_hdr("kafka.data", "broker", "kafka-1"),
            Err(Refusal::EndpointUnhealthy),
        ),
        (
            "unknown hostname",
            gw("west"),
            ep_hdr("kafka.data", "broker", "kafka-7"),
            Err(Refusal::UnknownEndpoint),
        ),
        (
            "a remote cluster's endpoint is not ours to serve",
            gw("west"),
            ep_hdr("kafka.data", "broker", "kafka-5"),
            Err(Refusal::UnknownEndpoint),
        ),
        (
            "service is not headless",
            gw("west"),
            ep_hdr("plain.data", "http", "p-0"),
            Err(Refusal::UnknownEndpoint),
        ),
        (
            "headless but not exported",
            gw("west"),
            ep_hdr("hidden.data", "http", "h-0"),
            Err(Refusal::NotExported),
        ),
        (
            "unknown service",
            gw("west"),
            ep_hdr("nope.data", "http", "h-0"),
            Err(Refusal::NotExported),
        ),
        (
            "import-only headless service",
            gw("west"),
            ep_hdr("zk.data", "client", "zk-0"),
            Err(Refusal::NotExported),
        ),
        (
            "unknown port",
            gw("west"),
            ep_hdr("kafka.data", "admin", "kafka-0"),
            Err(Refusal::UnknownPort),
        ),
        (
            "unlinked caller",
            gw("rogue"),
            ep_hdr("kafka.data", "broker", "kafka-0"),
            Err(Refusal::UnknownPeer),
        ),
        (
            "no endpoint named: any healthy one, rotated, as before",
            gw("west"),
            hdr("kafka.data", "broker", None, 0),
            Ok(vec![addr("10.0.3.3:9092"), addr("10.0.3.1:9092")]),
        ),
    ];
    for (what, caller, header, want) in cases {
        assert_eq!(admit(&snap, &caller, &header, 1), want, "{what}");
    }
}
