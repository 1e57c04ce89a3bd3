//! A cluster's life on the host: SIGTERM stops an idle cluster within 500 ms and drains open
//! connections first; a VIP:port the node proxy cannot listen on is reported at start, in
//! `ferry services` and `ferry status`, and served once it is free.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sigterm(cluster: &Cluster) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &cluster.procs[0].id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits for the cluster's only process to exit; returns how long that took.
fn wait_exit(cluster: &mut Cluster, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        if let Some(status) = cluster.procs[0].try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            return start.elapsed();
        }
        assert!(start.elapsed() < timeout, "still running after {timeout:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_an_idle_cluster_quickly_and_drains_open_connections() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.101.0.0/16");
    let mut idle = def.up().await;
    sigterm(&idle);
    let took = wait_exit(&mut idle, Duration::from_secs(5));
    assert!(took < Duration::from_millis(500), "idle stop took {took:?}");
    assert!(!def.socket.exists(), "the admin socket is removed");

    // An open proxied connection keeps the node proxy up until it ends (drain), while new
    // connections are no longer taken.
    let mut busy = def.up().await;
    let echo = Echo::start().await;
    def.add_echo(&echo, false);
    def.wait_local_healthy("echo.shop").await;
    let addr = def.vip("echo.shop", 7000);
    wait_listening(addr).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    conn.read_exact(&mut buf).await.unwrap();
    sigterm(&busy);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(busy.procs[0].try_wait().unwrap().is_none(), "draining");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no new connections while draining"
    );
    conn.write_all(b"during").await.unwrap();
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"during", "the open connection still works");
    drop(conn);
    let took = wait_exit(&mut busy, Duration::from_secs(5));
    assert!(
        took < Duration::from_secs(2),
        "stopped once drained ({took:?})"
    );
    let log = def.log();
    assert!(!log.contains("control plane call failed"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_port_in_use_is_reported_then_served_once_free() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.102.0.0/16");
    // The first VIP of the range, port 7000, taken before the cluster starts.
    let squatter = std::net::TcpListener::bind("127.102.0.1:7000").unwrap();
    def.append_config(
        "\n[[service]]\nname = \"echo.shop\"\nports = [\"tcp=7000\"]\nendpoints = [\"127.0.0.1:9\"]\n",
    );
    let _cluster = def.up().await;
    wait_until(
        &def,
        "the failure in `ferry services`",
        Duration::from_secs(10),
        |d| {
            d.service("echo.shop")
                .is_some_and(|s| !s["listen_errors"].as_array().unwrap().is_empty())
        },
    )
    .await;
    let svc = def.service("echo.shop").unwrap();
    assert_eq!(svc["vip"], "127.102.0.1");
    let err = svc["listen_errors"][0].as_str().unwrap();
    assert!(
        err.starts_with("127.102.0.1:7000: ") && err.contains("in use"),
        "{err}"
    );
    let status = def.status();
    assert_eq!(
        status["listen_errors"].as_array().unwrap().len(),
        1,
        "{status}"
    );
    let table = def.cli_ok(&["services"]);
    assert!(table.contains("127.102.0.1:7000"), "{table}");
    let log = def.log();
    assert!(
        log.contains("the node proxy cannot listen on 127.102.0.1:7000"),
        "`ferry up` says so at start: {log}"
    );

    // Freed: the proxy takes it within its retry interval and the report clears.
    drop(squatter);
    wait_until(&def, "the failure to clear", Duration::from_secs(10), |d| {
        d.service("echo.shop")
            .is_some_and(|s| s["listen_errors"].as_array().unwrap().is_empty())
    })
    .await;
    wait_listening("127.102.0.1:7000".parse().unwrap()).await;
}

/// A relayed connection silent both ways for the idle timeout is closed: by the node proxy
/// for a local endpoint, and by the serving gateway for a tunnel stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_relayed_connections_are_closed() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.103.0.0/16");
    let west_def = mesh.cluster("west", "127.104.0.0/16");
    east_def.append_config_to("[node]", "idle_timeout = \"1s\"");
    west_def.append_config_to("[gateway]", "idle_timeout = \"1s\"");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let local = Echo::start().await;
    east_def.add_echo(&local, false);
    east_def.wait_local_healthy("echo.shop").await;
    let remote = Echo::start().await;
    west_def.cli_ok(&[
        "service",
        "add",
        "far.shop",
        "--port",
        "tcp=7001",
        "--endpoint",
        &remote.addr.to_string(),
        "--export",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("far.shop", "west").await;
    for addr in [
        east_def.vip("echo.shop", 7000),
        east_def.vip("far.shop", 7001),
    ] {
        wait_listening(addr).await;
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        let started = Instant::now();
        let mut rest = Vec::new();
        let ended =
            tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
        assert!(ended.is_ok(), "{addr}: still open 10 s into silence");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_secs(5),
            "{addr}: closed after {took:?}"
        );
    }

    // A tunnel stream of HTTP requests (the gateway serves it request by request) is
    // closed the same way once no request has been in progress for the idle timeout.
    let web = common::http::HttpBackend::start("west", false).await;
    common::http::add_web(&west_def, &[&web], true);
    east_def.wait_imported("web.shop", "west").await;
    let peer = east_def.node_client().await;
    let mut header = common::tunnel_header("web.shop", "http", None);
    header.carries = ferry_federation::Carries::Http;
    let west: ferry_federation::ClusterId = "west".parse().unwrap();
    let (mut send, mut recv) = peer
        .open(&west, &west_def.gateways(), &header)
        .await
        .unwrap();
    send.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 12];
    recv.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 200");
    let started = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        let mut chunk = [0u8; 1024];
        while let Ok(Some(_)) = recv.read(&mut chunk).await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the HTTP stream is still open 10 s into silence"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "HTTP stream closed after {took:?}"
    );
}
