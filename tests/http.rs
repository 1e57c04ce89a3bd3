//! HTTP ports through the node proxy, with real curl: HTTP/1.1 and h2c across clusters,
//! the trace continued and forwarding headers added, streamed bodies, header routes, the
//! proxy's own errors (503 with `ferry-error`, 504 on the policy's timeout) and retries
//! of a failing endpoint.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::{add_web, HttpBackend};
use common::*;
use serde_json::Value;

/// A curl answer: status, headers (lowercase names), body.
struct Answer {
    status: u16,
    headers: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn curl(args: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Interim answers (100 Continue) come first.
    while text.starts_with("HTTP/1.1 1") {
        text = text
            .split_once("\r\n\r\n")
            .expect("a final response")
            .1
            .to_string();
    }
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        headers: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

fn url(vip: SocketAddr, path: &str) -> String {
    format!("http://{vip}{path}")
}

/// `web.shop` with a local backend "east" in `east_def` and an exported one "west" in
/// `west_def`, the clusters linked, east seeing both healthy.
async fn web_in_east_and_west(
    east_def: &ClusterDef,
    west_def: &ClusterDef,
) -> (HttpBackend, HttpBackend) {
    let (east, west) = (
        HttpBackend::start("east", false).await,
        HttpBackend::start("west", false).await,
    );
    add_web(east_def, &[&east], false);
    add_web(west_def, &[&west], true);
    link(east_def, west_def);
    east_def.wait_imported("web.shop", "west").await;
    east_def.wait_local_healthy("web.shop").await;
    (east, west)
}

/// Sends `args` until the answer's JSON names `want` (a policy takes a snapshot to apply).
fn until_named(vip: SocketAddr, args: &[&str], want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = args.to_vec();
        let u = url(vip, "/");
        all.push(&u);
        let a = curl(&all);
        if a.status == 200 && a.json()["name"] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never reached {want}: {} {}",
            a.status,
            a.body
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_h2c_cross_clusters_with_the_trace_and_streamed_bodies() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.85.0.0/16");
    let west_def = mesh.cluster("west", "127.86.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let west = HttpBackend::start("west", false).await;
    add_web(&west_def, &[&west], true);
    link(&east_def, &west_def);
    east_def.wait_imported("web.shop", "west").await;
    let vip = east_def.vip("web.shop", 8080);

    let trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let a = tokio::task::spawn_blocking(move || {
        curl(&[
            "-H",
            &format!("traceparent: {trace}"),
            &url(vip, "/hello?x=1"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    let j = a.json();
    assert_eq!(
        (j["name"].as_str(), j["version"].as_str()),
        (Some("west"), Some("HTTP/1.1"))
    );
    assert_eq!(j["path"], "/hello");
    let sent = j["headers"]["traceparent"].as_str().unwrap();
    assert!(
        sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
        "{sent}"
    );
    assert_ne!(
        sent, trace,
        "the proxy is a hop of the trace: a new parent id"
    );
    assert_eq!(j["headers"]["x-forwarded-for"], "127.0.0.1");
    // Without a traceparent, one is started.
    let j = tokio::task::spawn_blocking(move || curl(&[&url(vip, "/")]))
        .await
        .unwrap()
        .json();
    let started = j["headers"]["traceparent"].as_str().unwrap();
    assert_eq!(started.len(), 55, "{started}");

    // HTTP/2 with prior knowledge reaches the backend as HTTP/2.
    let j =
        tokio::task::spawn_blocking(move || curl(&["--http2-prior-knowledge", &url(vip, "/h2")]))
            .await
            .unwrap()
            .json();
    assert_eq!(
        (j["version"].as_str(), j["path"].as_str()),
        (Some("HTTP/2.0"), Some("/h2"))
    );

    // Keep-alive: several requests on one connection; a 4 MiB chunked upload streams through.
    let body: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    let path = mesh.path().join("upload.bin");
    std::fs::write(&path, &body).unwrap();
    let upload = format!("@{}", path.display());
    let a = tokio::task::spawn_blocking(move || {
        curl(&[
            "-H",
            "Transfer-Encoding: chunked",
            "--data-binary",
            &upload,
            &url(vip, "/up"),
        ])
    })
    .await
    .unwrap();
    assert_eq!(
        (a.status, a.json()["body_len"].as_u64()),
        (200, Some(4 << 20))
    );
    let before = west.served();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["-sS", "-w", "%{num_connects}\n"])
            .args([url(vip, "/1"), url(vip, "/2"), url(vip, "/3")])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(west.served() - before, 3, "{text}");
    assert!(text.matches("\"name\":\"west\"").count() == 3, "{text}");

    // West's gateway served each request, not a byte stream: every request east sent
    // there is one inbound request at west (7 above, though they rode fewer, pooled
    // tunnel streams), and no inbound TCP connection is counted for the HTTP port.
    let (east_metrics, west_metrics) = (east_def.scrape("up").await, west_def.scrape("up").await);
    let sent = common::sample(
        &east_metrics,
        "ferry_requests_total",
        &[
            ("direction", "outbound"),
            ("service", "web.shop"),
            ("destination_cluster", "west"),
            ("status_code", "200"),
        ],
    );
    let served = common::sample(
        &west_metrics,
        "ferry_requests_total",
        &[
            ("direction", "inbound"),
            ("service", "web.shop"),
            ("source_cluster", "east"),
            ("destination_cluster", "west"),
            ("status_code", "200"),
            ("result", "ok"),
        ],
    );
    assert_eq!((sent, served), (7.0, 7.0), "{west_metrics}");
    let streams = common::sample(
        &west_metrics,
        "ferry_tcp_connections_opened_total",
        &[("direction", "inbound"), ("service", "web.shop")],
    );
    assert_eq!(streams, 0.0, "{west_metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_errors_timeouts_and_retries_follow_the_policy() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.87.0.0/16");
    let west_def = mesh.cluster("west", "127.88.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let (_east_backend, _west_backend) = web_in_east_and_west(&east_def, &west_def).await;
    let vip = east_def.vip("web.shop", 8080);

    let def = east_def.clone();
    tokio::task::spawn_blocking(move || {
        // Local first; a header route sends canaries to west, and only them.
        until_named(vip, &[], "east");
        def.cli_ok(&["policy", "set", "web.shop", "--route", "x-canary=1 -> west"]);
        until_named(vip, &["-H", "x-canary: 1"], "west");
        for _ in 0..10 {
            assert_eq!(
                curl(&["-H", "x-canary: 1", &url(vip, "/")]).json()["name"],
                "west"
            );
            assert_eq!(
                curl(&["-H", "x-canary: 2", &url(vip, "/")]).json()["name"],
                "east"
            );
        }

        // Nowhere to go under the policy: a 503 that says why.
        def.cli_ok(&[
            "policy",
            "set",
            "web.shop",
            "--no-routes",
            "--pinned",
            "north",
        ]);
        let deadline = Instant::now() + Duration::from_secs(10);
        let a = loop {
            let a = curl(&[&url(vip, "/")]);
            if a.status == 503 || Instant::now() > deadline {
                break a;
            }
        };
        assert_eq!(a.status, 503, "{}", a.body);
        assert!(
            a.headers.contains("ferry-error: no_allowed_endpoint"),
            "{}",
            a.headers
        );

        // The policy's timeout: a 504, well before the backend answers.
        def.cli_ok(&[
            "policy",
            "set",
            "web.shop",
            "--failover",
            "--timeout",
            "300ms",
        ]);
        until_named(vip, &[], "east");
        let t = Instant::now();
        let a = curl(&[&url(vip, "/slow")]);
        assert_eq!(a.status, 504, "{}", a.body);
        assert!(a.headers.contains("ferry-error: timeout"), "{}", a.headers);
        assert!(
            t.elapsed() < Duration::from_millis(1500),
            "{:?}",
            t.elapsed()
        );
        def.cli_ok(&["policy", "clear", "web.shop"]);
    })
    .await
    .unwrap();

    // Retries: one of two endpoints always answers 503.
    let (bad, good) = (
        HttpBackend::start("bad", true).await,
        HttpBackend::start("good", false).await,
    );
    let mut args = vec!["service", "add", "flaky.shop", "--port", "http=8081/http"];
    let (b, g) = (bad.addr.to_string(), good.addr.to_string());
    args.extend(["--endpoint", &b, "--endpoint", &g]);
    east_def.cli_ok(&args);
    east_def.wait_local_healthy("flaky.shop").await;
    let vip = east_def.vip("flaky.shop", 8081);
    east_def.cli_ok(&[
        "policy",
        "set",
        "flaky.shop",
        "--retries",
        "2",
        "--retry-on",
        "5xx",
    ]);
    let good_before = good.served();
    tokio::task::spawn_blocking(move || {
        // Wait for the policy, then every GET succeeds: a 503 is retried on the other one.
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ok_in_a_row = 0;
        while ok_in_a_row < 50 {
            assert!(
                Instant::now() < deadline,
                "GETs kept failing with retries on"
            );
            let a = curl(&[&url(vip, "/")]);
            ok_in_a_row = if a.status == 200 { ok_in_a_row + 1 } else { 0 };
        }
    })
    .await
    .unwrap();
    assert!(good.served() - good_before >= 50);
}

/// A backend that switches every request to a byte echo (101), as a WebSocket server
/// switches protocols.
async fn upgrade_echo() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if conn.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                if !text.contains("upgrade: echo") {
                    let _ = conn
                        .write_all(b"HTTP/1.1 426 Upgrade Required\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = conn
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
                    .await;
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_becomes_a_byte_stream_across_clusters() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.89.0.0/16");
    let west_def = mesh.cluster("west", "127.90.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let backend = upgrade_echo().await.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "ws.shop",
        "--port",
        "http=8080/http",
        "--endpoint",
        &backend,
        "--export",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("ws.shop", "west").await;
    let vip = east_def.vip("ws.shop", 8080);

    let mut conn = tokio::net::TcpStream::connect(vip).await.unwrap();
    conn.write_all(
        b"GET /chat HTTP/1.1\r\nhost: ws.shop\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).await.unwrap(),
            1,
            "{}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    for message in [&b"ping"[..], &[7u8; 100_000][..]] {
        conn.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        conn.read_exact(&mut back).await.unwrap();
        assert!(back == message);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_callers_get_a_503_that_says_so() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.91.0.0/16");
    def.append_config_to("[node]", "max_in_flight_per_endpoint = 1");
    let _east = def.up().await;
    let backend = HttpBackend::start("only", false).await;
    add_web(&def, &[&backend], false);
    def.wait_local_healthy("web.shop").await;
    let vip = def.vip("web.shop", 8080);
    let served = backend.served.clone();
    tokio::task::spawn_blocking(move || {
        until_named(vip, &[], "only");
        // The slow request takes the only slot: wait until it reached the backend, with
        // nothing else in flight, before the others are sent.
        let before = served.load(std::sync::atomic::Ordering::SeqCst);
        let slow = std::thread::spawn(move || curl(&[&url(vip, "/slow")]));
        let deadline = Instant::now() + Duration::from_secs(5);
        while served.load(std::sync::atomic::Ordering::SeqCst) == before {
            assert!(Instant::now() < deadline, "the slow request never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
        // While the slow request holds the only endpoint's one slot, others are refused.
        let deadline = Instant::now() + Duration::from_secs(5);
        let refused = loop {
            let a = curl(&[&url(vip, "/")]);
            if a.status == 503 {
                break a;
            }
            assert!(Instant::now() < deadline, "never refused: {}", a.body);
        };
        assert!(
            refused.headers.contains("ferry-error: circuit_open"),
            "{}",
            refused.headers
        );
        assert_eq!(slow.join().unwrap().status, 200);
        assert_eq!(
            curl(&[&url(vip, "/")]).status,
            200,
            "the slot is free again"
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_inside_the_budget_and_splits_follow_their_weights() {
    use common::http::{get_raw, served_by};
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.99.0.0/16");
    let west_def = mesh.cluster("west", "127.100.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;

    // A service whose only endpoint always fails, with generous retries: the budget (20 %
    // of calls plus 10 per second over 10 s) bounds what reaches it, not the retry count.
    let broken = HttpBackend::start("broken", true).await;
    let b = broken.addr.to_string();
    east_def.cli_ok(&[
        "service",
        "add",
        "broken.shop",
        "--port",
        "http=8082/http",
        "--endpoint",
        &b,
    ]);
    east_def.wait_local_healthy("broken.shop").await;
    east_def.cli_ok(&[
        "policy",
        "set",
        "broken.shop",
        "--retries",
        "5",
        "--retry-on",
        "5xx",
    ]);
    let vip = east_def.vip("broken.shop", 8082);
    // The policy reaches the node proxy: some call gets retried.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut warm_up = 0;
    loop {
        let before = broken.served();
        assert_eq!(get_raw(vip, "/").await.map(|a| a.0), Some(503));
        warm_up += 1;
        if broken.served() - before > 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no retry ever happened");
    }
    let before = broken.served();
    for _ in 0..300 {
        let (status, _) = get_raw(vip, "/").await.expect("an answer");
        assert_eq!(status, 503, "the server's own answer passes through");
    }
    let reached = broken.served() - before;
    println!(
        "300 calls with 5 retries each to an always-failing endpoint reached it {reached} times"
    );
    // Every call in the budget's window counts toward its 20 %, warm-up calls included.
    let bound = 300 + (300 + warm_up) / 5 + 100;
    assert!(
        reached <= bound,
        "{reached} attempts (bound {bound}): the budget did not hold"
    );
    assert!(reached > 300, "retries happened");
    // Each call is counted once, retries or not, with the server's status.
    let counted = east_def.metric("ferry_requests_total", "service=\"broken.shop\"");
    assert_eq!(counted, 300 + warm_up as u64);
    let as_503 = east_def.metric("ferry_requests_total", "status_code=\"503\"");
    assert_eq!(as_503, counted, "every one of them answered 503");

    // A weighted HTTP split: 2000 requests within 5 % of 80/20.
    let (east, west) = web_in_east_and_west(&east_def, &west_def).await;
    east_def.cli_ok(&["policy", "set", "web.shop", "--weights", "east=80,west=20"]);
    let vip = east_def.vip("web.shop", 8080);
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_by(vip).await.as_deref() != Some("west") {
        assert!(
            Instant::now() < deadline,
            "the split never sent a request west"
        );
    }
    let (e0, w0) = (east.served(), west.served());
    for _ in 0..100 {
        let calls: Vec<_> = (0..20).map(|_| tokio::spawn(served_by(vip))).collect();
        for c in calls {
            assert!(c.await.unwrap().is_some());
        }
    }
    let (e, w) = (east.served() - e0, west.served() - w0);
    assert_eq!(e + w, 2000);
    assert!(
        (1500..=1700).contains(&e),
        "east served {e} of 2000, west {w}"
    );
    // The request metrics name where each call went (and the warm-up calls that went west).
    let to_west = east_def.metric("ferry_requests_total", "destination_cluster=\"west\"");
    let w = w as u64;
    assert!(
        (w..w + 200).contains(&to_west),
        "{to_west} counted, {w} served in the split"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_and_head_get_their_answers_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("east", "127.101.0.0/16");
    let _east = def.up().await;
    let backend = HttpBackend::start("east", false).await;
    add_web(&def, &[&backend], false);
    def.wait_local_healthy("web.shop").await;
    let vip = def.vip("web.shop", 8080);
    let deadline = Instant::now() + Duration::from_secs(10);
    while common::http::served_by(vip).await.is_none() {
        assert!(Instant::now() < deadline, "web.shop never answered");
    }

    // Three requests written at once on one connection, the middle one HEAD: three
    // answers in order, the HEAD one without a body.
    let mut conn = tokio::net::TcpStream::connect(vip).await.unwrap();
    conn.write_all(
        b"GET /one HTTP/1.1\r\nhost: web.shop\r\n\r\n\
          HEAD /two HTTP/1.1\r\nhost: web.shop\r\n\r\n\
          GET /three HTTP/1.1\r\nhost: web.shop\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out))
        .await
        .expect("answers in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    let one = text.find("\"path\":\"/one\"").expect("the first answer");
    let three = text.find("\"path\":\"/three\"").expect("the third answer");
    assert!(one < three, "{text}");
    assert!(
        !text.contains("\"path\":\"/two\""),
        "HEAD got a body: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_upstream_streams_serve_only_the_service_they_were_admitted_for() {
    use common::http::served_by;
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.102.0.0/16");
    let west_def = mesh.cluster("west", "127.103.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let (a, b) = (
        HttpBackend::start("a", false).await,
        HttpBackend::start("b", false).await,
    );
    for (name, backend) in [("a.shop", &a), ("b.shop", &b)] {
        let addr = backend.addr.to_string();
        west_def.cli_ok(&[
            "service",
            "add",
            name,
            "--port",
            "http=8080/http",
            "--endpoint",
            &addr,
            "--export",
        ]);
    }
    link(&east_def, &west_def);
    east_def.wait_imported("a.shop", "west").await;
    east_def.wait_imported("b.shop", "west").await;
    let (vip_a, vip_b) = (east_def.vip("a.shop", 8080), east_def.vip("b.shop", 8080));
    // Alternating calls: each goes back to the pool between them, and the pool holds
    // tunnel streams of both services to the same cluster.
    for i in 0..40 {
        let (vip, want) = if i % 2 == 0 {
            (vip_a, "a")
        } else {
            (vip_b, "b")
        };
        assert_eq!(served_by(vip).await.as_deref(), Some(want), "call {i}");
    }
}
