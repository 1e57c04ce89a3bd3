//! Shared fixtures for unit tests: one cluster (`east`) with a few local and imported services.
//! Test-only; never compiled into the library.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::model::{
    ClusterId, ExportedEndpoint, ExportedService, LocalService, ServiceName, ServiceSpec,
};
use crate::snapshot::{build_snapshot, EndpointKey, LinkRecord, MeshSnapshot, SnapshotInputs};

pub(crate) fn cid(s: &str) -> ClusterId {
    s.parse().unwrap()
}

pub(crate) fn sname(s: &str) -> ServiceName {
    s.parse().unwrap()
}

pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

pub(crate) fn local(
    name: &str,
    ports: &[&str],
    eps: &[(&str, bool)],
    exported: bool,
) -> LocalService {
    local_with(name, ports, eps, exported, false)
}

pub(crate) fn local_headless(
    name: &str,
    ports: &[&str],
    eps: &[(&str, bool)],
    exported: bool,
) -> LocalService {
    local_with(name, ports, eps, exported, true)
}

fn local_with(
    name: &str,
    ports: &[&str],
    eps: &[(&str, bool)],
    exported: bool,
    headless: bool,
) -> LocalService {
    LocalService {
        spec: ServiceSpec::with_headless(
            sname(name),
            ports.iter().map(|p| p.parse().unwrap()).collect(),
            eps.iter().map(|(e, _)| e.parse().unwrap()).collect(),
            headless,
        )
        .unwrap(),
        exported,
        exported_at_ms: if exported { 1_000 } else { 0 },
        health: eps.iter().map(|(_, h)| *h).collect(),
    }
}

pub(crate) fn export(name: &str, ports: &[&str], healthy: &[(&str, u32)]) -> ExportedService {
    ExportedService {
        name: sname(name),
        ports: ports.iter().map(|p| p.parse().unwrap()).collect(),
        healthy: healthy
            .iter()
            .map(|(p, n)| (p.parse().unwrap(), *n))
            .collect(),
        headless: false,
        endpoints: Vec::new(),
        exported_at_ms: 0,
    }
}

/// An export of a headless service with `eps` as (hostname, healthy), one port.
pub(crate) fn export_headless(name: &str, port: &str, eps: &[(&str, bool)]) -> ExportedService {
    let healthy = eps.iter().filter(|(_, h)| *h).count() as u32;
    let port_name = port.split('=').next().unwrap();
    ExportedService {
        headless: true,
        endpoints: eps
            .iter()
            .map(|(h, ok)| ExportedEndpoint {
                hostname: h.parse().unwrap(),
                healthy: *ok,
            })
            .collect(),
        ..export(name, &[port], &[(port_name, healthy)])
    }
}

pub(crate) fn ekey(service: &str, cluster: &str, hostname: &str) -> EndpointKey {
    (sname(service), cid(cluster), hostname.parse().unwrap())
}

pub(crate) fn link(peer: &str, gateways: &[&str]) -> LinkRecord {
    LinkRecord {
        peer: cid(peer),
        gateways: gateways.iter().map(|g| addr(g)).collect(),
        connected: true,
        created_at_unix: 0,
        limited: Vec::new(),
    }
}

/// The fixture:
/// - `web.shop` (10.96.0.1): local, exported, ports http=80:8080, grpc=9090; endpoints
///   10.0.0.1 healthy, 10.0.0.2 unhealthy, 10.0.0.3 healthy; also exported by west (http 2,
///   grpc 0), north (http 1) and south (http 5, but south has no gateways).
/// - `db.shop` (10.96.0.2): local, not exported.
/// - `api.shop` (10.96.0.3): imported from west only.
/// - `down.shop` (10.96.0.4): local, exported, no healthy endpoint.
/// - `rogue.shop` (10.96.0.5): imported from an unlinked cluster only, so absent.
pub(crate) fn fixture() -> MeshSnapshot {
    let locals = vec![
        local(
            "web.shop",
            &["http=80:8080/http", "grpc=9090/grpc"],
            &[("10.0.0.1", true), ("10.0.0.2", false), ("10.0.0.3", true)],
            true,
        ),
        local("db.shop", &["db=5432"], &[("10.0.1.1:5432", true)], false),
        local("down.shop", &["http=80"], &[("10.0.2.1", false)], true),
    ];
    let mut imports = BTreeMap::new();
    imports.insert(
        cid("west"),
        vec![
            export(
                "web.shop",
                &["http=80/http", "grpc=9090/grpc"],
                &[("http", 2), ("grpc", 0)],
            ),
            export("api.shop", &["http=80/http"], &[("http", 1)]),
        ],
    );
    imports.insert(
        cid("north"),
        vec![export("web.shop", &["http=80/http"], &[("http", 1)])],
    );
    imports.insert(
        cid("south"),
        vec![export("web.shop", &["http=80/http"], &[("http", 5)])],
    );
    imports.insert(
        cid("rogue"),
        vec![export("rogue.shop", &["http=80/http"], &[("http", 1)])],
    );
    let links = vec![
        link("west", &["192.0.2.1:4443", "192.0.2.2:4443"]),
        link("north", &["198.51.100.1:4443"]),
        link("south", &[]),
    ];
    let vips: BTreeMap<ServiceName, IpAddr> = [
        ("web.shop", "10.96.0.1"),
        ("db.shop", "10.96.0.2"),
        ("api.shop", "10.96.0.3"),
        ("down.shop", "10.96.0.4"),
        ("rogue.shop", "10.96.0.5"),
    ]
    .into_iter()
    .map(|(n, v)| (sname(n), ip(v)))
    .collect();
    build_east(1, &locals, &imports, &links, &vips, &BTreeMap::new())
}

