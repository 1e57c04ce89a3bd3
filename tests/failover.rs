//! Failover figures, measured and printed: every local endpoint of a service killed, new
//! HTTP requests and new TCP connections succeed through the remote cluster within 1 s
//! (none fails after the first second); the endpoints back, traffic returns to them within
//! 2 s. With the default health interval (1 s). Run with `--nocapture` to see the figures.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::http::HttpBackend;
use common::*;

/// One new connection carrying one GET: who answered, or `None` on any failure.
async fn get_once(vip: SocketAddr) -> Option<String> {
    common::http::served_by(vip).await
}

/// Adds `web.shop` (an HTTP port) and `raw.shop` (a TCP port) backed by `endpoints`.
fn add_web_and_raw(def: &ClusterDef, endpoints: &[&str], export: bool) {
    for (name, port) in [("web.shop", "http=8080/http"), ("raw.shop", "tcp=9090/tcp")] {
        let mut args = vec!["service", "add", name, "--port", port];
        for e in endpoints {
            args.extend(["--endpoint", e]);
        }
        if export {
            args.push("--export");
        }
        def.cli_ok(&args);
    }
}

/// Calls `vip` back to back until `end`: (when, who answered).
async fn probe(vip: SocketAddr, end: Instant) -> Vec<(Instant, Option<String>)> {
    let mut seen = Vec::new();
    while Instant::now() < end {
        let at = Instant::now();
        seen.push((at, get_once(vip).await));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    seen
}

/// The figures of one probe: (last failure after `kill`, first remote answer after
/// `kill`, first local answer after `back`), in ms.
fn figures(
    what: &str,
    seen: &[(Instant, Option<String>)],
    kill: Instant,
    back: Instant,
) -> (u128, u128, u128) {
    let ms = |t: Instant, from: Instant| t.saturating_duration_since(from).as_millis();
    let failures: Vec<u128> = seen
        .iter()
        .filter(|(t, who)| *t >= kill && who.is_none())
        .map(|(t, _)| ms(*t, kill))
        .collect();
    let last_failure = failures.iter().copied().max().unwrap_or(0);
    let first_remote = seen
        .iter()
        .find(|(t, who)| *t >= kill && who.as_deref() == Some("west"))
        .map(|(t, _)| ms(*t, kill))
        .expect("the remote cluster answered after the kill");
    let first_local = seen
        .iter()
        .find(|(t, who)| *t >= back && who.as_deref() == Some("east"))
        .map(|(t, _)| ms(*t, back))
        .expect("the local endpoint answered after it came back");
    println!(
        "{what}: {} failed calls after the kill (the last {last_failure} ms after it), first \
         answer from west {first_remote} ms after it; local again {first_local} ms after the \
         endpoint came back ({} calls)",
        failures.len(),
        seen.len()
    );
    // After the first second no call fails, and they go to west until the local one is back.
    for (t, who) in seen {
        if *t >= kill + Duration::from_secs(1) && *t < back {
            assert_eq!(
                who.as_deref(),
                Some("west"),
                "{what}: {} ms after the kill",
                ms(*t, kill)
            );
        }
        if *t >= back + Duration::from_secs(2) {
            assert_eq!(
                who.as_deref(),
                Some("east"),
                "{what}: {} ms after the return",
                ms(*t, back)
            );
        }
    }
    (last_failure, first_remote, first_local)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_endpoints_killed_and_back_http_and_tcp() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.94.0.0/16");
    let west_def = mesh.cluster("west", "127.95.0.0/16");
    // The default health interval, not the harness's faster one.
    let config = std::fs::read_to_string(&east_def.config).unwrap();
    assert!(config.contains("health_interval = \"300ms\""));
    std::fs::write(
        &east_def.config,
        config.replace("health_interval = \"300ms\"", "health_interval = \"1s\""),
    )
    .unwrap();
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let (local_a, local_b) = (
        HttpBackend::start("east", false).await,
        HttpBackend::start("east", false).await,
    );
    let remote = HttpBackend::start("west", false).await;
    let (a, b, w) = (
        local_a.addr.to_string(),
        local_b.addr.to_string(),
        remote.addr.to_string(),
    );
    add_web_and_raw(&east_def, &[&a, &b], false);
    add_web_and_raw(&west_def, &[&w], true);
    link(&east_def, &west_def);
    for name in ["web.shop", "raw.shop"] {
        east_def.wait_imported(name, "west").await;
        east_def.wait_local_healthy(name).await;
    }
    let (http_vip, tcp_vip) = (
        east_def.vip("web.shop", 8080),
        east_def.vip("raw.shop", 9090),
    );
    assert_eq!(get_once(http_vip).await.as_deref(), Some("east"));

    let start = Instant::now();
    let (kill, back, end) = (
        start + Duration::from_secs(1),
        start + Duration::from_secs(4),
        start + Duration::from_millis(7000),
    );
    let probes =
        tokio::spawn(async move { tokio::join!(probe(http_vip, end), probe(tcp_vip, end)) });
    tokio::time::sleep_until(kill.into()).await;
    local_a.stop();
    local_b.stop();
    tokio::time::sleep_until(back.into()).await;
    let _again = HttpBackend::start_at("east", false, local_a.addr).await;
    let (http, tcp) = probes.await.unwrap();
    let h = figures("HTTP requests", &http, kill, back);
    let t = figures("TCP connections", &tcp, kill, back);
    for (what, (failure, _, local)) in [("HTTP", h), ("TCP", t)] {
        assert!(
            failure < 1000,
            "{what}: a call failed {failure} ms after the kill"
        );
        assert!(local < 2000, "{what}: back to local after {local} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_clusters_only_gateway_killed_calls_move_to_the_other_cluster() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.96.0.0/16");
    let west_def = mesh.cluster("west", "127.97.0.0/16");
    let north_def = mesh.cluster("north", "127.98.0.0/16");
    let _east = east_def.up().await;
    let mut remotes = [
        (west_def.up().await, "west"),
        (north_def.up().await, "north"),
    ];
    let backends = [
        HttpBackend::start("west", false).await,
        HttpBackend::start("north", false).await,
    ];
    for (def, backend) in [(&west_def, &backends[0]), (&north_def, &backends[1])] {
        let addr = backend.addr.to_string();
        add_web_and_raw(def, &[&addr], true);
        link(&east_def, def);
    }
    for name in ["web.shop", "raw.shop"] {
        east_def.wait_imported(name, "west").await;
        east_def.wait_imported(name, "north").await;
    }
    let (http_vip, tcp_vip) = (
        east_def.vip("web.shop", 8080),
        east_def.vip("raw.shop", 9090),
    );
    // Whichever is nearer serves; kill that cluster (its only gateway goes with it).
    let serving = get_once(http_vip).await.expect("a first answer");
    assert_eq!(get_once(tcp_vip).await.as_deref(), Some(serving.as_str()));
    let other = if serving == "west" { "north" } else { "west" };
    let i = remotes
        .iter()
        .position(|(_, name)| *name == serving)
        .unwrap();

    let start = Instant::now();
    let (kill, end) = (
        start + Duration::from_millis(500),
        start + Duration::from_millis(5500),
    );
    let probing =
        tokio::spawn(async move { tokio::join!(probe(http_vip, end), probe(tcp_vip, end)) });
    tokio::time::sleep_until(kill.into()).await;
    remotes[i].0.kill();
    let (http, tcp) = probing.await.unwrap();
    let ms = |t: Instant| t.saturating_duration_since(kill).as_millis();
    for (what, seen) in [("HTTP requests", &http), ("TCP connections", &tcp)] {
        let failures = seen
            .iter()
            .filter(|(t, w)| *t >= kill && w.is_none())
            .count();
        let first_other = seen
            .iter()
            .find(|(t, w)| *t >= kill && w.as_deref() == Some(other))
            .map(|(t, _)| ms(*t))
            .expect("the other cluster answered");
        let settled = seen
            .iter()
            .rev()
            .take_while(|(_, w)| w.as_deref() == Some(other))
            .last()
            .map(|(t, _)| ms(*t))
            .unwrap_or(u128::MAX);
        let slowest = seen
            .iter()
            .zip(seen.iter().skip(1))
            .filter(|((t, _), _)| *t >= kill)
            .map(|((a, _), (b, _))| b.duration_since(*a).as_millis())
            .max()
            .unwrap_or(0);
        println!(
            "gateway of {serving} killed, {what}: {failures} failed after it, first answer from \
             {other} {first_other} ms after, every call from {settled} ms on went there, slowest \
             call {slowest} ms ({} calls)",
            seen.len()
        );
        assert!(
            settled < 1000,
            "{what}: calls settled on {other} only {settled} ms after the kill"
        );
    }
}
