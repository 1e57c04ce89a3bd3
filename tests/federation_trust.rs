//! What a linked peer must never be able to do, played by real `ferry up` clusters on
//! loopback: take over a name another cluster exports, or make this cluster dial where it
//! chooses. (Bounds on what a peer may send are proven in ferry-federation's link tests.)

mod common;

use std::time::Duration;

use common::dns::dig;
use common::*;

/// `west` exports `db.prod` as a plain service; later `rogue` exports the same name as a
/// headless service whose endpoint is its own server. East keeps west's definition: the name
/// answers west's VIP, calls reach west's backend only, and the conflict is shown, logged and
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_export_cannot_take_over_a_name() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.81.0.0/16");
    let west_def = mesh.cluster("west", "127.82.0.0/16");
    let rogue_def = mesh.cluster("rogue", "127.83.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let _rogue = rogue_def.up().await;

    let real = Echo::start().await;
    let evil = Echo::start().await;
    let real_ep = real.addr.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "db.prod",
        "--port",
        "tcp=7000",
        "--endpoint",
        &real_ep,
        "--export",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("db.prod", "west").await;

    let evil_ep = format!("evil-0={}", evil.addr);
    rogue_def.cli_ok(&[
        "service",
        "add",
        "db.prod",
        "--port",
        "tcp=7000",
        "--endpoint",
        &evil_ep,
        "--headless",
        "--export",
    ]);
    link(&east_def, &rogue_def);
    let east = east_def.clone();
    wait_for(
        "east to report rogue's conflicting export",
        Duration::from_secs(20),
        || {
            let east = east.clone();
            async move {
                east.service("db.prod")
                    .is_some_and(|s| !s["conflicts"].as_array().unwrap().is_empty())
            }
        },
    )
    .await;

    let svc = east_def.service("db.prod").unwrap();
    assert_eq!(svc["headless"], false, "{svc}");
    assert_eq!(svc["endpoints"].as_array().unwrap().len(), 0, "{svc}");
    let remotes: Vec<&str> = svc["remote"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(remotes, ["west"], "rogue's export is not merged: {svc}");
    assert_eq!(svc["conflicts"][0]["cluster"], "rogue");
    assert_eq!(
        svc["conflicts"][0]["reason"],
        "rogue exports it as headless"
    );
    let table = east_def.cli_ok(&["services"]);
    assert!(
        table.contains("CONFLICTS") && table.contains("rogue exports it as headless"),
        "{table}"
    );
    assert_eq!(east_def.metric("ferry_import_conflicts", ""), 1);
    assert!(
        east_def
            .log()
            .contains("export conflicts with the service's definition"),
        "the conflict is logged"
    );

    // The name still means west's service: its VIP, and west's backend behind it.
    let dns = east_def.dns_addr().await;
    let vip = svc["vip"].as_str().unwrap();
    assert_eq!(
        dig(dns, &["+short", "db.prod.svc.clusterset.local"]).trim(),
        vip
    );
    let addr = east_def.vip("db.prod", 7000);
    wait_listening(addr).await;
    for _ in 0..5 {
        assert_eq!(echo_roundtrip(addr, b"ping").await.unwrap(), b"ping");
    }
    assert!(real.accepted() >= 5);
    assert_eq!(evil.accepted(), 0, "no call reached the rogue's server");

    // Rogue's own view is its own business: it defines db.prod locally.
    assert_eq!(rogue_def.service("db.prod").unwrap()["headless"], true);
}

/// A token whose gateways are loopback addresses is refused, with the way out, by a cluster
/// that does not allow loopback gateways; nothing is dialled and no link is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_gateways_are_refused_unless_allowed() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.84.0.0/16");
    let west_def = mesh.cluster("west", "127.85.0.0/16");
    let text = std::fs::read_to_string(&west_def.config).unwrap().replace(
        "allow_loopback_gateways = true",
        "allow_loopback_gateways = false",
    );
    std::fs::write(&west_def.config, text).unwrap();
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let token = east_def.token_for("west", &[]);
    let out = west_def.cli(&["link", "join", &token]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a unicast address this cluster may dial")
            && err.contains("allow_loopback_gateways"),
        "{err}"
    );
    assert!(west_def.links().is_empty());
}

/// A TCP server that writes zeros to every client until the client goes away.
async fn firehose() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let chunk = vec![0u8; 64 * 1024];
                while sock.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

/// Unexporting a service cuts its open tunnel streams within 2 s: a download that would
/// never end stops, and new connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexport_cuts_open_streams() {
    use tokio::io::AsyncReadExt;
    let ew = east_west("127.86.0.0/16", "127.87.0.0/16").await;
    let (east_def, west_def) = (ew.east_def.clone(), ew.west_def.clone());
    let origin = firehose().await.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "blob.shop",
        "--port",
        "tcp=7000",
        "--endpoint",
        &origin,
        "--export",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("blob.shop", "west").await;
    let addr = east_def.vip("blob.shop", 7000);
    wait_listening(addr).await;
    let mut download = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    while got < 1 << 20 {
        got += download.read(&mut buf).await.unwrap();
    }
    west_def.cli_ok(&["unexport", "blob.shop"]);
    let cut_at = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match download.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the download kept flowing 2 s after unexport"
    );
    eprintln!("stream cut {:?} after unexport", cut_at.elapsed());
    assert!(
        west_def.metric("ferry_gateway_streams_cut_total", "not_exported") >= 1,
        "the cut is counted"
    );
}
