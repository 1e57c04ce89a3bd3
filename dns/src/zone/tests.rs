use std::collections::BTreeMap;

use ferry_federation::{
    ClusterId, EndpointAddr, EndpointRecord, EndpointState, MeshSnapshot, RemoteState,
    ServiceRecord, TrustDomain,
};
use hickory_proto::rr::{LowerName, Name, RData, RecordType};

use super::*;

fn ep(addr: &str, healthy: bool) -> EndpointState {
    EndpointState {
        addr: addr.parse::<EndpointAddr>().unwrap(),
        healthy,
    }
}

fn remote(cluster: &str, port: &str, healthy: u32) -> RemoteState {
    RemoteState {
        cluster: ClusterId::new(cluster).unwrap(),
        healthy: BTreeMap::from([(port.parse().unwrap(), healthy)]),
    }
}

pub(crate) fn service(
    name: &str,
    vip: &str,
    ports: &[&str],
    exported: bool,
    local: Vec<EndpointState>,
    remote: Vec<RemoteState>,
) -> ServiceRecord {
    ServiceRecord {
        name: name.parse().unwrap(),
        vip: vip.parse().unwrap(),
        ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        exported,
        local,
        remote,
        headless: false,
        endpoints: vec![],
        exported_at_ms: 0,
        conflicts: vec![],
    }
}

fn endpoint(cluster: &str, hostname: &str, vip: &str, healthy: bool) -> EndpointRecord {
    EndpointRecord {
        cluster: ClusterId::new(cluster).unwrap(),
        hostname: hostname.parse().unwrap(),
        vip: vip.parse().unwrap(),
        healthy,
    }
}

fn headless(name: &str, exported: bool, endpoints: Vec<EndpointRecord>) -> ServiceRecord {
    let mut s = service(
        name,
        "127.10.0.100",
        &["kafka=9092/tcp"],
        exported,
        vec![],
        vec![],
    );
    s.headless = true;
    s.endpoints = endpoints;
    s
}

/// East's view: `api.shop` runs here (exported), `db.shop` only in west, `cache.shop` here
/// but unexported, `web.shop` exported with every endpoint down, `dual.shop` both here and
/// in west with two ports.
pub(crate) fn snapshot() -> MeshSnapshot {
    let mut services = vec![
        service(
            "api.shop",
            "127.10.0.1",
            &["http=8080/http"],
            true,
            vec![ep("10.0.0.1:9080", true)],
            vec![],
        ),
        service(
            "db.shop",
            "127.10.0.2",
            &["pg=5432/tcp"],
            false,
            vec![],
            vec![remote("west", "pg", 2)],
        ),
        service(
            "cache.shop",
            "127.10.0.3",
            &["redis=6379/tcp"],
            false,
            vec![ep("10.0.0.3:6379", true)],
            vec![],
        ),
        service(
            "web.shop",
            "127.10.0.4",
            &["http=80/http"],
            true,
            vec![ep("10.0.0.4:80", false)],
            vec![remote("west", "http", 0)],
        ),
        service(
            "dual.shop",
            "127.10.0.5",
            &["http=80/http", "metrics=9090/udp"],
            true,
            vec![ep("10.0.0.5:80", false)],
            vec![remote("west", "http", 1)],
        ),
        // Headless, spread over east and west; west's kafka-1 is not ready.
        headless(
            "kafka.shop",
            true,
            vec![
                endpoint("east", "kafka-0", "127.10.1.1", true),
                endpoint("west", "kafka-0", "127.10.1.2", true),
                endpoint("west", "kafka-1", "127.10.1.3", false),
            ],
        ),
        // Headless, only here, not exported.
        headless(
            "zk.shop",
            false,
            vec![endpoint("east", "zk-0", "127.10.1.9", true)],
        ),
    ];
    services.sort_by(|a, b| a.name.cmp(&b.name));
    MeshSnapshot {
        version: 7,
        cluster: ClusterId::new("east").unwrap(),
        trust_domain: TrustDomain::new("example.org").unwrap(),
        services,
        links: vec![],
        gateways: vec![],
        policies: vec![],
    }
}

pub(crate) fn config() -> ZoneConfig {
    ZoneConfig::new("clusterset.local", vec!["127.10.0.0/16".parse().unwrap()]).unwrap()
}

fn name(s: &str) -> LowerName {
    LowerName::new(&Name::from_ascii(s).unwrap())
}

/// A compact rendering of a lookup for the golden table.
fn render(lookup: Lookup<'_>) -> String {
    match lookup {
        Lookup::NotOurs => "NOTOURS".into(),
        Lookup::NotReady => "SERVFAIL".into(),
        Lookup::NxDomain { soa } => format!("NXDOMAIN soa={} ttl={}", soa.name, soa.ttl),
        Lookup::NoData { soa } => format!("NODATA soa={}", soa.name),
        Lookup::Answer {
            answers,
            additionals,
        } => {
            let mut out: Vec<String> = answers
                .iter()
                .map(|r| format!("{} {}", r.record_type(), r.data))
                .collect();
            for r in additionals {
                out.push(format!("+{} {}", r.record_type(), r.data));
            }
            out.join(" | ")
        }
    }
}