/// Cluster `east` with headless services (VIPs 10.96.1.x, endpoint VIPs 10.96.2.x):
/// - `kafka.data` (10.96.1.1): local, headless, exported, port broker=9092; endpoints
///   kafka-0=10.0.3.1 healthy (.1), kafka-1=10.0.3.2 unhealthy (.2), 10.0.3.3 (default
///   hostname 10-0-3-3) healthy (.3). Exported headless by west (kafka-0 healthy (.10),
///   kafka-5 unhealthy (.11)) and south (kafka-9 healthy (.12), south has no gateways); by
///   north as a plain service (no endpoints); by unlinked rogue (dropped, VIP .13 unused).
/// - `zk.data` (10.96.1.2): imported headless from west; zk-0 healthy (.20), zk-1 healthy
///   but without an endpoint VIP.
/// - `plain.data` (10.96.1.3): local, not headless, exported, endpoint p-0=10.0.4.1 healthy;
///   west claims it is headless with endpoint w-0 (.30): ignored.
/// - `hidden.data` (10.96.1.4): local, headless, not exported, h-0=10.0.5.1 healthy (.40).
pub(crate) fn headless_fixture() -> MeshSnapshot {
    let locals = vec![
        local_headless(
            "kafka.data",
            &["broker=9092"],
            &[
                ("kafka-0=10.0.3.1", true),
                ("kafka-1=10.0.3.2", false),
                ("10.0.3.3", true),
            ],
            true,
        ),
        local("plain.data", &["http=80"], &[("p-0=10.0.4.1", true)], true),
        local_headless(
            "hidden.data",
            &["http=80"],
            &[("h-0=10.0.5.1", true)],
            false,
        ),
    ];
    let mut imports = BTreeMap::new();
    imports.insert(
        cid("west"),
        vec![
            export_headless(
                "kafka.data",
                "broker=9092",
                &[("kafka-0", true), ("kafka-5", false)],
            ),
            export_headless("zk.data", "client=2181", &[("zk-0", true), ("zk-1", true)]),
            export_headless("plain.data", "http=80", &[("w-0", true)]),
        ],
    );
    imports.insert(
        cid("south"),
        vec![export_headless(
            "kafka.data",
            "broker=9092",
            &[("kafka-9", true)],
        )],
    );
    imports.insert(
        cid("north"),
        vec![export("kafka.data", &["broker=9092"], &[("broker", 1)])],
    );
    imports.insert(
        cid("rogue"),
        vec![export_headless(
            "kafka.data",
            "broker=9092",
            &[("kafka-0", true)],
        )],
    );
    let links = vec![
        link("west", &["192.0.2.1:4443", "192.0.2.2:4443"]),
        link("north", &["198.51.100.1:4443"]),
        link("south", &[]),
    ];
    let vips: BTreeMap<ServiceName, IpAddr> = [
        ("kafka.data", "10.96.1.1"),
        ("zk.data", "10.96.1.2"),
        ("plain.data", "10.96.1.3"),
        ("hidden.data", "10.96.1.4"),
    ]
    .into_iter()
    .map(|(n, v)| (sname(n), ip(v)))
    .collect();
    let endpoint_vips: BTreeMap<EndpointKey, IpAddr> = [
        (ekey("kafka.data", "east", "kafka-0"), "10.96.2.1"),
        (ekey("kafka.data", "east", "kafka-1"), "10.96.2.2"),
        (ekey("kafka.data", "east", "10-0-3-3"), "10.96.2.3"),
        (ekey("kafka.data", "west", "kafka-0"), "10.96.2.10"),
        (ekey("kafka.data", "west", "kafka-5"), "10.96.2.11"),
        (ekey("kafka.data", "south", "kafka-9"), "10.96.2.12"),
        (ekey("kafka.data", "rogue", "kafka-0"), "10.96.2.13"),
        (ekey("zk.data", "west", "zk-0"), "10.96.2.20"),
        (ekey("plain.data", "west", "w-0"), "10.96.2.30"),
        (ekey("hidden.data", "east", "h-0"), "10.96.2.40"),
    ]
    .into_iter()
    .map(|(k, v)| (k, ip(v)))
    .collect();
    build_east(2, &locals, &imports, &links, &vips, &endpoint_vips)
}

/// Builds cluster `east`'s snapshot, with gateway 203.0.113.1:4443.
fn build_east(
    version: u64,
    local: &[LocalService],
    imports: &BTreeMap<ClusterId, Vec<ExportedService>>,
    links: &[LinkRecord],
    vips: &BTreeMap<ServiceName, IpAddr>,
    endpoint_vips: &BTreeMap<EndpointKey, IpAddr>,
) -> MeshSnapshot {
    build_snapshot(
        version,
        &SnapshotInputs {
            cluster: &cid("east"),
            trust_domain: &"mesh.local".parse().unwrap(),
            local,
            imports,
            links,
            gateways: &[addr("203.0.113.1:4443")],
            vips,
            endpoint_vips,
        },
    )
}

/// A base instant for virtual time; tests advance it by adding durations.
#[allow(clippy::disallowed_methods)] // only the base of virtual time, never read again
pub(crate) fn t0() -> std::time::Instant {
    std::time::Instant::now()
}
