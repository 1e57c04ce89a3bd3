use super::*;
use crate::resolve::ConflictReason;
use crate::testutil::*;

#[test]
fn fixture_shape() {
    let s = fixture();
    let names: Vec<String> = s.services.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(
        names,
        ["api.shop", "db.shop", "down.shop", "web.shop"],
        "sorted, rogue dropped"
    );
    let peers: Vec<&str> = s.links.iter().map(|l| l.peer.as_str()).collect();
    assert_eq!(peers, ["north", "south", "west"], "links sorted by peer");
    assert_eq!(s.version, 1);
    assert_eq!(s.cluster.as_str(), "east");
    assert_eq!(s.gateways, vec![addr("203.0.113.1:4443")]);

    let web = s.service(&sname("web.shop")).unwrap();
    assert!(web.exported);
    assert_eq!(web.vip, ip("10.96.0.1"));
    assert_eq!(web.local.len(), 3);
    assert_eq!(web.local.iter().filter(|e| e.healthy).count(), 2);
    let remotes: Vec<&str> = web.remote.iter().map(|r| r.cluster.as_str()).collect();
    assert_eq!(remotes, ["north", "south", "west"]);
    assert_eq!(
        web.ports[0].target_port, 8080,
        "local ports win over imported ones"
    );

    let api = s.service(&sname("api.shop")).unwrap();
    assert!(!api.exported && api.local.is_empty());
    assert_eq!(api.remote.len(), 1);

    assert_eq!(s.by_vip(ip("10.96.0.2")).unwrap().name, sname("db.shop"));
    assert!(s.by_vip(ip("10.96.0.5")).is_none());
    assert!(s.by_vip(ip("10.96.9.9")).is_none());
    assert!(s.service(&sname("rogue.shop")).is_none());
    assert!(s.link(&cid("west")).is_some());
    assert!(s.link(&cid("rogue")).is_none());
}

fn build(
    locals: &[LocalService],
    imports: &BTreeMap<ClusterId, Vec<ExportedService>>,
    links: &[LinkRecord],
    vips: &[(&str, &str)],
) -> MeshSnapshot {
    let vips: BTreeMap<ServiceName, IpAddr> = vips.iter().map(|(n, v)| (sname(n), ip(v))).collect();
    build_snapshot(
        7,
        &SnapshotInputs {
            cluster: &cid("east"),
            trust_domain: &"mesh.local".parse().unwrap(),
            local: locals,
            imports,
            links,
            gateways: &[],
            vips: &vips,
            endpoint_vips: &BTreeMap::new(),
        },
    )
}

#[test]
fn imports_from_unlinked_peers_and_self_are_dropped() {
    let mut imports = BTreeMap::new();
    imports.insert(
        cid("west"),
        vec![export("a.ns", &["http=80"], &[("http", 1)])],
    );
    imports.insert(
        cid("rogue"),
        vec![export("b.ns", &["http=80"], &[("http", 1)])],
    );
    imports.insert(
        cid("east"),
        vec![export("c.ns", &["http=80"], &[("http", 1)])],
    );
    let links = [link("west", &["192.0.2.1:1"]), link("east", &[])];
    let s = build(
        &[],
        &imports,
        &links,
        &[
            ("a.ns", "10.96.0.1"),
            ("b.ns", "10.96.0.2"),
            ("c.ns", "10.96.0.3"),
        ],
    );
    let names: Vec<String> = s.services.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names, ["a.ns"]);
}

#[test]
fn import_only_ports_follow_the_oldest_export() {
    let mut imports = BTreeMap::new();
    imports.insert(
        cid("north"),
        vec![export(
            "a.ns",
            &["http=80/http", "admin=9000"],
            &[("http", 1)],
        )],
    );
    imports.insert(
        cid("west"),
        vec![export(
            "a.ns",
            &["http=8080/http", "grpc=9090/grpc", "clash=9000"],
            &[("grpc", 2)],
        )],
    );
    let links = [link("west", &[]), link("north", &[])];
    let s = build(&[], &imports, &links, &[("a.ns", "10.96.0.1")]);
    let a = s.service(&sname("a.ns")).unwrap();
    let ports: Vec<String> = a.ports.iter().map(|p| p.to_string()).collect();
    // Equally old, so north (first by name) defines a.ns; west moves http to 8080, so its
    // export conflicts and is not merged at all: not its grpc port, not its endpoints.
    assert_eq!(ports, ["http=80/http", "admin=9000/tcp"]);
    let remotes: Vec<&str> = a.remote.iter().map(|r| r.cluster.as_str()).collect();
    assert_eq!(remotes, ["north"]);
    assert_eq!(
        a.conflicts,
        [Conflict {
            cluster: cid("west"),
            reason: ConflictReason::Port {
                port: "http".parse().unwrap()
            }
        }]
    );
}

