//! `ferry policy set / show / clear` against a running cluster: a change merges with what
//! was set, bad input is refused with the flag and the fix, the JSON shape is stable, a
//! policy survives SIGKILL, and a policy the config file declares is the file's.

mod common;

use common::*;
use serde_json::{json, Value};

fn show(def: &ClusterDef, service: Option<&str>) -> Value {
    let mut args = vec!["policy", "show", "-o", "json"];
    args.extend(service);
    serde_json::from_str(&def.cli_ok(&args)).unwrap()
}

/// Runs a verb that must fail; returns its stderr.
fn refused(def: &ClusterDef, args: &[&str]) -> String {
    let out = def.cli(args);
    assert!(
        !out.status.success(),
        "`ferry {}` succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_merge_refuse_bad_input_survive_sigkill_and_clear() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.81.0.0/16");
    let mut east = def.up().await;
    let echo = Echo::start().await;
    def.add_echo(&echo, false);

    let set: Value = serde_json::from_str(&def.cli_ok(&[
        "policy",
        "set",
        "echo.shop",
        "--weights",
        "east=90,west=10",
        "--timeout",
        "2s",
        "--retries",
        "2",
        "--retry-on",
        "reset,5xx",
        "--route",
        "X-Canary=1 -> west",
        "-o",
        "json",
    ]))
    .unwrap();
    let expected = json!({
        "service": "echo.shop",
        "split": "weights=east=90,west=10",
        "routes": ["x-canary=1 -> west"],
        "timeout": "2s",
        "retries": 2,
        "retry_on": ["5xx", "reset"],
        "declared": false,
        "known": true,
    });
    assert_eq!(set, json!([expected]));
    assert_eq!(show(&def, None), json!([expected]));

    // A later set changes only what it names.
    def.cli_ok(&[
        "policy",
        "set",
        "echo.shop",
        "--local-only",
        "--timeout",
        "none",
    ]);
    let now = show(&def, Some("echo.shop"));
    assert_eq!(now[0]["split"], "local-only");
    assert_eq!(now[0]["timeout"], Value::Null);
    assert_eq!(now[0]["retries"], 2);
    assert_eq!(now[0]["routes"], json!(["x-canary=1 -> west"]));
    def.cli_ok(&[
        "policy",
        "set",
        "echo.shop",
        "--no-routes",
        "--pinned",
        "west",
    ]);
    let now = show(&def, Some("echo.shop"));
    assert_eq!(
        (now[0]["split"].clone(), now[0]["routes"].clone()),
        (json!("pinned=west"), json!([]))
    );

    // A policy for a name not known yet is kept, and says so.
    let out = def.cli(&["policy", "set", "later.shop", "--local-only"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no service later.shop is known here yet")
    );

    // Bad input: refused with what was wrong, nothing changed.
    let before = show(&def, None);
    let cases: &[(&[&str], &str)] = &[
        (&["--weights", "east=0,west=0"], "weight above 0"),
        (&["--weights", "east=90,east=10"], "twice"),
        (&["--weights", "east"], "cluster=weight pairs"),
        (&["--pinned", "West"], "cluster id"),
        (&["--retries", "9"], "more than 5"),
        (&["--timeout", "soon"], "invalid --timeout `soon`"),
        (&["--timeout", "0s"], "above 0"),
        (&["--retry-on", "5xx,4xx"], "\"4xx\" is not one of"),
        (&["--route", "x-canary=1"], "no '->'"),
        (
            &["--route", "connection=close -> west"],
            "about the connection",
        ),
        (&[], "changes nothing"),
        (&["--local-only", "--failover"], "cannot be used with"),
    ];
    for (flags, want) in cases {
        let mut args = vec!["policy", "set", "echo.shop"];
        args.extend_from_slice(flags);
        let err = refused(&def, &args);
        assert!(err.contains(want), "{flags:?}: {err}");
    }
    let err = refused(&def, &["policy", "set", "echo", "--local-only"]);
    assert!(err.contains("invalid service name `echo`"), "{err}");
    let err = refused(&def, &["policy", "clear", "nothing.shop"]);
    assert!(err.contains("has no policy"), "{err}");
    assert_eq!(show(&def, None), before);

    // SIGKILL loses nothing a command reported done.
    east.kill();
    let _east = def.up().await;
    assert_eq!(show(&def, None), before);

    def.cli_ok(&["policy", "clear", "echo.shop"]);
    def.cli_ok(&["policy", "clear", "later.shop"]);
    assert_eq!(show(&def, None), json!([]));
    let text = def.cli_ok(&["policy", "show", "echo.shop"]);
    assert!(text.contains("echo.shop has no policy: failover"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_declared_in_the_config_file_is_the_files() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.82.0.0/16");
    def.append_config(
        "\n[[policy]]\nservice = \"web.shop\"\nweights = { east = 1, west = 3 }\nretries = 1\n",
    );
    let _east = def.up().await;
    let shown = show(&def, None);
    assert_eq!(shown[0]["split"], "weights=east=1,west=3");
    assert_eq!(shown[0]["declared"], true);
    assert_eq!(shown[0]["known"], false);
    for verb in [
        &["policy", "set", "web.shop", "--local-only"][..],
        &["policy", "clear", "web.shop"],
    ] {
        let err = refused(&def, verb);
        assert!(
            err.contains("is declared in") && err.contains("[[policy]]"),
            "{err}"
        );
    }
    assert_eq!(show(&def, None), shown);
}

/// Which of `east` and `west` served one call to `vip`.
async fn served_by(vip: std::net::SocketAddr, east: &Echo, west: &Echo) -> &'static str {
    let (e, w) = (east.accepted(), west.accepted());
    assert_eq!(echo_roundtrip(vip, b"who").await.unwrap(), b"who");
    match (east.accepted() - e, west.accepted() - w) {
        (1, 0) => "east",
        (0, 1) => "west",
        other => panic!("one call reached {other:?} backends"),
    }
}

/// Calls until `want` serves one (a policy takes a snapshot to reach the node proxy).
async fn until_served_by(vip: std::net::SocketAddr, east: &Echo, west: &Echo, want: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while served_by(vip, east, west).await != want {
        assert!(
            std::time::Instant::now() < deadline,
            "no call reached {want} in 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_proxy_follows_the_policy_for_tcp_connections() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.83.0.0/16");
    let west_def = mesh.cluster("west", "127.84.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let (east_echo, west_echo) = (Echo::start().await, Echo::start().await);
    east_def.add_echo(&east_echo, false);
    west_def.add_exported_echo(&west_echo);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    east_def.wait_local_healthy("echo.shop").await;
    let vip = east_def.vip("echo.shop", 7000);

    // No policy: local first.
    for _ in 0..20 {
        assert_eq!(served_by(vip, &east_echo, &west_echo).await, "east");
    }
    // Pinned to west: every connection goes there, though east is healthy.
    east_def.cli_ok(&["policy", "set", "echo.shop", "--pinned", "west"]);
    until_served_by(vip, &east_echo, &west_echo, "west").await;
    for _ in 0..20 {
        assert_eq!(served_by(vip, &east_echo, &west_echo).await, "west");
    }
    // A weighted split: 2000 connections, 20 at a time, within 5 % of 80/20.
    east_def.cli_ok(&["policy", "set", "echo.shop", "--weights", "east=80,west=20"]);
    until_served_by(vip, &east_echo, &west_echo, "east").await;
    let (e0, w0) = (east_echo.accepted(), west_echo.accepted());
    for _ in 0..100 {
        let calls: Vec<_> = (0..20)
            .map(|_| tokio::spawn(async move { echo_roundtrip(vip, b"split").await.unwrap() }))
            .collect();
        for c in calls {
            assert_eq!(c.await.unwrap(), b"split");
        }
    }
    let (east_n, west_n) = (east_echo.accepted() - e0, west_echo.accepted() - w0);
    assert_eq!(east_n + west_n, 2000);
    assert!(
        (1500..=1700).contains(&east_n),
        "east served {east_n} of 2000, west {west_n}"
    );
    // Local only, then cleared: back to the default.
    east_def.cli_ok(&["policy", "set", "echo.shop", "--local-only"]);
    until_served_by(vip, &east_echo, &west_echo, "east").await;
    for _ in 0..20 {
        assert_eq!(served_by(vip, &east_echo, &west_echo).await, "east");
    }
    east_def.cli_ok(&["policy", "set", "echo.shop", "--pinned", "north"]);
    // Pinned to a cluster that does not export it: refused (a reset), never elsewhere.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (e, w) = (east_echo.accepted(), west_echo.accepted());
        if echo_roundtrip(vip, b"x").await.is_err() {
            assert_eq!((east_echo.accepted(), west_echo.accepted()), (e, w));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pinned policy never applied"
        );
    }
    east_def.cli_ok(&["policy", "clear", "echo.shop"]);
    until_served_by(vip, &east_echo, &west_echo, "east").await;
}
