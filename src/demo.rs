//! `ferry demo`: the embedded default. Builds a two-cluster mesh on loopback in a
//! temporary directory (root CA, clusters `east` and `west` as separate `ferry up`
//! processes), links them with a token, exports an HTTP service from `west` and calls
//! it from `east` through the node proxy and the QUIC gateways. Exit 0 only if the
//! answer really came from `west`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::status_error;
use crate::pb;
use crate::testkit::{free_vip_range, spawn_up, wait_imported, wait_ready, ClusterSpec};

fn step(n: usize, msg: &str) {
    println!("[{n}] {msg}");
}

/// A tiny HTTP/1.1 server answering every request with `hello from <name>`.
pub async fn serve_http(listener: TcpListener, name: String) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
                if seen.len() > 64 * 1024 {
                    return;
                }
            }
            let body = format!("hello from {name}\n");
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nx-served-by: {name}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// `ferry sample-http`: the same server as a process.
pub async fn sample_http(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    serve_http(listener, name).await;
    Ok(())
}

/// Sends one HTTP GET to `addr` and returns the response body.
pub async fn http_get(addr: SocketAddr, host: &str) -> anyhow::Result<String> {
    let mut conn = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    let req = format!("GET / HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    conn.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut resp))
        .await
        .context("no answer within 5 s")??;
    let text = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {text:?}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("unexpected response: {head}");
    }
    Ok(body.to_owned())
}