#[test]
fn golden_table() {
    let zone = Zone::build(&config(), &snapshot());
    let z = "svc.clusterset.local.";
    let table: Vec<(String, RecordType, String)> = vec![
        (
            format!("api.shop.{z}"),
            RecordType::A,
            "A 127.10.0.1".into(),
        ),
        // Case does not matter.
        (
            format!("API.Shop.{z}"),
            RecordType::A,
            "A 127.10.0.1".into(),
        ),
        (format!("db.shop.{z}"), RecordType::A, "A 127.10.0.2".into()),
        (
            format!("dual.shop.{z}"),
            RecordType::A,
            "A 127.10.0.5".into(),
        ),
        // Exists, no IPv6 VIP.
        (
            format!("api.shop.{z}"),
            RecordType::AAAA,
            "NODATA soa=clusterset.local.".into(),
        ),
        (
            format!("api.shop.{z}"),
            RecordType::MX,
            "NODATA soa=clusterset.local.".into(),
        ),
        // Unexported local service, and a service with no healthy endpoint anywhere.
        (
            format!("cache.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        (
            format!("web.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        (
            format!("nope.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        (
            format!("api.nons.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        // The namespace and `svc` exist as empty non-terminals.
        (
            format!("shop.{z}"),
            RecordType::A,
            "NODATA soa=clusterset.local.".into(),
        ),
        (
            z.to_string(),
            RecordType::A,
            "NODATA soa=clusterset.local.".into(),
        ),
        // SRV per named port, with the address in the additional section.
        (
            format!("_http._tcp.api.shop.{z}"),
            RecordType::SRV,
            format!("SRV 0 100 8080 api.shop.{z} | +A 127.10.0.1"),
        ),
        (
            format!("_metrics._udp.dual.shop.{z}"),
            RecordType::SRV,
            format!("SRV 0 100 9090 dual.shop.{z} | +A 127.10.0.5"),
        ),
        (
            format!("_metrics._tcp.dual.shop.{z}"),
            RecordType::SRV,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        // Bare-name SRV: the first port.
        (
            format!("dual.shop.{z}"),
            RecordType::SRV,
            format!("SRV 0 100 80 dual.shop.{z} | +A 127.10.0.5"),
        ),
        // `_tcp` and `_udp` below a service exist without records.
        (
            format!("_tcp.dual.shop.{z}"),
            RecordType::SRV,
            "NODATA soa=clusterset.local.".into(),
        ),
        (
            format!("_udp.dual.shop.{z}"),
            RecordType::A,
            "NODATA soa=clusterset.local.".into(),
        ),
        // The reserved `<cluster>.<svc>.<ns>` name does not exist.
        (
            format!("east.api.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        (
            "dns-version.clusterset.local.".into(),
            RecordType::TXT,
            "TXT 1.0.0".into(),
        ),
        (
            "clusterset.local.".into(),
            RecordType::SOA,
            "SOA ns.dns.clusterset.local. hostmaster.clusterset.local. 7 60 10 3600 5".into(),
        ),
        (
            "clusterset.local.".into(),
            RecordType::NS,
            "NS ns.dns.clusterset.local.".into(),
        ),
        // ANY: one RRset, not everything (RFC 8482).
        (
            format!("dual.shop.{z}"),
            RecordType::ANY,
            "A 127.10.0.5".into(),
        ),
        // PTR for VIPs; other addresses in the range do not exist; others are not ours.
        (
            "1.0.10.127.in-addr.arpa.".into(),
            RecordType::PTR,
            format!("PTR api.shop.{z}"),
        ),
        (
            "9.9.10.127.in-addr.arpa.".into(),
            RecordType::PTR,
            "NXDOMAIN soa=10.127.in-addr.arpa. ttl=5".into(),
        ),
        (
            "3.0.10.127.in-addr.arpa.".into(),
            RecordType::PTR,
            "NXDOMAIN soa=10.127.in-addr.arpa. ttl=5".into(),
        ),
        (
            "1.0.0.127.in-addr.arpa.".into(),
            RecordType::PTR,
            "NOTOURS".into(),
        ),
        // Headless: the service name answers every ready endpoint, each endpoint has its own
        // name, and `<cluster>.<svc>` does not exist.
        (
            format!("kafka.shop.{z}"),
            RecordType::A,
            "A 127.10.1.1 | A 127.10.1.2".into(),
        ),
        (
            format!("kafka-0.east.kafka.shop.{z}"),
            RecordType::A,
            "A 127.10.1.1".into(),
        ),
        (
            format!("kafka-0.west.kafka.shop.{z}"),
            RecordType::A,
            "A 127.10.1.2".into(),
        ),
        (
            format!("kafka-1.west.kafka.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        (
            format!("west.kafka.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        (
            format!("east.kafka.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        (
            format!("_kafka._tcp.kafka.shop.{z}"),
            RecordType::SRV,
            format!("SRV 0 50 9092 kafka-0.east.kafka.shop.{z} | SRV 0 50 9092 kafka-0.west.kafka.shop.{z} | +A 127.10.1.1 | +A 127.10.1.2"),
        ),
        (
            format!("kafka.shop.{z}"),
            RecordType::SRV,
            format!("SRV 0 50 9092 kafka-0.east.kafka.shop.{z} | SRV 0 50 9092 kafka-0.west.kafka.shop.{z} | +A 127.10.1.1 | +A 127.10.1.2"),
        ),
        (
            "2.1.10.127.in-addr.arpa.".into(),
            RecordType::PTR,
            format!("PTR kafka-0.west.kafka.shop.{z}"),
        ),
        // The headless service's own VIP is not in DNS.
        (
            "100.0.10.127.in-addr.arpa.".into(),
            RecordType::PTR,
            "NXDOMAIN soa=10.127.in-addr.arpa. ttl=5".into(),
        ),
        (
            format!("zk.shop.{z}"),
            RecordType::A,
            "NXDOMAIN soa=clusterset.local. ttl=5".into(),
        ),
        ("example.com.".into(), RecordType::A, "NOTOURS".into()),
        ("local.".into(), RecordType::A, "NOTOURS".into()),
        (
            "api.shop.svc.cluster.local.".into(),
            RecordType::A,
            "NOTOURS".into(),
        ),
    ];
    let mut failures = Vec::new();
    for (qname, qtype, want) in &table {
        let got = render(zone.lookup(&name(qname), *qtype));
        if &got != want {
            failures.push(format!("{qname} {qtype}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn before_the_first_snapshot_mesh_names_fail_softly() {
    let zone = Zone::pending(&config());
    assert_eq!(
        render(zone.lookup(&name("api.shop.svc.clusterset.local."), RecordType::A)),
        "SERVFAIL"
    );
    assert_eq!(
        render(zone.lookup(&name("1.0.10.127.in-addr.arpa."), RecordType::PTR)),
        "SERVFAIL"
    );
    assert_eq!(
        render(zone.lookup(&name("example.com."), RecordType::A)),
        "NOTOURS"
    );
}

#[test]
fn ttls_follow_the_config() {
    let mut cfg = config();
    cfg.ttl = 30;
    cfg.negative_ttl = 2;
    let zone = Zone::build(&cfg, &snapshot());
    let Lookup::Answer { answers, .. } =
        zone.lookup(&name("api.shop.svc.clusterset.local."), RecordType::A)
    else {
        panic!("no answer");
    };
    assert_eq!(answers[0].ttl, 30);
    let Lookup::NxDomain { soa } =
        zone.lookup(&name("x.shop.svc.clusterset.local."), RecordType::A)
    else {
        panic!("no NXDOMAIN");
    };
    assert_eq!(soa.ttl, 2);
    let RData::SOA(rdata) = &soa.data else {
        panic!("not an SOA")
    };
    assert_eq!(rdata.minimum, 2);
}

#[test]
fn a_custom_zone_moves_every_name() {
    let cfg = ZoneConfig::new("mesh.example.", vec![]).unwrap();
    let zone = Zone::build(&cfg, &snapshot());
    assert_eq!(
        render(zone.lookup(&name("api.shop.svc.mesh.example."), RecordType::A)),
        "A 127.10.0.1"
    );
    assert_eq!(
        render(zone.lookup(&name("api.shop.svc.clusterset.local."), RecordType::A)),
        "NOTOURS"
    );
    assert_eq!(
        render(zone.lookup(&name("dns-version.mesh.example."), RecordType::TXT)),
        "TXT 1.0.0"
    );
}

#[test]
fn bad_zones_are_rejected_with_a_hint() {
    for bad in [".", "a..b", &"x".repeat(70), &"abc.".repeat(40)] {
        let err = ZoneConfig::new(bad, vec![]).unwrap_err().to_string();
        assert!(err.contains("clusterset.local"), "{err}");
    }
}

#[test]
fn reverse_names_round_trip() {
    for ip in ["127.10.0.1", "10.1.2.3", "2001:db8::1", "fd00::abcd:1"] {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        assert_eq!(parse_reverse(&reverse_name(ip)), Some(ip));
    }
    for bad in [
        "1.2.3.in-addr.arpa.",
        "01.2.3.4.in-addr.arpa.",
        "256.2.3.4.in-addr.arpa.",
        "a.2.3.4.in-addr.arpa.",
        "1.2.3.4.in-addr.arpa.com.",
    ] {
        assert_eq!(
            parse_reverse(&Name::from_ascii(bad).unwrap()),
            None,
            "{bad}"
        );
    }
}
