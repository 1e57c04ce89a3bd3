//! Test harness: real `ferry` processes on loopback, driven through the real CLI.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferry::pb;
use ferry::testkit::ClusterSpec;
use ferry_federation::TunnelHeader;
use ferry_gateway::tls::{IdentityStore, TrustStore};
use ferry_gateway::tunnel::TunnelClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

pub mod dns;
pub mod http;
pub mod rogue;

pub const FERRY: &str = env!("CARGO_BIN_EXE_ferry");

/// Waits for `cond` to hold, polling, failing the test with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !cond().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for `cond` (a blocking check, e.g. a CLI call) to hold on `def`, failing the test
/// with `what` after `timeout`.
pub async fn wait_until(
    def: &ClusterDef,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&ClusterDef) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !cond(def) {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what} in {}",
            def.name
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A mesh root in a temporary directory.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

impl Mesh {
    pub fn new(trust_domain: &str) -> Mesh {
        let dir = tempfile::Builder::new()
            .prefix("ferry-test-")
            .tempdir()
            .unwrap();
        let root = dir.path().join("root");
        run_ok(&[
            "trust",
            "init",
            "--trust-domain",
            trust_domain,
            "--out",
            root.to_str().unwrap(),
        ]);
        Mesh { dir, root }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a cluster's CA and config; does not start it.
    pub fn cluster(&self, name: &str, vip_range: &str) -> ClusterDef {
        let ca = self.path().join(format!("{name}-ca"));
        run_ok(&[
            "trust",
            "issue",
            "--root",
            self.root.to_str().unwrap(),
            "--cluster",
            name,
            "--out",
            ca.to_str().unwrap(),
        ]);
        let config = ClusterSpec::new(name, vip_range)
            .health_interval("300ms")
            .write(self.path())
            .unwrap();
        ClusterDef {
            name: name.to_owned(),
            config,
            socket: self.path().join(format!("{name}.sock")),
            log_dir: self.path().to_owned(),
        }
    }
}

/// A cluster's files.
#[derive(Clone)]
pub struct ClusterDef {
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub log_dir: PathBuf,
}

/// A running cluster: its processes are killed on drop.
pub struct Cluster {
    pub def: ClusterDef,
    pub procs: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn spawn_role(def: &ClusterDef, role: &str) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(def.log_dir.join(format!("{}-{role}.log", def.name)))
        .unwrap();
    Command::new(FERRY)
        .args([role, "--config", def.config.to_str().unwrap()])
        .env(
            "RUST_LOG",
            std::env::var("FERRY_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap()
}

impl ClusterDef {
    /// Appends TOML to the cluster's config (e.g. a `[dns]` section), before it starts.
    pub fn append_config(&self, toml: &str) {
        let mut text = std::fs::read_to_string(&self.config).unwrap();
        text.push_str(toml);
        std::fs::write(&self.config, text).unwrap();
    }

    /// Adds `lines` right after the config's `section` header (e.g. `[node]`).
    pub fn append_config_to(&self, section: &str, lines: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let needle = format!("{section}\n");
        assert!(text.contains(&needle), "no {section} in the config");
        let text = text.replacen(&needle, &format!("{needle}{lines}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }

    /// Adds `key = value` lines to the config's `[federation]` section (a later key wins
    /// over the default written there), before the cluster starts.
    pub fn federation_config(&self, lines: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let mut out = String::new();
        for line in text.lines() {
            if line.starts_with("allow_loopback_gateways")
                && lines.contains("allow_loopback_gateways")
            {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if line == "[federation]" {
                out.push_str(lines);
                if !lines.ends_with('\n') {
                    out.push('\n');
                }
            }
        }
        std::fs::write(&self.config, out).unwrap();
    }

    /// The admin listener `role` (`up`, `control`, `gateway`, `node`, `dns`) recorded in
    /// the data directory, once it is there.
    pub async fn admin_addr(&self, role: &str) -> SocketAddr {
        let file = self.data_dir().join(format!("admin-{role}.addr"));
        wait_addr_file(&format!("{} admin address ({role})", self.name), file).await
    }

    /// The Prometheus text `GET /metrics` returns on `role`'s admin listener.
    pub async fn scrape(&self, role: &str) -> String {
        let addr = self.admin_addr(role).await;
        let (status, body) = http::get_raw(addr, "/metrics")
            .await
            .expect("the admin listener answers /metrics");
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The cluster's data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.log_dir.join(format!("{}-data", self.name))
    }

    /// Starts one more role process (`dns`, `gateway`, ...) for this cluster.
    pub fn spawn(&self, cluster: &mut Cluster, role: &str) -> usize {
        cluster.procs.push(spawn_role(self, role));
        cluster.procs.len() - 1
    }

    /// The address the cluster's DNS server bound (it writes it to its data directory).
    pub async fn dns_addr(&self) -> SocketAddr {
        let file = self.data_dir().join("dns.addr");
        wait_addr_file(&format!("{} DNS address", self.name), file).await
    }

    /// `ferry up`: every role in one process.
    pub async fn up(&self) -> Cluster {
        let cluster = Cluster {
            def: self.clone(),
            procs: vec![spawn_role(self, "up")],
        };
        cluster.wait_ready().await;
        cluster
    }

    /// `ferry control`, `ferry gateway`, `ferry node` as three processes.
    pub async fn up_apart(&self) -> Cluster {
        let mut cluster = Cluster {
            def: self.clone(),
            procs: vec![spawn_role(self, "control")],
        };
        let socket = self.socket.clone();
        wait_for("control socket", Duration::from_secs(20), || {
            let socket = socket.clone();
            async move { socket.exists() }
        })
        .await;
        cluster.procs.push(spawn_role(self, "gateway"));
        cluster.procs.push(spawn_role(self, "node"));
        cluster.wait_ready().await;
        cluster
    }

    /// Starts one more `ferry gateway` process for this cluster; returns its index in `procs`.
    pub fn add_gateway(&self, cluster: &mut Cluster) -> usize {
        cluster.procs.push(spawn_role(self, "gateway"));
        cluster.procs.len() - 1
    }

    pub fn log(&self) -> String {
        let mut out = String::new();
        for role in ["up", "control", "gateway", "node", "dns"] {
            if let Ok(s) =
                std::fs::read_to_string(self.log_dir.join(format!("{}-{role}.log", self.name)))
            {
                out.push_str(&s);
            }
        }
        out
    }
}

impl Cluster {
    async fn wait_ready(&self) {
        let def = self.def.clone();
        wait_for(
            &format!("cluster {} ready", self.def.name),
            Duration::from_secs(30),
            || {
                let def = def.clone();
                async move {
                    let out = def.cli(&["status", "-o", "json"]);
                    out.status.success()
                        && serde_json::from_slice::<serde_json::Value>(&out.stdout)
                            .map(|v| v["gateways"].as_array().is_some_and(|g| !g.is_empty()))
                            .unwrap_or(false)
                }
            },
        )
        .await;
    }

    /// Kills one process (SIGKILL).
    pub fn kill_one(&mut self, i: usize) {
        let _ = self.procs[i].kill();
        let _ = self.procs[i].wait();
    }

    pub fn kill(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        self.procs.clear();
    }
}

impl ClusterDef {
    /// Runs a CLI verb against this cluster's control plane.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(FERRY)
            .arg("--control")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs a CLI verb with `input` on its standard input.
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(FERRY)
            .arg("--control")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs a CLI verb that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`ferry {}` on {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `ferry link list -o json`.
    pub fn links(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.cli_ok(&["link", "list", "-o", "json"])).unwrap()
    }

    /// A link token for `peer` (`extra` adds flags such as `--ttl`).
    pub fn token_for(&self, peer: &str, extra: &[&str]) -> String {
        let mut args = vec!["link", "create", "--peer", peer];
        args.extend_from_slice(extra);
        self.cli_ok(&args).trim().to_owned()
    }

    /// Adds `echo.shop` (port `tcp=7000`) backed by `echo` and exports it.
    pub fn add_exported_echo(&self, echo: &Echo) {
        self.add_echo(echo, true);
    }

    /// Adds and exports `echo.shop` (port `tcp=7000`) whose only endpoint is a closed
    /// port: exported, never healthy. Returns that endpoint.
    pub fn add_dead_echo(&self) -> String {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap().to_string();
        drop(dead);
        self.add_echo_at(&dead_addr, true);
        dead_addr
    }

    /// Adds `echo.shop` (port `tcp=7000`) backed by `echo`, exported or not.
    pub fn add_echo(&self, echo: &Echo, export: bool) {
        self.add_echo_at(&echo.addr.to_string(), export);
    }

    fn add_echo_at(&self, endpoint: &str, export: bool) {
        let mut args = vec![
            "service",
            "add",
            "echo.shop",
            "--port",
            "tcp=7000",
            "--endpoint",
            endpoint,
        ];
        if export {
            args.push("--export");
        }
        self.cli_ok(&args);
    }

    /// Waits until `service` is no longer visible in this cluster.
    pub async fn wait_service_gone(&self, service: &str, timeout: Duration) {
        let this = self.clone();
        let service = service.to_owned();
        wait_for(
            &format!("{service} gone from {}", self.name),
            timeout,
            || {
                let this = this.clone();
                let service = service.clone();
                async move { this.service(&service).is_none() }
            },
        )
        .await;
    }

    pub fn services(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.cli_ok(&["services", "-o", "json"])).unwrap()
    }

    pub fn service(&self, name: &str) -> Option<serde_json::Value> {
        self.services().into_iter().find(|s| s["name"] == name)
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["status", "-o", "json"])).unwrap()
    }

    /// The value of a counter in this cluster's metrics, summed over matching lines.
    pub fn metric(&self, name: &str, label: &str) -> u64 {
        let status = self.status();
        status["metrics"]
            .as_str()
            .unwrap_or("")
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The address `service`'s first port is reachable on through this cluster's node proxy.
    pub fn vip(&self, service: &str, port: u16) -> SocketAddr {
        let s = self
            .service(service)
            .unwrap_or_else(|| panic!("{service} unknown in {}", self.name));
        SocketAddr::new(s["vip"].as_str().unwrap().parse().unwrap(), port)
    }

    /// Waits until `service` has a local endpoint that passed its health check.
    pub async fn wait_local_healthy(&self, service: &str) {
        wait_until(
            self,
            &format!("a healthy local endpoint of {service}"),
            Duration::from_secs(20),
            |d| {
                d.service(service).is_some_and(|s| {
                    s["local"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|e| e["healthy"] == true)
                })
            },
        )
        .await;
    }

    /// Waits until `service` is imported here with a healthy endpoint in `from`.
    pub async fn wait_imported(&self, service: &str, from: &str) {
        let this = self.clone();
        let (service, from) = (service.to_owned(), from.to_owned());
        wait_for(
            &format!("{service} from {from} in {}", self.name),
            Duration::from_secs(20),
            || {
                let this = this.clone();
                let (service, from) = (service.clone(), from.clone());
                async move {
                    this.service(&service).is_some_and(|s| {
                        s["remote"].as_array().unwrap().iter().any(|r| {
                            r["cluster"] == from.as_str()
                                && r["healthy"]
                                    .as_object()
                                    .unwrap()
                                    .values()
                                    .any(|v| v.as_u64() > Some(0))
                        })
                    })
                }
            },
        )
        .await;
    }
}

impl ClusterDef {
    /// This cluster's live gateway addresses, from `ferry status`.
    pub fn gateways(&self) -> Vec<SocketAddr> {
        self.status()["gateways"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g.as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// A tunnel client holding a real node certificate (node `attacker`) issued by this
    /// cluster's control plane: it opens tunnel streams with headers the test writes.
    pub async fn node_client(&self) -> TunnelClient {
        let (identity, trust) = self.identity("node", "attacker").await;
        TunnelClient::new(identity, trust).unwrap()
    }

    /// A real certificate for `role` ("gateway" or "node", named `node`) of this cluster,
    /// issued by its running control plane, with the mesh's trust bundle.
    pub async fn identity(&self, role: &str, node: &str) -> (Arc<IdentityStore>, Arc<TrustStore>) {
        let req = ferry_gateway::pki::new_leaf_request().unwrap();
        let mut c = ferry::client::connect(&self.socket).await.unwrap();
        let reply = c
            .issue_certificate(pb::IssueRequest {
                role: role.into(),
                node: node.into(),
                csr_pem: req.csr_pem.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let td = reply.trust_domain.parse().unwrap();
        let identity = IdentityStore::from_pem(&reply.chain_pem, &req.key_pem, &td).unwrap();
        let trust = TrustStore::from_pem(td, &reply.bundle_pem).unwrap();
        (Arc::new(identity), Arc::new(trust))
    }
}

/// A tunnel header for `service`'s port `port`, naming `endpoint` if given.
pub fn tunnel_header(service: &str, port: &str, endpoint: Option<&str>) -> TunnelHeader {
    TunnelHeader {
        service: service.parse().unwrap(),
        port: port.parse().unwrap(),
        cluster: None,
        hops: 0,
        traceparent: None,
        endpoint: endpoint.map(|e| e.parse().unwrap()),
        carries: ferry_federation::Carries::Bytes,
    }
}

/// Waits until something accepts TCP connections on `addr` (a node proxy listener), sending
/// nothing, so no backend counts the probe.
pub async fn wait_listening(addr: SocketAddr) {
    wait_for(
        &format!("a listener on {addr}"),
        Duration::from_secs(10),
        || async move { tokio::net::TcpStream::connect(addr).await.is_ok() },
    )
    .await;
}

/// A mesh with two clusters, `east` and `west`, both running `ferry up`.
pub struct EastWest {
    pub mesh: Mesh,
    pub east_def: ClusterDef,
    pub west_def: ClusterDef,
    pub east: Cluster,
    pub west: Cluster,
}

/// Starts [`EastWest`] with the given VIP ranges (distinct per test, tests run in parallel).
pub async fn east_west(east_range: &str, west_range: &str) -> EastWest {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", east_range);
    let west_def = mesh.cluster("west", west_range);
    let east = east_def.up().await;
    let west = west_def.up().await;
    EastWest {
        mesh,
        east_def,
        west_def,
        east,
        west,
    }
}

/// Links `a` and `b` with a token from `a`, handed to `b` on standard input; returns what
/// `link join` printed.
pub fn link(a: &ClusterDef, b: &ClusterDef) -> String {
    let token = a.token_for(&b.name, &[]);
    let out = b.cli_with_input(&["link", "join"], &format!("{token}\n"));
    assert!(
        out.status.success(),
        "`ferry link join` on {} failed: {}",
        b.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run_ok(args: &[&str]) -> String {
    let out = Command::new(FERRY).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "`ferry {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A TCP echo server counting the connections that sent it data.
pub struct Echo {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
}

impl Echo {
    pub async fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let count = count.clone();
                tokio::spawn(async move {
                    // Health probes connect and close without data: count only
                    // connections that carry bytes.
                    let mut first = [0u8; 8192];
                    let n = match conn.read(&mut first).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    count.fetch_add(1, Ordering::SeqCst);
                    if conn.write_all(&first[..n]).await.is_err() {
                        return;
                    }
                    let (mut r, mut w) = conn.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                    let _ = w.shutdown().await;
                });
            }
        });
        Echo { addr, accepted }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Sends `payload` to `addr`, half-closes, and returns everything read back.
pub async fn echo_roundtrip(addr: SocketAddr, payload: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    let (mut r, mut w) = conn.split();
    let write = async {
        w.write_all(payload).await?;
        w.shutdown().await
    };
    let mut back = Vec::with_capacity(payload.len());
    let read = r.read_to_end(&mut back);
    let (wr, rd) = tokio::join!(write, read);
    wr?;
    rd?;
    Ok(back)
}

/// The sum of the samples of `name` in Prometheus text whose labels include every
/// `key="value"` of `labels` (0 when none).
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = match series.split_once('{') {
                Some((m, rest)) => (m, rest),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// The address a role recorded in `file` (written whole, then renamed), once it is there.
async fn wait_addr_file(what: &str, file: PathBuf) -> SocketAddr {
    let read = |file: &Path| {
        std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
    };
    wait_for(what, Duration::from_secs(20), || {
        let file = file.clone();
        async move { read(&file).is_some() }
    })
    .await;
    read(&file).unwrap()
}
