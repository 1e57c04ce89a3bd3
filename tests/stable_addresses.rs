//! Addresses are promises: a VIP a client may hold never points at another service or
//! endpoint, across a full range, removals, and a peer restarting while it exports.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use tokio::io::AsyncReadExt;

/// A TCP server that answers every connection with its own name, then closes.
async fn named(name: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            use tokio::io::AsyncWriteExt;
            let _ = sock.write_all(name.as_bytes()).await;
        }
    });
    addr
}

async fn who(addr: SocketAddr) -> String {
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), sock.read_to_string(&mut out)).await;
    out
}

fn add(def: &ClusterDef, name: &str) {
    def.cli_ok(&[
        "service",
        "add",
        name,
        "--port",
        "tcp=7000",
        "--endpoint",
        "127.0.0.1:9",
    ]);
}

/// A full VIP range does not stop the control plane: the names without a VIP are reported,
/// and a removed service's VIP is not handed to the next service while it is quarantined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_range_is_reported_and_released_vips_are_quarantined() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.92.0.0/30"); // two usable VIPs: .1 and .2
    let mut cluster = def.up().await;
    add(&def, "a.x");
    add(&def, "b.x");
    let out = def.cli(&[
        "service",
        "add",
        "c.x",
        "--port",
        "tcp=7000",
        "--endpoint",
        "127.0.0.1:9",
    ]);
    assert!(out.status.success(), "stored even without a VIP");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("c.x is stored but has no VIP") && err.contains("is full"),
        "{err}"
    );
    let names: Vec<String> = def
        .services()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["a.x", "b.x"]);
    assert_eq!(def.status()["without_vip"], serde_json::json!(["c.x"]));
    let a_vip = def.service("a.x").unwrap()["vip"].clone();

    // A restart with the range still full: the control plane comes up all the same.
    cluster.kill();
    let _cluster = def.up().await;
    assert_eq!(def.status()["without_vip"], serde_json::json!(["c.x"]));

    // a.x goes away: its VIP is quarantined, so c.x still has none; a.x comes back to it.
    def.cli_ok(&["service", "remove", "a.x"]);
    assert!(
        def.service("c.x").is_none(),
        "a.x's VIP went to another name at once"
    );
    assert_eq!(def.status()["without_vip"], serde_json::json!(["c.x"]));
    add(&def, "a.x");
    assert_eq!(def.service("a.x").unwrap()["vip"], a_vip);
}

/// `(cluster, hostname) -> endpoint VIP` of `service` as `def` lists it.
fn endpoint_vips(def: &ClusterDef, service: &str) -> BTreeMap<String, SocketAddr> {
    let Some(svc) = def.service(service) else {
        return BTreeMap::new();
    };
    svc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["healthy"] == true)
        .map(|e| {
            let key = format!(
                "{}/{}",
                e["cluster"].as_str().unwrap(),
                e["hostname"].as_str().unwrap()
            );
            (
                key,
                SocketAddr::new(e["vip"].as_str().unwrap().parse().unwrap(), 7000),
            )
        })
        .collect()
}

async fn wait_endpoints(def: &ClusterDef, service: &str, n: usize) -> BTreeMap<String, SocketAddr> {
    wait_until(
        def,
        &format!("{n} healthy endpoints of {service}"),
        Duration::from_secs(30),
        |d| endpoint_vips(d, service).len() == n,
    )
    .await;
    endpoint_vips(def, service)
}

/// West exports a headless service whose brokers answer their own names; east caches their
/// endpoint VIPs. West then exports a second headless service (whose name sorts first, so a
/// lowest-free allocator would hand it the brokers' addresses) and is killed at once. East
/// withdraws west's imports when their lease runs out; when west is back and the link
/// reconnects, every cached VIP still reaches the broker it named, and the new service's
/// endpoints got addresses of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_vips_survive_a_peer_restarting_while_it_exports() {
    let ew = east_west("127.93.0.0/24", "127.94.0.0/24").await;
    let (east_def, west_def) = (ew.east_def.clone(), ew.west_def.clone());
    let mut west = ew.west;
    let (k0, k1) = (named("kafka-0").await, named("kafka-1").await);
    let (e0, e1) = (named("etcd-0").await, named("etcd-1").await);
    let (k0, k1) = (format!("kafka-0={k0}"), format!("kafka-1={k1}"));
    west_def.cli_ok(&[
        "service",
        "add",
        "kafka.data",
        "--port",
        "tcp=7000",
        "--endpoint",
        &k0,
        "--endpoint",
        &k1,
        "--headless",
        "--export",
    ]);
    link(&east_def, &west_def);
    let before = wait_endpoints(&east_def, "kafka.data", 2).await;
    for (key, addr) in &before {
        wait_listening(*addr).await;
        assert!(key.ends_with(&who(*addr).await), "{key} answers as itself");
    }

    let (e0, e1) = (format!("etcd-0={e0}"), format!("etcd-1={e1}"));
    west_def.cli_ok(&[
        "service",
        "add",
        "etcd.data",
        "--port",
        "tcp=7000",
        "--endpoint",
        &e0,
        "--endpoint",
        &e1,
        "--headless",
        "--export",
    ]);
    west.kill();
    wait_until(
        &east_def,
        "west's imports withdrawn",
        Duration::from_secs(30),
        |d| endpoint_vips(d, "kafka.data").is_empty(),
    )
    .await;
    let _west = west_def.up().await;
    let etcd = wait_endpoints(&east_def, "etcd.data", 2).await;
    let after = wait_endpoints(&east_def, "kafka.data", 2).await;
    assert_eq!(after, before, "kafka's endpoint VIPs did not move");
    for (key, addr) in &before {
        let got = who(*addr).await;
        assert!(
            key.ends_with(&got),
            "cached VIP of {key} now reaches {got:?}"
        );
    }
    for (key, addr) in &etcd {
        assert!(!before.values().any(|b| b == addr), "{key} got a kafka VIP");
        wait_listening(*addr).await;
        assert!(key.ends_with(&who(*addr).await), "{key} answers as itself");
    }
}

/// A peer gateway killed and restarted at once (it sorts first, so it dials straight away)
/// finds its dead process's session still open on the importer: the importer closes that
/// stale session as soon as the new one says hello, instead of letting both report the
/// peer's exports in turn until the old one times out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_replaces_its_stale_link_session() {
    let mesh = Mesh::new("example.org");
    let alpha_def = mesh.cluster("alpha", "127.111.0.0/24");
    let zulu_def = mesh.cluster("zulu", "127.112.0.0/24");
    let mut alpha = alpha_def.up().await;
    let _zulu = zulu_def.up().await;
    let echo = Echo::start().await;
    alpha_def.add_exported_echo(&echo);
    link(&zulu_def, &alpha_def);
    zulu_def.wait_imported("echo.shop", "alpha").await;
    let vip = zulu_def.service("echo.shop").unwrap()["vip"].clone();

    alpha.kill();
    let _alpha = alpha_def.up().await;
    wait_until(
        &zulu_def,
        "the stale session closed",
        Duration::from_secs(10),
        |z| {
            z.log()
                .contains("the peer restarted: closing its previous link session")
        },
    )
    .await;
    zulu_def.wait_imported("echo.shop", "alpha").await;
    assert_eq!(zulu_def.service("echo.shop").unwrap()["vip"], vip);
}
