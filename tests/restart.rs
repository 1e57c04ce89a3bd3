//! Durability and liveness: a control plane killed with SIGKILL loses nothing a command
//! reported as done; a peer that goes silent has its imports withdrawn after the lease,
//! and they come back with it.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_keeps_services_exports_links() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.71.0.0/16");
    let west_def = mesh.cluster("west", "127.72.0.0/16");
    let _east = east_def.up().await;
    let mut west = west_def.up().await;
    let echo = Echo::start().await;
    let ep = echo.addr.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "echo.shop",
        "--port",
        "tcp=7000",
        "--endpoint",
        &ep,
    ]);
    west_def.cli_ok(&["export", "echo.shop"]);
    west_def.cli_ok(&[
        "service",
        "add",
        "db.shop",
        "--port",
        "pg=5432/tcp",
        "--endpoint",
        "127.0.0.1:1",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    let before = west_def.services();

    west.kill(); // SIGKILL: no chance to flush anything
    let _west = west_def.up().await;

    let after = west_def.services();
    let pick = |list: &[serde_json::Value]| {
        list.iter()
            .map(|s| {
                (
                    s["name"].clone(),
                    s["vip"].clone(),
                    s["ports"].clone(),
                    s["exported"].clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        pick(&before),
        pick(&after),
        "services, VIPs and exports survive"
    );
    let links: Vec<serde_json::Value> = west_def.links();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0]["peer"], "east");

    // The link comes back by itself and calls cross again.
    east_def.wait_imported("echo.shop", "west").await;
    let vip = east_def.vip("echo.shop", 7000);
    let mut ok = false;
    for _ in 0..100 {
        if echo_roundtrip(vip, b"after restart").await.ok().as_deref()
            == Some(b"after restart".as_slice())
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "cross-cluster call after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peer_loses_imports_after_lease_and_regains_them() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.73.0.0/16");
    let west_def = mesh.cluster("west", "127.74.0.0/16");
    let _east = east_def.up().await;
    let mut west = west_def.up().await;
    let echo = Echo::start().await;
    west_def.add_exported_echo(&echo);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;

    west.kill();
    east_def
        .wait_service_gone("echo.shop", Duration::from_secs(15))
        .await; // imports withdrawn after the lease

    let _west = west_def.up().await;
    east_def.wait_imported("echo.shop", "west").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_travels_with_exports() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.75.0.0/16");
    let west_def = mesh.cluster("west", "127.76.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    // An endpoint nobody listens on: exported, but unhealthy.
    let dead_addr = west_def.add_dead_echo();
    link(&east_def, &west_def);
    let e = east_def.clone();
    wait_for(
        "east imports echo.shop with 0 healthy",
        Duration::from_secs(10),
        || {
            let e = e.clone();
            async move {
                e.service("echo.shop").is_some_and(|s| {
                    s["remote"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|r| r["cluster"] == "west" && r["healthy"]["tcp"] == 0)
                })
            }
        },
    )
    .await;
    // The endpoint comes up: east learns it is healthy.
    let listener = tokio::net::TcpListener::bind(&dead_addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let _ = listener.accept().await;
        }
    });
    east_def.wait_imported("echo.shop", "west").await;
}
