//! Two clusters from one root, as real processes on loopback: link with a token,
//! export a service backed by a real TCP echo server in `west`, call it through
//! `east`'s node proxy VIP. `west` runs its roles as separate processes.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_crosses_clusters_bytes_match() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.31.0.0/16");
    let west_def = mesh.cluster("west", "127.32.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up_apart().await;

    let echo = Echo::start().await;
    west_def.cli_ok(&[
        "service",
        "add",
        "echo.shop",
        "--port",
        "tcp=7000/tcp",
        "--endpoint",
        &echo.addr.to_string(),
    ]);
    west_def.cli_ok(&["export", "echo.shop"]);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    let vip = east_def.vip("echo.shop", 7000);
    let svc = east_def.service("echo.shop").unwrap();
    assert!(
        svc["local"].as_array().unwrap().is_empty(),
        "east has no local endpoint"
    );

    // 1 byte.
    assert_eq!(echo_roundtrip(vip, b"x").await.unwrap(), b"x");
    // 1 MiB, with a half-close from the client.
    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 251) as u8).collect();
    assert_eq!(echo_roundtrip(vip, &big).await.unwrap(), big);
    // 100 concurrent connections, each with its own payload.
    let calls = (0..100u32).map(|i| {
        tokio::spawn(async move {
            let payload = format!("connection {i} ").repeat(50).into_bytes();
            let back = echo_roundtrip(vip, &payload).await.unwrap();
            assert_eq!(back, payload, "connection {i}");
        })
    });
    for c in calls {
        c.await.unwrap();
    }
    assert!(
        echo.accepted() >= 102,
        "the backend in west served the calls"
    );
    // All of it rode pooled connections: far fewer QUIC connections than calls.
    let conns = east_def.metric("ferry_tunnel_connections_total", "");
    assert!(
        (1..=4).contains(&conns),
        "tunnel connections opened: {conns}"
    );

    // Links and the view from both sides.
    let links: Vec<serde_json::Value> = west_def.links();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["peer"], "east");

    // Unexport: the import disappears from east and calls are refused.
    west_def.cli_ok(&["unexport", "echo.shop"]);
    east_def
        .wait_service_gone("echo.shop", Duration::from_secs(5))
        .await; // echo.shop withdrawn from east
}

/// A fresh link's first session is taken. The issuer records the link when it spends the
/// token and its gateway (here it dials first: `east` < `west`) may call before the joiner
/// has recorded the link from the issuer's answer; the joiner's gateway waits for its own
/// record instead of refusing the session as `unknown_peer` and having it redialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_link_is_taken_at_its_first_session() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.37.0.0/16");
    let west_def = mesh.cluster("west", "127.38.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    // `link join` answers once the session is up.
    let said = link(&east_def, &west_def);
    assert!(
        said.contains("linked with east") && said.contains("link session up"),
        "{said}"
    );
    for (def, peer) in [(&east_def, "west"), (&west_def, "east")] {
        wait_until(
            def,
            "the new link connected",
            Duration::from_secs(20),
            |d| {
                d.links()
                    .iter()
                    .any(|l| l["peer"] == peer && l["connected"] == true)
            },
        )
        .await;
    }
    for def in [&east_def, &west_def] {
        assert_eq!(
            def.metric("ferry_gateway_refusals_total", "reason=\"unknown_peer\""),
            0,
            "{} refused a link session of the new link",
            def.name
        );
    }
}

/// When no session comes up (here the joiner runs no gateway to take the issuer's dial),
/// `link join` still records the link, and says there is no session and where to look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_join_says_when_no_session_comes_up() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.115.0.0/16");
    let west_def = mesh.cluster("west", "127.116.0.0/16");
    let _east = east_def.up().await;
    let mut west = west_def.up_apart().await;
    // up_apart: control, gateway, node; without the gateway nothing answers east's dial.
    west.kill_one(1);
    let said = link(&east_def, &west_def);
    assert!(
        said.contains("linked with east")
            && said.contains("no link session yet; `ferry link status east`"),
        "{said}"
    );
    assert!(
        west_def.links().iter().any(|l| l["peer"] == "east"),
        "the link is recorded"
    );
}
