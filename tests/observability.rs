//! The operator's view of a running mesh: every role's admin listener (`/metrics`,
//! `/ready`, `/live`), metrics that move by the right amounts after real cross-cluster
//! traffic, and `promtool check metrics` accepting what is served.

mod common;

use std::time::Duration;

use common::http::get_raw;
use common::*;

/// Connections and bytes sent through `east`'s VIP to an echo service in `west`.
const CALLS: usize = 5;
const PAYLOAD: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_cross_cluster_traffic_and_promtool_accepts_them() {
    let EastWest {
        mesh: _mesh,
        east_def,
        west_def,
        east: _east,
        west: _west,
    } = east_west("127.81.0.0/16", "127.82.0.0/16").await;
    let echo = Echo::start().await;
    west_def.add_exported_echo(&echo);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    let vip = east_def.vip("echo.shop", 7000);

    let before_east = east_def.scrape("up").await;
    let before_west = west_def.scrape("up").await;
    let payload = vec![7u8; PAYLOAD];
    for _ in 0..CALLS {
        assert_eq!(echo_roundtrip(vip, &payload).await.unwrap(), payload);
    }
    let outbound = [
        ("direction", "outbound"),
        ("service", "echo.shop"),
        ("source_cluster", "east"),
        ("destination_cluster", "west"),
    ];
    let inbound = [
        ("direction", "inbound"),
        ("service", "echo.shop"),
        ("source_cluster", "east"),
        ("destination_cluster", "west"),
    ];
    // Closed is counted when each relay has ended on both sides.
    let moved = |before: &str, after: &str, name: &str, labels: &[(&str, &str)]| {
        sample(after, name, labels) - sample(before, name, labels)
    };
    let calls = CALLS as f64;
    let mut east = String::new();
    let mut west = String::new();
    for _ in 0..100 {
        east = east_def.scrape("up").await;
        west = west_def.scrape("up").await;
        let closed = "ferry_tcp_connections_closed_total";
        if moved(&before_east, &east, closed, &outbound) >= calls
            && moved(&before_west, &west, closed, &inbound) >= calls
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let bytes = (CALLS * PAYLOAD) as f64;
    for (side, before, after, labels) in [
        ("east", &before_east, &east, &outbound),
        ("west", &before_west, &west, &inbound),
    ] {
        for (name, want) in [
            ("ferry_tcp_connections_opened_total", calls),
            ("ferry_tcp_connections_closed_total", calls),
            ("ferry_tcp_sent_bytes_total", bytes),
            ("ferry_tcp_received_bytes_total", bytes),
        ] {
            assert_eq!(
                moved(before, after, name, labels),
                want,
                "{side}: {name} {labels:?}\n{after}"
            );
        }
        assert_eq!(sample(after, "ferry_tcp_connections_open", labels), 0.0);
    }
    // Links, identity, build and process.
    assert_eq!(
        sample(&east, "ferry_link_up", &[("peer", "west")]),
        1.0,
        "{east}"
    );
    assert_eq!(sample(&east, "ferry_imports", &[("peer", "west")]), 1.0);
    assert!(sample(&east, "ferry_sync_updates_total", &[("peer", "west")]) >= 1.0);
    assert!(sample(&east, "ferry_link_rtt_seconds", &[("peer", "west")]) > 0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    for role in ["gateway", "node"] {
        let expiry = sample(
            &east,
            "ferry_cert_expiry_timestamp_seconds",
            &[("role", role)],
        );
        assert!(expiry > now, "{role} certificate expiry {expiry}");
    }
    assert!(sample(&east, "ferry_root_expiry_timestamp_seconds", &[]) > now + 86_400.0 * 300.0);
    assert_eq!(sample(&east, "ferry_build_info", &[]), 1.0);
    assert!(sample(&east, "process_resident_memory_bytes", &[]) > 0.0);
    assert!(sample(&east, "process_open_fds", &[]) > 0.0);

    // The admin listener is on loopback only, never on a VIP.
    let admin_port = east_def.admin_addr("up").await.port();
    let on_vip = std::net::SocketAddr::new(vip.ip(), admin_port);
    assert!(
        tokio::net::TcpStream::connect(on_vip).await.is_err(),
        "{on_vip} answers"
    );

    // `ferry status` says where the admin listener and DNS are, and how the links stand.
    let status = east_def.status();
    let mut fields: Vec<&str> = status
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort();
    assert_eq!(
        fields,
        [
            "admin",
            "bundle_fingerprint",
            "cluster",
            "dns",
            "exports",
            "gateways",
            "imports",
            "links",
            "links_up",
            "listen_errors",
            "metrics",
            "services",
            "snapshot_version",
            "trust_domain",
            "without_vip"
        ],
        "the status JSON's fields are stable"
    );
    let admin = east_def.admin_addr("up").await.to_string();
    assert_eq!(status["admin"][0]["role"], "up", "{status}");
    assert_eq!(status["admin"][0]["addr"], admin.as_str());
    assert_eq!(
        status["dns"],
        east_def.dns_addr().await.to_string().as_str()
    );
    assert_eq!(
        (status["links"].as_u64(), status["links_up"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(status["imports"], 1);
    assert_eq!(west_def.status()["exports"], 1);
    let table = east_def.cli_ok(&["status"]);
    assert!(
        table.contains("1/1 up") && table.contains(&format!("http://{admin}")),
        "{table}"
    );

    // An HTTP call and a DNS query, so every family the dashboard reads has samples; then
    // every metric the dashboard in deploy/ queries is served by one of the clusters.
    let web = common::http::HttpBackend::start("west", false).await;
    common::http::add_web(&west_def, &[&web], true);
    east_def.wait_imported("web.shop", "west").await;
    let web_vip = east_def.vip("web.shop", 8080);
    assert_eq!(
        common::http::served_by(web_vip).await.as_deref(),
        Some("west")
    );
    let question = common::dns::query(
        "web.shop.svc.clusterset.local.",
        hickory_proto::rr::RecordType::A,
        false,
    );
    common::dns::ask(
        east_def.dns_addr().await,
        &question,
        common::dns::Transport::Udp,
    )
    .await;
    let served = format!(
        "{}\n{}",
        east_def.scrape("up").await,
        west_def.scrape("up").await
    );
    let queried = dashboard_metrics();
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        let exposed = served.lines().any(|l| {
            !l.starts_with('#')
                && (l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        });
        assert!(
            exposed,
            "the dashboard queries {name}, which no cluster serves:\n{served}"
        );
    }

    // Every series has a HELP and a TYPE, and the whole text passes Prometheus's own lint.
    for text in [&east, &west] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics.txt");
        std::fs::write(&file, text).unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("promtool check metrics < {}", file.display()))
            .output()
            .expect("promtool runs (Debian package `prometheus`; .ci/run installs it)");
        assert!(
            out.status.success(),
            "promtool check metrics failed: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_serves_live_ready_and_metrics() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("solo", "127.83.0.0/16");
    let mut cluster = def.up_apart().await;
    def.spawn(&mut cluster, "dns");
    for role in ["control", "gateway", "node", "dns"] {
        let addr = def.admin_addr(role).await;
        assert!(addr.ip().is_loopback(), "{role} admin on {addr}");
        assert_eq!(
            get_raw(addr, "/live").await,
            Some((200, "live\n".into())),
            "{role}"
        );
        wait_for(
            &format!("{role} ready"),
            Duration::from_secs(20),
            || async move { get_raw(addr, "/ready").await == Some((200, "ready\n".into())) },
        )
        .await;
        let (status, text) = get_raw(addr, "/metrics").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            sample(&text, "ferry_build_info", &[]),
            1.0,
            "{role}: {text}"
        );
        assert_eq!(get_raw(addr, "/nothing").await.map(|r| r.0), Some(404));
    }
    // No service may send the mesh's calls to an admin listener: refused, with why.
    let control_admin = def.admin_addr("control").await.to_string();
    let out = def.cli(&[
        "service",
        "add",
        "metrics.sys",
        "--port",
        "http=80/http",
        "--endpoint",
        &control_admin,
        "--export",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("admin listener"),
        "{err}"
    );
    assert!(def.service("metrics.sys").is_none());

    // The DNS role counts what it answers, by type and code.
    let dns = def.dns_addr().await;
    let before = def.scrape("dns").await;
    let labels = [("qtype", "A"), ("rcode", "NXDOMAIN")];
    let question = common::dns::query(
        "nothing.shop.svc.clusterset.local.",
        hickory_proto::rr::RecordType::A,
        false,
    );
    let reply = common::dns::ask(dns, &question, common::dns::Transport::Udp).await;
    assert_eq!(
        reply.metadata.response_code,
        hickory_proto::op::ResponseCode::NXDomain
    );
    let after = def.scrape("dns").await;
    assert_eq!(
        sample(&after, "ferry_dns_queries_total", &labels)
            - sample(&before, "ferry_dns_queries_total", &labels),
        1.0,
        "{after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_off_a_terminal_and_json_when_asked() {
    use std::io::{BufRead, BufReader};
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("logs", "127.84.0.0/16");
    let cluster = def.up().await;
    // Test processes write to files: no colour codes.
    let text = def.log();
    assert!(text.contains("INFO"), "{text}");
    assert!(!text.contains('\x1b'), "ANSI codes in a log file:\n{text}");

    // A DNS role with JSON logs: every line one object with a level and a message.
    let mut dns = std::process::Command::new(FERRY)
        .args([
            "--log-format",
            "json",
            "--log-level",
            "info",
            "dns",
            "--config",
        ])
        .arg(&def.config)
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(dns.stderr.take().unwrap());
    let mut objects = 0;
    for line in stderr.lines().map_while(Result::ok) {
        if line.starts_with("ferry: ") {
            // The one human line a role prints on start (`try: dig ...`).
            break;
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{line}");
        objects += 1;
    }
    let _ = dns.kill();
    let _ = dns.wait();
    assert!(objects >= 1, "no JSON log line before the start line");

    // A filter that cannot be parsed is refused with a way out.
    let out = std::process::Command::new(FERRY)
        .args(["--log-level", "no=such=level", "dns", "--config"])
        .arg(&def.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("invalid log filter"),
        "{err}"
    );
    drop(cluster);
}

/// Every metric name the Grafana dashboard in `deploy/grafana/` queries.
fn dashboard_metrics() -> std::collections::BTreeSet<String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy/grafana/ferry-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut names = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("ferry_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                names.insert(tail[..end].to_string());
                rest = &tail[end..];
            }
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_logs_name_the_call_and_refusals_are_logged_by_default() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.85.0.0/16");
    let west_def = mesh.cluster("west", "127.86.0.0/16");
    // East logs every call; west keeps the default (refusals and failures only).
    east_def.append_config("\n[telemetry]\naccess_log = \"all\"\n");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let echo = Echo::start().await;
    west_def.add_exported_echo(&echo);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    let vip = east_def.vip("echo.shop", 7000);
    assert_eq!(echo_roundtrip(vip, b"hello").await.unwrap(), b"hello");

    let line = |def: &ClusterDef, needle: &[&str]| {
        def.log()
            .lines()
            .find(|l| l.contains("access") && needle.iter().all(|n| l.contains(n)))
            .map(str::to_string)
    };
    let east = east_def.clone();
    wait_for("east's access line", Duration::from_secs(10), || {
        let east = east.clone();
        async move {
            line(
                &east,
                &["kind=\"tcp\"", "direction=\"outbound\"", "destination=west"],
            )
            .is_some()
        }
    })
    .await;
    let got = line(&east_def, &["kind=\"tcp\"", "direction=\"outbound\""]).unwrap();
    for field in [
        "service=echo.shop",
        "sent=5",
        "received=5",
        "result=\"ok\"",
        "duration_ms=",
    ] {
        assert!(got.contains(field), "{field} missing: {got}");
    }
    // West served it fine: no line at the default setting.
    assert!(
        line(&west_def, &["result=\"ok\""]).is_none(),
        "{}",
        west_def.log()
    );

    // A refusal at west's gateway is logged there by default, with the caller's identity.
    let node = east_def.node_client().await;
    let west: ferry_federation::ClusterId = "west".parse().unwrap();
    let refused = node
        .open(
            &west,
            &west_def.gateways(),
            &tunnel_header("secret.shop", "tcp", None),
        )
        .await;
    assert!(refused.is_err());
    let west = west_def.clone();
    wait_for("west's refusal line", Duration::from_secs(10), || {
        let west = west.clone();
        async move { line(&west, &["direction=\"inbound\"", "result=\"not_exported\""]).is_some() }
    })
    .await;
    let got = line(&west_def, &["result=\"not_exported\""]).unwrap();
    // The caller as its certificate names it: a node of east.
    assert!(
        got.contains("source=node ") && got.contains(" of east"),
        "{got}"
    );
    assert!(got.contains("service=secret.shop"), "{got}");
}
