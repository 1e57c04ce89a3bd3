//! What must be refused: unexported services, unlinked clusters, clusters from another
//! root, bad link tokens; and `link remove` closing the peer's open streams.

mod common;

use std::time::{Duration, Instant};

use common::*;
use ferry_federation::{Refusal, TunnelHeader};
use ferry_gateway::tunnel::TunnelError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header(service: &str, port: &str) -> TunnelHeader {
    tunnel_header(service, port, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_linked_clusters_reach_only_exported_services() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.41.0.0/16");
    let west_def = mesh.cluster("west", "127.42.0.0/16");
    let north_def = mesh.cluster("north", "127.43.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let _north = north_def.up().await;

    let public = Echo::start().await;
    let secret = Echo::start().await;
    let public_ep = public.addr.to_string();
    let secret_ep = secret.addr.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "echo.shop",
        "--port",
        "tcp=7000",
        "--endpoint",
        &public_ep,
        "--export",
    ]);
    west_def.cli_ok(&[
        "service",
        "add",
        "secret.shop",
        "--port",
        "tcp=7000",
        "--endpoint",
        &secret_ep,
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    assert!(
        east_def.service("secret.shop").is_none(),
        "unexported services are invisible"
    );
    let west_gw = west_def.gateways();

    // A linked cluster's node: exported service works...
    let east_node = east_def.node_client().await;
    let west: ferry_federation::ClusterId = "west".parse().unwrap();
    let (mut send, mut recv) = east_node
        .open(&west, &west_gw, &header("echo.shop", "tcp"))
        .await
        .unwrap();
    send.write_all(b"ping").await.unwrap();
    send.finish().unwrap();
    let back = recv.read_to_end(1024).await.unwrap();
    assert_eq!(back, b"ping");

    // ...an unexported one is refused, and so is an unknown one, with the same answer.
    for svc in ["secret.shop", "nothing.shop"] {
        match east_node.open(&west, &west_gw, &header(svc, "tcp")).await {
            Err(TunnelError::Refused { refusal, .. }) => {
                assert_eq!(refusal, Refusal::NotExported, "{svc}")
            }
            Err(e) => panic!("{svc}: wrong error {e}"),
            Ok(_) => panic!("{svc} must be refused"),
        }
    }
    match east_node
        .open(&west, &west_gw, &header("echo.shop", "nope"))
        .await
    {
        Err(TunnelError::Refused { refusal, .. }) => assert_eq!(refusal, Refusal::UnknownPort),
        other => panic!("unknown port must be refused, got {:?}", other.map(|_| ())),
    }
    // The same with the caller's first bytes sent right behind the header (a new proxied
    // connection does not wait for the status): refused all the same, nothing reaches the
    // backend, and the bytes are handed back.
    let mut early = Vec::new();
    let mut caller: &[u8] = b"GET /secret HTTP/1.1\r\n\r\n";
    match east_node
        .open_pipelined(
            &west,
            &west_gw,
            &header("secret.shop", "tcp"),
            &mut caller,
            &mut early,
        )
        .await
    {
        Err(TunnelError::Refused { refusal, .. }) => assert_eq!(refusal, Refusal::NotExported),
        other => panic!("must be refused, got {:?}", other.map(|_| ())),
    }
    // Whatever went out before the refusal (all, some or none of it) comes back.
    assert!(
        b"GET /secret HTTP/1.1\r\n\r\n".starts_with(&early),
        "{early:?}"
    );
    assert_eq!(
        secret.accepted(),
        0,
        "the unexported backend never saw a connection"
    );
    assert!(west_def.metric("ferry_gateway_refusals_total", "reason=\"not_exported\"") >= 2);

    // A cluster from the same root that is not linked: refused, backend untouched.
    let before = public.accepted();
    let north_node = north_def.node_client().await;
    let err = match north_node
        .open(&west, &west_gw, &header("echo.shop", "tcp"))
        .await
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unlinked cluster must be refused"),
    };
    assert!(err.contains("unknown_peer"), "{err}");
    assert_eq!(public.accepted(), before);
    assert!(west_def.metric("ferry_gateway_refusals_total", "reason=\"unknown_peer\"") >= 1);

    // A cluster from another root: refused at the handshake.
    let other = Mesh::new("example.org");
    let south_def = other.cluster("south", "127.44.0.0/16");
    let _south = south_def.up().await;
    let south_node = south_def.node_client().await;
    let err = match south_node
        .open(&west, &west_gw, &header("echo.shop", "tcp"))
        .await
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a cluster from another root must be refused"),
    };
    assert!(
        !err.contains("refused the stream"),
        "must fail at the handshake, got: {err}"
    );
    assert!(west_def.metric("ferry_gateway_handshake_failures_total", "") >= 1);
    assert_eq!(public.accepted(), before);
}