#[test]
fn services_without_vip_are_skipped() {
    let locals = [
        local("a.ns", &["http=80"], &[("10.0.0.1", true)], true),
        local("b.ns", &["http=80"], &[("10.0.0.2", true)], true),
    ];
    let mut imports = BTreeMap::new();
    imports.insert(
        cid("west"),
        vec![export("c.ns", &["http=80"], &[("http", 1)])],
    );
    let s = build(
        &locals,
        &imports,
        &[link("west", &[])],
        &[("b.ns", "10.96.0.2")],
    );
    let names: Vec<String> = s.services.iter().map(|r| r.name.to_string()).collect();
    assert_eq!(names, ["b.ns"]);
}

#[test]
fn missing_health_counts_as_unhealthy() {
    let mut svc = local(
        "a.ns",
        &["http=80"],
        &[("10.0.0.1", true), ("10.0.0.2", true)],
        true,
    );
    svc.health = vec![true];
    let s = build(&[svc], &BTreeMap::new(), &[], &[("a.ns", "10.96.0.1")]);
    let a = s.service(&sname("a.ns")).unwrap();
    assert_eq!(
        a.local.iter().map(|e| e.healthy).collect::<Vec<_>>(),
        [true, false]
    );
}

#[test]
fn local_exports_count_healthy_endpoints_per_port() {
    let s = fixture();
    let exports = s.local_exports();
    let names: Vec<String> = exports.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(
        names,
        ["down.shop", "web.shop"],
        "only exported local services"
    );
    let web = &exports[1];
    assert_eq!(web.healthy["http"], 2);
    assert_eq!(web.healthy["grpc"], 2);
    assert_eq!(web.ports.len(), 2);
    assert_eq!(exports[0].healthy["http"], 0);
}

#[test]
fn serde_round_trip() {
    let s = fixture();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<MeshSnapshot>(&json).unwrap(), s);
}

fn endpoints_of(s: &MeshSnapshot, service: &str) -> Vec<(String, String, String, bool)> {
    s.service(&sname(service))
        .unwrap()
        .endpoints
        .iter()
        .map(|e| {
            (
                e.cluster.to_string(),
                e.hostname.to_string(),
                e.vip.to_string(),
                e.healthy,
            )
        })
        .collect()
}

fn row(c: &str, h: &str, vip: &str, healthy: bool) -> (String, String, String, bool) {
    (c.into(), h.into(), vip.into(), healthy)
}

#[test]
fn headless_endpoints_local_and_from_linked_peers_sorted() {
    let s = headless_fixture();
    let kafka = s.service(&sname("kafka.data")).unwrap();
    assert!(kafka.headless && kafka.exported);
    assert_eq!(kafka.vip, ip("10.96.1.1"), "the service VIP stays");
    assert_eq!(
        endpoints_of(&s, "kafka.data"),
        [
            row("east", "10-0-3-3", "10.96.2.3", true),
            row("east", "kafka-0", "10.96.2.1", true),
            row("east", "kafka-1", "10.96.2.2", false),
            row("south", "kafka-9", "10.96.2.12", true),
            row("west", "kafka-0", "10.96.2.10", true),
            row("west", "kafka-5", "10.96.2.11", false),
        ],
        "north exports it as a plain service, rogue is not linked"
    );
    let remotes: Vec<&str> = kafka.remote.iter().map(|r| r.cluster.as_str()).collect();
    assert_eq!(remotes, ["south", "west"], "north's plain export conflicts");
    assert_eq!(
        kafka.conflicts,
        [Conflict {
            cluster: cid("north"),
            reason: ConflictReason::Headless { exported: false }
        }]
    );
}

