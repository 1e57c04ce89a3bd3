//! One harness for everything in Rust that starts clusters on this host: `ferry demo` and
//! the integration tests (the benchmark, `tests/bench/run.sh`, drives the CLI itself). A typed [`ClusterSpec`] writes the
//! config, [`spawn_up`] starts `ferry up`, [`wait_ready`] / [`wait_imported`] speak the
//! control API, and [`free_vip_range`] / [`free_port`] hand out addresses nothing else
//! on the host uses.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::process::{Child, Command};

use crate::client::{self, status_error, Client};
use crate::pb;

/// A running `ferry up`: its config, admin socket and process (killed on drop).
pub struct Cluster {
    pub name: String,
    pub config: PathBuf,
    pub socket: PathBuf,
    pub child: Child,
}

/// A loopback cluster's config, typed: everything lives under one directory, the gateway
/// and DNS take kernel-chosen ports, loopback gateways are allowed (all clusters share this
/// host).
#[derive(Clone, Debug)]
pub struct ClusterSpec {
    pub name: String,
    pub vip_range: String,
    /// `control.health_interval`, when not the default.
    pub health_interval: Option<String>,
    /// Extra `key = value` lines of the `[federation]` section.
    pub federation: Vec<String>,
    /// Extra TOML appended at the end (e.g. `[[service]]` tables).
    pub extra: String,
}

impl ClusterSpec {
    /// Cluster `name` with VIPs from `vip_range`.
    pub fn new(name: &str, vip_range: &str) -> ClusterSpec {
        ClusterSpec {
            name: name.to_owned(),
            vip_range: vip_range.to_owned(),
            health_interval: None,
            federation: Vec::new(),
            extra: String::new(),
        }
    }

    /// Sets `control.health_interval`.
    pub fn health_interval(mut self, interval: &str) -> ClusterSpec {
        self.health_interval = Some(interval.to_owned());
        self
    }

    /// Adds a `key = value` line to `[federation]`.
    pub fn federation(mut self, line: &str) -> ClusterSpec {
        self.federation.push(line.to_owned());
        self
    }

    /// The config file's text; relative paths (CA, data, socket) are under its directory.
    pub fn config_text(&self) -> String {
        let name = &self.name;
        let mut text = format!(
            "cluster = \"{name}\"\n\n[trust]\ndir = \"{name}-ca\"\n\n[control]\ndata_dir = \"{name}-data\"\nsocket = \"{name}.sock\"\nvip_range = \"{}\"\n",
            self.vip_range
        );
        if let Some(h) = &self.health_interval {
            text.push_str(&format!("health_interval = \"{h}\"\n"));
        }
        text.push_str("\n[gateway]\nlisten = \"127.0.0.1:0\"\n\n[federation]\n");
        text.push_str("allow_loopback_gateways = true   # every cluster lives on this host\n");
        for line in &self.federation {
            text.push_str(line);
            text.push('\n');
        }
        text.push_str(&format!("\n[node]\nname = \"{name}-node-1\"\n"));
        text.push_str(&self.extra);
        text
    }

    /// Writes `<dir>/<name>.toml`; returns its path.
    pub fn write(&self, dir: &Path) -> anyhow::Result<PathBuf> {
        let path = dir.join(format!("{}.toml", self.name));
        std::fs::write(&path, self.config_text())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// The admin socket of this cluster under `dir`.
    pub fn socket(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sock", self.name))
    }
}

/// Starts `<exe> up` for a config (the `ferry` binary at `exe`), logging to
/// `<dir>/<name>.log`.
pub fn spawn_up(exe: &Path, dir: &Path, name: &str, config: &Path) -> anyhow::Result<Cluster> {
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(exe)
        .arg("up")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start `ferry up`")?;
    Ok(Cluster {
        name: name.to_owned(),
        config: config.to_owned(),
        socket: dir.join(format!("{name}.sock")),
        child,
    })
}

/// Waits until the cluster's control plane answers and a gateway has registered.
pub async fn wait_ready(cluster: &mut Cluster, timeout: Duration) -> anyhow::Result<Client> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = cluster.child.try_wait()? {
            anyhow::bail!(
                "cluster {} exited early ({status}); see its log",
                cluster.name
            );
        }
        if let Ok(mut c) = client::connect(&cluster.socket).await {
            if let Ok(s) = c.status(pb::Empty {}).await {
                if !s.into_inner().gateways.is_empty() {
                    return Ok(c);
                }
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "cluster {} did not become ready within {timeout:?}",
                cluster.name
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `service` is visible in the cluster with a healthy endpoint in `from`.
pub async fn wait_imported(
    c: &mut Client,
    service: &str,
    from: &str,
    timeout: Duration,
) -> anyhow::Result<pb::ServiceInfo> {
    let deadline = Instant::now() + timeout;
    loop {
        let list = c
            .list_services(pb::Empty {})
            .await
            .map_err(status_error)?
            .into_inner();
        if let Some(s) = list.services.into_iter().find(|s| s.name == service) {
            if s.remote
                .iter()
                .any(|r| r.cluster == from && r.healthy.values().any(|n| *n > 0))
            {
                return Ok(s);
            }
        }
        if Instant::now() > deadline {
            anyhow::bail!("{service} from {from} did not appear within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The second octet of a `127.<o>.0.0/16` VIP range whose first addresses are free on
/// `port` (nothing listens there), other than `avoid`; tried from a per-process starting
/// point so two demos at once do not race for the same range.
pub fn free_vip_range(port: u16, avoid: &[u8]) -> anyhow::Result<u8> {
    let start = (std::process::id() % 100) as u8;
    (0..100u8)
        .map(|i| 130 + (start + i) % 100)
        .filter(|o| !avoid.contains(o))
        .find(|&o| {
            (1..=4u8).all(|last| {
                std::net::TcpListener::bind((std::net::Ipv4Addr::new(127, o, 0, last), port))
                    .is_ok()
            })
        })
        .ok_or_else(|| {
            anyhow::anyhow!("no free loopback VIP range in 127.130-229.0.0/16 for port {port}")
        })
}

/// A port free on 127.0.0.1 for both TCP and UDP right now.
pub fn free_port() -> u16 {
    loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback is usable");
        let port = tcp.local_addr().expect("bound").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
