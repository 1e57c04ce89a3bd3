//! A cluster with two active gateways: the peer learns both addresses, spreads over
//! them, and keeps calling through the survivor when one dies.

mod common;

use std::time::Duration;

use common::*;

fn link_gateways(def: &ClusterDef, peer: &str) -> Vec<String> {
    let links: Vec<serde_json::Value> = def.links();
    links
        .iter()
        .find(|l| l["peer"] == peer)
        .map(|l| {
            l["gateways"]
                .as_array()
                .unwrap()
                .iter()
                .map(|g| g.as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_load_and_survive_one_dying() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.81.0.0/16");
    let west_def = mesh.cluster("west", "127.82.0.0/16");
    let _east = east_def.up().await;
    let mut west = west_def.up_apart().await; // procs: control, gateway, node
    let second = west_def.add_gateway(&mut west);
    let w = west_def.clone();
    wait_for(
        "two west gateways registered",
        Duration::from_secs(20),
        || {
            let w = w.clone();
            async move { w.status()["gateways"].as_array().unwrap().len() == 2 }
        },
    )
    .await;

    let echo = Echo::start().await;
    west_def.add_exported_echo(&echo);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    let e = east_def.clone();
    wait_for(
        "east knows both west gateways",
        Duration::from_secs(10),
        || {
            let e = e.clone();
            async move { link_gateways(&e, "west").len() == 2 }
        },
    )
    .await;

    let vip = east_def.vip("echo.shop", 7000);
    for i in 0..20 {
        let msg = format!("call {i}");
        assert_eq!(
            echo_roundtrip(vip, msg.as_bytes()).await.unwrap(),
            msg.as_bytes()
        );
    }
    // Spread: east's node proxy opened a pooled connection to each gateway.
    assert_eq!(east_def.metric("ferry_tunnel_connections_total", ""), 2);

    west.kill_one(second);
    let mut failures = 0;
    for i in 0..20 {
        let msg = format!("after {i}");
        match echo_roundtrip(vip, msg.as_bytes()).await {
            Ok(b) if b == msg.as_bytes() => {}
            _ => failures += 1,
        }
    }
    assert!(
        failures <= 2,
        "calls must move to the surviving gateway ({failures} failed)"
    );
    let msg = b"survivor";
    assert_eq!(echo_roundtrip(vip, msg).await.unwrap(), msg);
}