#[test]
fn headless_import_only_and_missing_vips() {
    let s = headless_fixture();
    let zk = s.service(&sname("zk.data")).unwrap();
    assert!(zk.headless, "an exporter said headless");
    assert!(zk.local.is_empty());
    assert_eq!(
        endpoints_of(&s, "zk.data"),
        [row("west", "zk-0", "10.96.2.20", true)],
        "zk-1 has no endpoint VIP yet and is left out"
    );
    let hidden = s.service(&sname("hidden.data")).unwrap();
    assert!(hidden.headless && !hidden.exported);
    assert_eq!(
        endpoints_of(&s, "hidden.data"),
        [row("east", "h-0", "10.96.2.40", true)],
        "local headless services get endpoint VIPs whether exported or not"
    );
}

#[test]
fn a_local_plain_service_stays_plain_whatever_peers_say() {
    let s = headless_fixture();
    let plain = s.service(&sname("plain.data")).unwrap();
    assert!(!plain.headless);
    assert!(plain.endpoints.is_empty());
    assert!(s.by_endpoint_vip(ip("10.96.2.30")).is_none());
}

#[test]
fn endpoint_keys_name_what_the_snapshot_would_show() {
    let locals = [
        local_headless(
            "kafka.data",
            &["broker=9092"],
            &[("kafka-0=10.0.3.1", true), ("10.0.3.3", false)],
            false,
        ),
        local("plain.data", &["http=80"], &[("10.0.4.1", true)], true),
    ];
    let mut imports = BTreeMap::new();
    imports.insert(
        cid("west"),
        vec![
            export_headless("kafka.data", "broker=9092", &[("kafka-0", true)]),
            export_headless("zk.data", "client=2181", &[("zk-0", false)]),
            export_headless("plain.data", "http=80", &[("w-0", true)]),
        ],
    );
    imports.insert(
        cid("rogue"),
        vec![export_headless("zk.data", "client=2181", &[("zk-9", true)])],
    );
    let keys = endpoint_keys(&cid("east"), &locals, &imports, &[link("west", &[])]);
    let want: BTreeSet<EndpointKey> = [
        ekey("kafka.data", "east", "10-0-3-3"),
        ekey("kafka.data", "east", "kafka-0"),
        ekey("kafka.data", "west", "kafka-0"),
        ekey("zk.data", "west", "zk-0"),
    ]
    .into_iter()
    .collect();
    assert_eq!(keys, want);
}

#[test]
fn by_endpoint_vip_finds_service_and_endpoint() {
    let s = headless_fixture();
    let (svc, ep) = s.by_endpoint_vip(ip("10.96.2.10")).unwrap();
    assert_eq!(svc.name, sname("kafka.data"));
    assert_eq!(
        (ep.cluster.as_str(), ep.hostname.as_str()),
        ("west", "kafka-0")
    );
    let (_, ep) = s.by_endpoint_vip(ip("10.96.2.3")).unwrap();
    assert_eq!(
        (ep.cluster.as_str(), ep.hostname.as_str()),
        ("east", "10-0-3-3")
    );
    assert!(
        s.by_endpoint_vip(ip("10.96.1.1")).is_none(),
        "a service VIP"
    );
    assert!(s.by_endpoint_vip(ip("10.96.2.13")).is_none(), "rogue's");
    assert!(s.by_vip(ip("10.96.2.1")).is_none(), "not a service VIP");
}

#[test]
fn local_exports_carry_headless_endpoints_by_hostname() {
    let s = headless_fixture();
    let exports = s.local_exports();
    let names: Vec<String> = exports.iter().map(|e| e.name.to_string()).collect();
    assert_eq!(names, ["kafka.data", "plain.data"]);
    let kafka = &exports[0];
    assert!(kafka.headless);
    let eps: Vec<(&str, bool)> = kafka
        .endpoints
        .iter()
        .map(|e| (e.hostname.as_str(), e.healthy))
        .collect();
    assert_eq!(
        eps,
        [("10-0-3-3", true), ("kafka-0", true), ("kafka-1", false)],
        "every local endpoint, sorted, no addresses"
    );
    assert_eq!(kafka.healthy["broker"], 2);
    assert!(!exports[1].headless && exports[1].endpoints.is_empty());
}

#[test]
fn headless_snapshot_serde_round_trip() {
    let s = headless_fixture();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(serde_json::from_str::<MeshSnapshot>(&json).unwrap(), s);
}