/// `ferry link join <token>` on `def` must fail within 1 s with `needle` in its error.
fn assert_join_refused(def: &ClusterDef, token: &str, needle: &str) {
    let start = Instant::now();
    let out = def.cli(&["link", "join", token]);
    let took = start.elapsed();
    assert!(!out.status.success(), "join with a bad token must fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(needle), "{err}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_quickly_and_change_nothing() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.51.0.0/16");
    let west_def = mesh.cluster("west", "127.52.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let other = Mesh::new("other.org");
    let far_def = other.cluster("far", "127.53.0.0/16");
    let _far = far_def.up().await;

    // Tampered: one character changed.
    let token = east_def.token_for("west", &[]);
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert_join_refused(&west_def, &tampered, "modified");

    // Issued for another peer.
    let for_north = east_def.token_for("north", &[]);
    assert_join_refused(&west_def, &for_north, "issued for peer `north`");

    // From a mesh with another root.
    let foreign = far_def.token_for("west", &[]);
    assert_join_refused(&west_def, &foreign, "another root");

    // Expired.
    let short = east_def.token_for("west", &["--ttl", "1s"]);
    tokio::time::sleep(Duration::from_millis(2100)).await; // let the token's lifetime pass
    assert_join_refused(&west_def, &short, "expired");

    // Nothing changed on either side.
    for def in [&east_def, &west_def] {
        let links: Vec<serde_json::Value> = def.links();
        assert!(links.is_empty(), "{}: {links:?}", def.name);
    }

    // Used twice: the first join links, the second is refused by the issuer.
    west_def.cli_ok(&["link", "join", &token]);
    assert_join_refused(&west_def, &token, "already used");
    let links: Vec<serde_json::Value> = east_def.links();
    assert_eq!(links.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_remove_closes_open_streams_within_2s() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.61.0.0/16");
    let west_def = mesh.cluster("west", "127.62.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let echo = Echo::start().await;
    west_def.add_exported_echo(&echo);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    let vip = east_def.vip("echo.shop", 7000);

    let mut conn = tokio::net::TcpStream::connect(vip).await.unwrap();
    conn.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    conn.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"hello");

    let removed_at = Instant::now();
    west_def.cli_ok(&["link", "remove", "east"]);
    let mut rest = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut rest)).await;
    match read {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("unexpected {n} bytes after link removal"),
        Err(_) => panic!("the open stream was not closed within 2 s"),
    }
    assert!(removed_at.elapsed() <= Duration::from_secs(2));

    // New calls are refused, and east forgets the link (west said goodbye).
    let e = east_def.clone();
    wait_for("east drops the link", Duration::from_secs(5), || {
        let e = e.clone();
        async move {
            let links: Vec<serde_json::Value> = e.links();
            links.is_empty()
        }
    })
    .await;
    let before = echo.accepted();
    let result = echo_roundtrip(vip, b"again").await;
    assert!(
        result.map(|b| b.is_empty()).unwrap_or(true),
        "calls after removal must fail"
    );
    assert_eq!(echo.accepted(), before);
}

/// A caller's bytes that went out behind the header to a cluster that then answered "no
/// endpoints" are kept and replayed to the next cluster exporting the service: the call
/// succeeds there, whole, and the first cluster's backend saw nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_bytes_refused_by_one_cluster_are_replayed_to_the_next() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.45.0.0/16");
    let west_def = mesh.cluster("west", "127.46.0.0/16");
    let north_def = mesh.cluster("north", "127.47.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let _north = north_def.up().await;
    // West's only endpoint is a closed port: never healthy, so west refuses `no_endpoints`.
    west_def.add_dead_echo();
    let echo = Echo::start().await;
    north_def.add_exported_echo(&echo);
    link(&east_def, &west_def);
    link(&east_def, &north_def);
    east_def.wait_imported("echo.shop", "north").await;

    let node = east_def.node_client().await;
    let (west, north): (ferry_federation::ClusterId, ferry_federation::ClusterId) =
        ("west".parse().unwrap(), "north".parse().unwrap());
    let hdr = header("echo.shop", "tcp");
    // "first " was taken by an earlier attempt; "bytes" is still with the caller (this
    // attempt may or may not take some of it before west's refusal arrives).
    let mut early = b"first ".to_vec();
    let mut caller: &[u8] = b"bytes";
    match node
        .open_pipelined(&west, &west_def.gateways(), &hdr, &mut caller, &mut early)
        .await
    {
        Err(e @ TunnelError::Refused { .. }) => {
            assert!(e.try_next_cluster(), "{e}");
        }
        other => panic!("west must refuse, got {:?}", other.map(|_| ())),
    }
    assert!(early.starts_with(b"first ") && b"first bytes".starts_with(&early));
    let (mut send, mut recv) = node
        .open_pipelined(&north, &north_def.gateways(), &hdr, &mut caller, &mut early)
        .await
        .expect("north serves the call");
    assert!(
        early.starts_with(b"first ") && b"first bytes".starts_with(&early),
        "what the stream carried: {early:?}"
    );
    send.write_all(b" and the rest").await.unwrap();
    send.finish().unwrap();
    let back = recv.read_to_end(1024).await.unwrap();
    assert_eq!(back, b"first bytes and the rest");
    assert_eq!(echo.accepted(), 1);
}

/// A linked peer on a stream of HTTP requests (what its node proxies open for `http`
/// ports) is served request by request, and still only the service the stream was admitted
/// for: a `Host` or an absolute URI naming another service changes nothing, bytes that are
/// not HTTP get a 400 and the end of that stream only, and an unexport cuts the open stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_on_an_http_stream_reaches_only_what_the_stream_was_admitted_for() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.63.0.0/16");
    let west_def = mesh.cluster("west", "127.64.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let web = common::http::HttpBackend::start("web", false).await;
    let secret = common::http::HttpBackend::start("secret", false).await;
    common::http::add_web(&west_def, &[&web], true);
    west_def.cli_ok(&[
        "service",
        "add",
        "secret.shop",
        "--port",
        "http=8080/http",
        "--endpoint",
        &secret.addr.to_string(),
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("web.shop", "west").await;
    let (west, west_gw) = ("west".parse().unwrap(), west_def.gateways());
    let peer = east_def.node_client().await;
    let mut http = header("web.shop", "http");
    http.carries = ferry_federation::Carries::Http;

    let (mut send, mut recv) = peer.open(&west, &west_gw, &http).await.unwrap();
    for request in [
        "GET /a HTTP/1.1\r\nhost: secret.shop\r\n\r\n",
        "GET http://secret.shop:8080/b HTTP/1.1\r\nhost: secret.shop\r\n\r\n",
    ] {
        send.write_all(request.as_bytes()).await.unwrap();
        let answer = read_response(&mut recv).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains("\"name\":\"web\""), "{answer}");
    }
    assert_eq!((web.served(), secret.served()), (2, 0));
    // An upgrade asked on a stream of requests is answered, not spliced: upgrades go on a
    // byte stream of their own, which admission keeps cutting while it flows.
    send.write_all(
        b"GET /ws HTTP/1.1\r\nhost: web\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_response(&mut recv).await;
    assert!(
        answer.starts_with("HTTP/1.1 400") && answer.contains("upgrade_on_request_stream"),
        "{answer}"
    );
    assert_eq!(web.served(), 2);

    // Not HTTP: a 400 and the end of this stream; the gateway goes on serving others.
    let (mut bad_send, mut bad_recv) = peer.open(&west, &west_gw, &http).await.unwrap();
    bad_send
        .write_all(b"\x16\x03\x01 not a request\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        AsyncReadExt::read_to_end(&mut bad_recv, &mut answer),
    )
    .await
    .expect("the gateway ends a stream that does not speak HTTP");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );
    send.write_all(b"GET /c HTTP/1.1\r\nhost: web\r\n\r\n")
        .await
        .unwrap();
    assert!(read_response(&mut recv).await.starts_with("HTTP/1.1 200"));

    // An HTTP/2 stream with a slow request in progress (hyper serves each HTTP/2 request
    // in a task of its own): the cut ends that request too, well before its answer.
    let (h2_send, h2_recv) = peer.open(&west, &west_gw, &http).await.unwrap();
    let (mut h2, h2_conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tokio::io::join(h2_recv, h2_send)),
    )
    .await
    .unwrap();
    tokio::spawn(h2_conn);
    let slow = hyper::Request::get("http://web/slow")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let slow = tokio::spawn(async move { h2.send_request(slow).await.map(|r| r.status()) });
    let before = web.served();
    let started = Instant::now();
    wait_for(
        "the slow request reaches the endpoint",
        Duration::from_secs(5),
        || {
            let web = web.served.clone();
            async move { web.load(std::sync::atomic::Ordering::SeqCst) > before }
        },
    )
    .await;

    // Unexported while the streams are open: they are cut within 2 s.
    west_def.cli_ok(&["unexport", "web.shop"]);
    let cut = tokio::time::timeout(Duration::from_secs(2), async {
        let mut buf = [0u8; 64];
        loop {
            match recv.read(&mut buf).await {
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(cut.is_ok(), "the open HTTP stream outlived the unexport");
    let slow = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the slow request ends")
        .unwrap();
    assert!(slow.is_err(), "{slow:?}");
    // West's gateway ended it then: counted as cut (not_exported), not served at 2 s.
    let cut_requests = [
        ("direction", "inbound"),
        ("service", "web.shop"),
        ("result", "not_exported"),
    ];
    let west_metrics = west_def.scrape("up").await;
    assert_eq!(
        sample(&west_metrics, "ferry_requests_total", &cut_requests),
        1.0,
        "{west_metrics}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1900),
        "the cut came after the slow answer would have: {:?}",
        started.elapsed()
    );
    let refused = peer.open(&west, &west_gw, &http).await;
    assert!(
        matches!(
            refused,
            Err(TunnelError::Refused {
                refusal: Refusal::NotExported,
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(secret.served(), 0);
}

/// One HTTP/1.1 response with a `content-length` body, read from a tunnel stream.
async fn read_response(recv: &mut quinn::RecvStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = String::from_utf8_lossy(&got).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, recv.read(&mut buf)).await {
            Ok(Ok(Some(n))) => got.extend_from_slice(&buf[..n]),
            other => panic!("no whole response: {other:?}; so far {text:?}"),
        }
    }
}
