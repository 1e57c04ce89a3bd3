//! Shared fixtures for unit tests: one cluster (`east`) with a few local and imported services.
//! Test-only; never compiled into the library.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use crate::model::{ClusterId, ServiceName, ServiceSpec};
use crate::snapshot::{build_snapshot, LinkRecord, LocalService, MeshSnapshot, SnapshotInputs};
use crate::wire::ExportedService;

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
    LocalService {
        spec: ServiceSpec::new(
            sname(name),
            ports.iter().map(|p| p.parse().unwrap()).collect(),
            eps.iter().map(|(e, _)| e.parse().unwrap()).collect(),
        )
        .unwrap(),
        exported,
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
    }
}

pub(crate) fn link(peer: &str, gateways: &[&str]) -> LinkRecord {
    LinkRecord {
        peer: cid(peer),
        gateways: gateways.iter().map(|g| addr(g)).collect(),
        connected: true,
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
    build_snapshot(
        1,
        &SnapshotInputs {
            cluster: &cid("east"),
            trust_domain: &"mesh.local".parse().unwrap(),
            local: &locals,
            imports: &imports,
            links: &links,
            gateways: &[addr("203.0.113.1:4443")],
            vips: &vips,
        },
    )
}

/// A base instant for virtual time; tests advance it by adding durations.
#[allow(clippy::disallowed_methods)] // only the base of virtual time, never read again
pub(crate) fn t0() -> std::time::Instant {
    std::time::Instant::now()
}