/// Waits for a cluster's DNS server to record its address in `<dir>/<name>-data/dns.addr`.
async fn read_dns_addr(dir: &Path, name: &str, timeout: Duration) -> anyhow::Result<SocketAddr> {
    let file = dir
        .join(format!("{name}-data"))
        .join(crate::roles::dns::ADDR_FILE);
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(&file) {
            if let Ok(addr) = text.trim().parse() {
                return Ok(addr);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "cluster {name}'s DNS server did not start within {timeout:?} (no {})",
                file.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks the DNS server at `server` for the A record of `name` over UDP, retrying until it
/// answers NOERROR with an address or `timeout` passes.
pub async fn resolve(
    server: SocketAddr,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<std::net::IpAddr> {
    use hickory_proto::op::{Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    let mut query = Message::query();
    query.add_query(Query::query(Name::from_ascii(name)?, RecordType::A));
    query.metadata.recursion_desired = true;
    let bytes = query.to_vec()?;
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        socket.send_to(&bytes, server).await?;
        let mut buf = vec![0u8; 1500];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(500), socket.recv_from(&mut buf)).await
        {
            if let Ok(reply) = Message::from_vec(&buf[..n]) {
                if reply.metadata.id == query.metadata.id {
                    let ip = reply.answers.iter().find_map(|r| match &r.data {
                        RData::A(a) => Some(std::net::IpAddr::V4(a.0)),
                        RData::AAAA(a) => Some(std::net::IpAddr::V6(a.0)),
                        _ => None,
                    });
                    match (reply.metadata.response_code, ip) {
                        (ResponseCode::NoError, Some(ip)) => return Ok(ip),
                        (code, _) => last = code.to_string(),
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!(
        "{name} did not resolve through {server} within {timeout:?} (last answer: {last})"
    )
}

/// Runs the demo. With `keep`, stays up until Ctrl-C.
pub async fn run(keep: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new().prefix("ferry-demo-").tempdir()?;
    let result = tokio::select! {
        r = demo(dir.path(), keep) => r,
        _ = crate::up::shutdown_signal() => {
            println!("interrupted; stopping the clusters");
            Ok(())
        }
    };
    if keep {
        println!(
            "(the demo directory {} is removed now)",
            dir.path().display()
        );
    }
    result
}

async fn demo(dir: &Path, keep: bool) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("ferry demo: two clusters on loopback, in {}", dir.display());
    step(
        1,
        "creating the mesh root CA (trust domain demo.ferry) and cluster CAs for east and west",
    );
    let root = dir.join("root");
    crate::trust::init(&"demo.ferry".parse()?, &root)?;
    for name in ["east", "west"] {
        crate::trust::issue(&root, &name.parse()?, &dir.join(format!("{name}-ca")), None)?;
    }
    step(
        2,
        "starting `ferry up` for east and west (separate processes)",
    );
    // VIP ranges no running cluster uses (the example configs take 127.10/16 and 127.20/16),
    // so the demo works beside one; every other port is chosen by the kernel.
    let east_range = free_vip_range(8080, &[])?;
    let west_range = free_vip_range(8080, &[east_range])?;
    let exe = std::env::current_exe().context("cannot find the ferry binary")?;
    let east_cfg = ClusterSpec::new("east", &format!("127.{east_range}.0.0/16")).write(dir)?;
    let west_cfg = ClusterSpec::new("west", &format!("127.{west_range}.0.0/16")).write(dir)?;
    let mut east = spawn_up(&exe, dir, "east", &east_cfg)?;
    let mut west = spawn_up(&exe, dir, "west", &west_cfg)?;
    let mut east_c = wait_ready(&mut east, Duration::from_secs(20)).await?;
    let mut west_c = wait_ready(&mut west, Duration::from_secs(20)).await?;
    let backend = TcpListener::bind("127.0.0.1:0").await?;
    let backend_addr = backend.local_addr()?;
    tokio::spawn(serve_http(backend, "west".into()));
    step(3, &format!("west: service web.shop (http=8080/http) backed by an HTTP server on {backend_addr}, exported"));
    west_c
        .add_service(pb::AddServiceRequest {
            name: "web.shop".into(),
            ports: vec!["http=8080/http".into()],
            endpoints: vec![backend_addr.to_string()],
            export: true,
            headless: false,
        })
        .await
        .map_err(status_error)?;
    step(
        4,
        "east: `ferry link create --peer west`; west: `ferry link join <token>`",
    );
    let token = east_c
        .create_link_token(pb::CreateLinkTokenRequest {
            peer: "west".into(),
            ttl_seconds: 900,
        })
        .await
        .map_err(status_error)?
        .into_inner()
        .token;
    let link = west_c
        .join_link(pb::JoinLinkRequest { token })
        .await
        .map_err(status_error)?
        .into_inner();
    println!(
        "    linked: west <-> {} (gateways {})",
        link.peer,
        link.gateways.join(", ")
    );
    step(
        5,
        "waiting for east to import web.shop with a healthy endpoint in west",
    );
    let svc = wait_imported(&mut east_c, "web.shop", "west", Duration::from_secs(15)).await?;
    println!(
        "    east sees web.shop at VIP {} (local endpoints: {}, remote: {})",
        svc.vip,
        svc.local.len(),
        svc.remote
            .iter()
            .map(|r| r.cluster.clone())
            .collect::<Vec<_>>()
            .join(",")
    );
    let name = "web.shop.svc.clusterset.local";
    let dns = read_dns_addr(dir, "east", Duration::from_secs(10)).await?;
    step(
        6,
        &format!("east: resolving {name} through east's mesh DNS ({dns}); by hand:"),
    );
    println!("{}", crate::roles::dns::dig_command(dns, name));
    let vip = resolve(dns, name, Duration::from_secs(10)).await?;
    println!("    {name} -> {vip} (east's VIP for web.shop; the service runs only in west)");
    if vip.to_string() != svc.vip {
        anyhow::bail!(
            "DNS answered {vip}, but east's VIP for web.shop is {}",
            svc.vip
        );
    }
    let target = SocketAddr::new(vip, 8080);
    step(
        7,
        &format!("east: calling http://{name}:8080/ = {target} through east's node proxy"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match http_get(target, name).await {
            Ok(b) => break b,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "call not through yet; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.context("the cross-cluster call failed")),
        }
    };
    println!("    answer: {}", body.trim());
    let crossed = body.trim() == "hello from west" && svc.local.is_empty();
    println!();
    println!("summary:");
    println!("  clusters      east, west (one root, trust domain demo.ferry)");
    println!("  link          east <-> west over QUIC (mTLS, SPIFFE identities)");
    println!("  name          {name} -> {vip} (east's mesh DNS)");
    println!("  call          east node proxy -> west gateway -> web.shop endpoint in west");
    println!("  answer        {}", body.trim());
    println!("  elapsed       {:.1?}", started.elapsed());
    if !crossed {
        anyhow::bail!("the answer did not come from west: {body:?}");
    }
    println!("  result        OK: the call crossed clusters");
    if keep {
        let exe = std::env::current_exe()?;
        println!();
        println!("the mesh stays up; try (Ctrl-C to stop):");
        println!("  curl http://{target}/");
        println!("  {}", crate::roles::dns::dig_command(dns, name));
        println!(
            "  {} --control {} services",
            exe.display(),
            east.socket.display()
        );
        println!(
            "  {} --control {} link list",
            exe.display(),
            west.socket.display()
        );
        println!(
            "  {} --control {} unexport web.shop",
            exe.display(),
            west.socket.display()
        );
        println!(
            "  logs: {}/east.log {}/west.log",
            dir.display(),
            dir.display()
        );
        std::future::pending::<()>().await;
    }
    let _ = east.child.kill().await;
    let _ = west.child.kill().await;
    Ok(())
}
