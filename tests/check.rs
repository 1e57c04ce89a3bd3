//! `ferry check` against real clusters: green when all is well, and failing with the right
//! code when a link is down, an import has no healthy endpoint, or the cluster CA ends
//! within 60 days. The JSON shape is pinned (stable field names).

mod common;

use std::process::Output;
use std::time::Duration;

use common::*;

fn check(def: &ClusterDef, extra: &[&str]) -> (Output, serde_json::Value) {
    let mut args = vec!["check", "-o", "json"];
    args.extend_from_slice(extra);
    let out = def.cli(&args);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "check -o json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

/// The field names of a JSON object, sorted.
fn sorted_keys(v: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    keys
}

/// The worst status of `code` among the findings.
fn status(json: &serde_json::Value, code: &str) -> String {
    let rank = |s: &str| ["ok", "warn", "fail"].iter().position(|x| *x == s).unwrap();
    json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"] == code)
        .map(|f| f["status"].as_str().unwrap().to_string())
        .max_by_key(|s| rank(s))
        .unwrap_or_else(|| panic!("no {code} in {json}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn green_mesh_passes_and_the_json_shape_is_stable() {
    let ew = east_west("127.91.0.0/16", "127.92.0.0/16").await;
    let echo = Echo::start().await;
    ew.west_def.add_exported_echo(&echo);
    // `link join` answers once west's own snapshot shows the session up, so west's view
    // below is current.
    let joined = link(&ew.east_def, &ew.west_def);
    assert!(joined.contains("link session up"), "{joined}");
    ew.east_def.wait_imported("echo.shop", "west").await;
    // Roles report their snapshot version every second; --wait lets them catch up.
    let (out, json) = check(&ew.east_def, &["--wait", "20s"]);
    assert!(out.status.success(), "{json:#}");
    assert_eq!(json["passed"], true);
    let keys = sorted_keys(&json);
    assert_eq!(keys, ["findings", "passed"]);
    for finding in json["findings"].as_array().unwrap() {
        let keys = sorted_keys(finding);
        assert_eq!(
            keys,
            ["code", "detail", "fix", "group", "status"],
            "{finding}"
        );
        assert!(finding["code"].as_str().unwrap().starts_with("FERRY"));
    }
    for code in [
        "FERRY101", "FERRY102", "FERRY103", "FERRY104", "FERRY201", "FERRY203", "FERRY301",
        "FERRY302", "FERRY303", "FERRY304", "FERRY401", "FERRY402", "FERRY403",
    ] {
        assert_eq!(status(&json, code), "ok", "{code}: {json:#}");
    }
    // Each role instance is judged on what it says it holds and runs: the gateway's and
    // the node's own certificates, and the DNS server's snapshot (read off its /metrics).
    let detail = |code: &str| -> String {
        json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == code)
            .map(|f| f["detail"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(detail("FERRY104"), "2 role certificates fresh", "{json:#}");
    assert!(
        detail("FERRY402").starts_with("3 roles on snapshot"),
        "gateway, node and dns: {json:#}"
    );
    // `ferry gateways` and `ferry link status`: live from the link sessions, the same
    // fingerprints seen from both sides.
    let rows: serde_json::Value =
        serde_json::from_str(&ew.east_def.cli_ok(&["gateways", "-o", "json"])).unwrap();
    let row = &rows[0];
    let keys = sorted_keys(row);
    assert_eq!(
        keys,
        [
            "alive",
            "gateways",
            "last_seen_unix",
            "peer",
            "rtt_us",
            "services"
        ]
    );
    assert_eq!(
        (row["peer"].as_str(), row["alive"].as_bool()),
        (Some("west"), Some(true))
    );
    assert_eq!(row["services"], 1);
    assert!(row["rtt_us"].as_u64().unwrap() > 0, "{row}");
    let table = ew.east_def.cli_ok(&["gateways"]);
    assert!(
        table.contains("LAST_SEEN") && table.contains("west"),
        "{table}"
    );
    let link_status = |def: &ClusterDef, peer: &str| -> serde_json::Value {
        let text = def.cli_ok(&["link", "status", peer, "-o", "json"]);
        serde_json::from_str::<serde_json::Value>(&text).unwrap()[0].clone()
    };
    let from_east = link_status(&ew.east_def, "west");
    let from_west = link_status(&ew.west_def, "east");
    let keys = sorted_keys(&from_east);
    assert_eq!(
        keys,
        [
            "exported_services",
            "gateways",
            "imported_services",
            "last_error",
            "last_error_unix",
            "limits_hit",
            "linked_at_unix",
            "local",
            "peer",
            "remote",
            "rtt_us",
            "shares_root",
            "since_unix",
            "state"
        ]
    );
    assert_eq!(from_east["state"], "up");
    assert!(from_east["since_unix"].as_u64().unwrap() > 0);
    assert_eq!(
        (
            from_east["imported_services"].as_u64(),
            from_west["exported_services"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_eq!(
        from_east["local"]["bundle"], from_west["local"]["bundle"],
        "one shared root"
    );
    assert_eq!(
        from_east["remote"]["ca_sha256"],
        from_west["local"]["ca_sha256"]
    );
    assert_eq!(
        from_west["remote"]["ca_sha256"],
        from_east["local"]["ca_sha256"]
    );
    assert_eq!(
        from_east["remote"]["cert_sha256"].as_str().unwrap().len(),
        64
    );
    // Each side's hello named its bundle's roots: the same one mesh root.
    assert_eq!(
        from_east["remote"]["roots_sha256"],
        from_west["local"]["roots_sha256"]
    );
    assert_eq!(
        from_east["local"]["roots_sha256"].as_array().unwrap().len(),
        1
    );
    assert_eq!(from_east["shares_root"], true);
    let table = ew.east_def.cli_ok(&["link", "status", "west"]);
    assert!(
        table.contains("peer cluster CA")
            && table.contains("up for")
            && table.contains("1 of the peer's 1"),
        "{table}"
    );
    let unknown = ew.east_def.cli(&["link", "status", "nowhere"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no link to `nowhere`"));

    // The table groups the same findings, one per line.
    let table = ew.east_def.cli_ok(&["check"]);
    assert!(
        table.contains("GROUP") && table.contains("FERRY201") && table.contains("link to west up"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_import_and_a_down_link_fail_with_their_codes() {
    let mut ew = east_west("127.93.0.0/16", "127.94.0.0/16").await;
    ew.west_def.add_dead_echo();
    link(&ew.east_def, &ew.west_def);
    // Imported, never healthy.
    let east = ew.east_def.clone();
    wait_for(
        "echo.shop imported from west",
        Duration::from_secs(20),
        || {
            let east = east.clone();
            async move {
                east.service("echo.shop")
                    .is_some_and(|s| !s["remote"].as_array().unwrap().is_empty())
            }
        },
    )
    .await;
    let (out, json) = check(&ew.east_def, &[]);
    assert!(!out.status.success());
    assert_eq!(json["passed"], false);
    assert_eq!(status(&json, "FERRY301"), "fail", "{json:#}");
    let finding = json["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "FERRY301")
        .unwrap();
    assert!(finding["detail"].as_str().unwrap().contains("echo.shop"));
    assert!(!finding["fix"].as_str().unwrap().is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("FERRY301"), "{stderr}");

    // West goes away: the link is down within its lease.
    ew.west.kill();
    let east = ew.east_def.clone();
    wait_for(
        "east's check sees the link down",
        Duration::from_secs(30),
        || {
            let east = east.clone();
            async move { status(&check(&east, &[]).1, "FERRY201") == "fail" }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_ca_ending_within_60_days_fails_ferry102() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("short", "127.95.0.0/16");
    // Reissue the cluster's CA for 30 days.
    let ca = mesh.path().join("short-ca");
    std::fs::remove_dir_all(&ca).unwrap();
    run_ok(&[
        "trust",
        "issue",
        "--root",
        mesh.root.to_str().unwrap(),
        "--cluster",
        "short",
        "--out",
        ca.to_str().unwrap(),
        "--valid-for",
        "30d",
    ]);
    let _cluster = def.up().await;
    let (out, json) = check(&def, &[]);
    assert!(!out.status.success());
    assert_eq!(status(&json, "FERRY102"), "fail", "{json:#}");
    assert_eq!(status(&json, "FERRY101"), "ok");
    assert_eq!(
        status(&json, "FERRY103"),
        "ok",
        "the short CA still chains to the root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_covers_a_cluster_still_starting() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("slow", "127.96.0.0/16");
    // Started but not waited for: the control plane may not even listen yet.
    let mut cluster = Cluster {
        def: def.clone(),
        procs: Vec::new(),
    };
    def.spawn(&mut cluster, "up");
    let (out, json) = check(&def, &["--wait", "30s"]);
    assert!(
        out.status.success(),
        "{json:#}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In a pipe, --wait prints no progress.
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A bad duration says what is expected.
    let bad = def.cli(&["check", "--wait", "soon"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected a duration"));
}
