//! Cross-cluster data-path benchmark: the same traffic over a direct loopback TCP
//! connection and through Ferry (east node proxy -> QUIC -> west gateway -> endpoint),
//! measured in one run, printed as a table with ratios. Run with `tests/bench/run.sh`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ferry::pb;
use ferry::testkit::{free_vip_range, spawn_up, wait_imported, wait_ready, ClusterSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MSG: usize = 64;

/// Echo for latency, or (when the first byte is `S`) a sink that answers the byte count.
async fn server(listener: TcpListener) {
    loop {
        let Ok((mut c, _)) = listener.accept().await else {
            continue;
        };
        let _ = c.set_nodelay(true);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            let mut first = [0u8; 1];
            if c.read_exact(&mut first).await.is_err() {
                return;
            }
            if first[0] == b'S' {
                let mut total = 0u64;
                loop {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                let _ = c.write_all(&total.to_be_bytes()).await;
                return;
            }
            let mut pending = first.to_vec();
            loop {
                if !pending.is_empty() && c.write_all(&pending).await.is_err() {
                    return;
                }
                pending.clear();
                match c.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            }
        });
    }
}

async fn latency(addr: SocketAddr, rounds: usize) -> anyhow::Result<(f64, f64)> {
    let mut c = TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let msg = [b'p'; MSG];
    let mut back = [0u8; MSG];
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds + 100 {
        let t = Instant::now();
        c.write_all(&msg).await?;
        c.read_exact(&mut back).await?;
        if i >= 100 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| samples[((samples.len() as f64 - 1.0) * q) as usize];
    Ok((p(0.50), p(0.99)))
}

async fn throughput(addr: SocketAddr, bytes: usize) -> anyhow::Result<f64> {
    let mut c = TcpStream::connect(addr).await?;
    let chunk = vec![0x5au8; 64 * 1024];
    let t = Instant::now();
    c.write_all(b"S").await?;
    let mut sent = 0;
    while sent < bytes {
        let n = chunk.len().min(bytes - sent);
        c.write_all(&chunk[..n]).await?;
        sent += n;
    }
    c.shutdown().await?;
    let mut count = [0u8; 8];
    c.read_exact(&mut count).await?;
    let secs = t.elapsed().as_secs_f64();
    anyhow::ensure!(
        u64::from_be_bytes(count) == bytes as u64,
        "sink saw a different byte count"
    );
    Ok(bytes as f64 / secs / 1e6 * 8.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    let mib: usize = std::env::var("MIB")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let ferry_bin = std::env::current_exe()?
        .parent()
        .map(|d| d.join("ferry"))
        .filter(|p| p.exists())
        .context("build the `ferry` binary next to ferry-bench (cargo build --release)")?;
    let dir = tempfile::Builder::new().prefix("ferry-bench-").tempdir()?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend = listener.local_addr()?;
    tokio::spawn(server(listener));

    let root = dir.path().join("root");
    ferry::trust::init(&"bench.ferry".parse()?, &root)?;
    for name in ["east", "west"] {
        ferry::trust::issue(
            &root,
            &name.parse()?,
            &dir.path().join(format!("{name}-ca")),
        )?;
    }
    let east_range = free_vip_range(9000, &[])?;
    let west_range = free_vip_range(9000, &[east_range])?;
    let east_cfg =
        ClusterSpec::new("east", &format!("127.{east_range}.0.0/16")).write(dir.path())?;
    let west_cfg =
        ClusterSpec::new("west", &format!("127.{west_range}.0.0/16")).write(dir.path())?;
    let mut east = spawn_up(&ferry_bin, dir.path(), "east", &east_cfg)?;
    let mut west = spawn_up(&ferry_bin, dir.path(), "west", &west_cfg)?;
    let mut ec = wait_ready(&mut east, Duration::from_secs(30)).await?;
    let mut wc = wait_ready(&mut west, Duration::from_secs(30)).await?;
    wc.add_service(pb::AddServiceRequest {
        name: "bench.perf".into(),
        ports: vec!["tcp=9000/tcp".into()],
        endpoints: vec![backend.to_string()],
        export: true,
        headless: false,
    })
    .await?;
    let token = ec
        .create_link_token(pb::CreateLinkTokenRequest {
            peer: "west".into(),
            ttl_seconds: 60,
        })
        .await?
        .into_inner()
        .token;
    wc.join_link(pb::JoinLinkRequest { token }).await?;
    let svc = wait_imported(&mut ec, "bench.perf", "west", Duration::from_secs(20)).await?;
    let vip = SocketAddr::new(svc.vip.parse()?, 9000);
    // Warm the pooled QUIC connection.
    let warm_deadline = Instant::now() + Duration::from_secs(10);
    while latency(vip, 10).await.is_err() {
        anyhow::ensure!(
            Instant::now() < warm_deadline,
            "the mesh path never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    println!("ferry-bench: {rounds} round trips of {MSG} B, {mib} MiB single-stream; direct loopback TCP vs east->west through Ferry");
    let (d50, d99) = latency(backend, rounds).await?;
    let (f50, f99) = latency(vip, rounds).await?;
    let dt = throughput(backend, mib << 20).await?;
    let ft = throughput(vip, mib << 20).await?;
    let mut table = comfy_table::Table::new();
    table.set_header(vec![
        "metric",
        "direct TCP",
        "ferry cross-cluster",
        "ratio (ferry/direct)",
    ]);
    table.add_row(vec![
        "RTT p50 (µs)".to_string(),
        format!("{d50:.1}"),
        format!("{f50:.1}"),
        format!("{:.2}x", f50 / d50),
    ]);
    table.add_row(vec![
        "RTT p99 (µs)".to_string(),
        format!("{d99:.1}"),
        format!("{f99:.1}"),
        format!("{:.2}x", f99 / d99),
    ]);
    table.add_row(vec![
        "throughput (Mbit/s)".to_string(),
        format!("{dt:.0}"),
        format!("{ft:.0}"),
        format!("{:.2}x", ft / dt),
    ]);
    println!("{table}");
    let _ = east.child.kill().await;
    let _ = west.child.kill().await;
    Ok(())
}
