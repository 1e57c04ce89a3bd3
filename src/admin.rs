//! The admin listener every long-running role serves (`[admin] listen`, loopback by
//! default): `GET /metrics` (Prometheus text format), `GET /live` (200 while the process
//! answers) and `GET /ready` (200 once every role of the process is ready, else 503 naming
//! those that are not).
//!
//! It is a plain HTTP/1.1 listener of its own, apart from every proxied port: the node
//! proxy listens only on VIPs, the gateway only admits exported services' endpoints, and the
//! control plane refuses an endpoint that is one of this cluster's admin listeners, so
//! neither a VIP nor a peer's gateway ever reaches it. Each process records the address it
//! bound in `<data_dir>/admin-<role>.addr`, which `ferry status` shows.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;

/// The Prometheus text a role's admin listener at `addr` serves.
pub async fn get_metrics(addr: SocketAddr) -> anyhow::Result<String> {
    use http_body_util::BodyExt as _;
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut sender = ferry_gateway::http::handshake(tcp, ferry_gateway::http::Proto::H1).await?;
    let req = Request::get("/metrics")
        .header(hyper::header::HOST, addr.to_string())
        .body(ferry_gateway::http::empty_body())?;
    let response = sender.send(req).await.map_err(|(e, _)| e)?;
    anyhow::ensure!(
        response.status() == StatusCode::OK,
        "{addr}/metrics answered {}",
        response.status()
    );
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Admin connections served at once; more wait for a slot.
const MAX_CONNECTIONS: usize = 32;
/// A request's head must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// The roles a process can run, each with its admin listener's port offset (when
/// `[admin] listen` names a port) and its address file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// `ferry up`: every role in one process, one listener.
    Up,
    Control,
    Gateway,
    Node,
    Dns,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Up,
        Role::Control,
        Role::Gateway,
        Role::Node,
        Role::Dns,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Up => "up",
            Role::Control => "control",
            Role::Gateway => "gateway",
            Role::Node => "node",
            Role::Dns => "dns",
        }
    }

    /// Added to a configured admin port, so the roles of one cluster run as separate
    /// processes on one host get distinct ports (`up` and `control` share the base).
    fn port_offset(self) -> u16 {
        match self {
            Role::Up | Role::Control => 0,
            Role::Gateway => 1,
            Role::Node => 2,
            Role::Dns => 3,
        }
    }

    /// The file in the data directory that holds this role's admin address.
    pub fn addr_file(self, data_dir: &Path) -> PathBuf {
        data_dir.join(format!("admin-{}.addr", self.as_str()))
    }
}

/// What `/ready` answers from: the roles this process runs and whether each is ready.
static READY: OnceLock<Mutex<BTreeMap<Role, bool>>> = OnceLock::new();

fn ready_map() -> &'static Mutex<BTreeMap<Role, bool>> {
    READY.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// Says this process runs `role`; `/ready` answers 503 until [`set_ready`] marks it.
pub fn expect(role: Role) {
    ready_map()
        .lock()
        .expect("readiness lock")
        .entry(role)
        .or_insert(false);
}

/// Marks `role` ready (or no longer ready).
pub fn set_ready(role: Role, ready: bool) {
    ready_map()
        .lock()
        .expect("readiness lock")
        .insert(role, ready);
}

/// The roles of this process that are not ready, by name.
fn not_ready() -> Vec<&'static str> {
    ready_map()
        .lock()
        .expect("readiness lock")
        .iter()
        .filter(|(_, ready)| !**ready)
        .map(|(role, _)| role.as_str())
        .collect()
}

/// The address `role` listens on: `[admin] listen`, its port shifted by the role's offset
/// when one is configured.
pub fn listen_addr(cfg: &Config, role: Role) -> anyhow::Result<SocketAddr> {
    let base = cfg.admin_listen;
    if base.port() == 0 {
        return Ok(base);
    }
    let port = base.port().checked_add(role.port_offset()).with_context(|| {
        format!(
            "admin.listen port {} leaves no room for the {} role's port (port + {}); choose a lower port",
            base.port(),
            role.as_str(),
            role.port_offset()
        )
    })?;
    Ok(SocketAddr::new(base.ip(), port))
}

/// Binds `role`'s admin listener, records its address in the data directory and serves
/// it for the life of the process. Returns the bound address.
pub async fn start(cfg: &Config, role: Role) -> anyhow::Result<SocketAddr> {
    let addr = listen_addr(cfg, role)?;
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on admin.listen {addr} for the {} role; choose a free address under [admin] in the config (port 0 picks one)",
            role.as_str()
        )
    })?;
    let bound = listener.local_addr()?;
    ferry_gateway::guard::protect(bound);
    record_addr(&cfg.data_dir, role, bound);
    tracing::info!(addr = %bound, role = role.as_str(), "admin listener: /metrics /ready /live");
    tokio::spawn(serve(listener));
    Ok(bound)
}

/// Writes the address whole, then renames it into place, so a reader never sees half.
fn record_addr(data_dir: &Path, role: Role, addr: SocketAddr) {
    let path = role.addr_file(data_dir);
    let tmp = path.with_extension("addr.tmp");
    let written = std::fs::create_dir_all(data_dir)
        .and_then(|()| std::fs::write(&tmp, format!("{addr}\n")))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %path.display(), "could not record the admin address");
    }
}

/// Every admin listener of this cluster a service endpoint must not be: the addresses the
/// roles recorded, and those the config fixes.
pub fn listeners(cfg: &Config) -> Vec<(Role, SocketAddr)> {
    let mut all = recorded(&cfg.data_dir);
    if cfg.admin_listen.port() != 0 {
        for role in Role::ALL {
            if let Ok(addr) = listen_addr(cfg, role) {
                all.push((role, addr));
            }
        }
    }
    all
}

/// The admin addresses recorded in `data_dir`, by role.
pub fn recorded(data_dir: &Path) -> Vec<(Role, SocketAddr)> {
    Role::ALL
        .iter()
        .filter_map(|role| {
            let text = std::fs::read_to_string(role.addr_file(data_dir)).ok()?;
            Some((*role, text.trim().parse().ok()?))
        })
        .collect()
}

async fn serve(listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let _permit = permit;
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(
                    TokioIo::new(stream),
                    hyper::service::service_fn(
                        |req| async move { Ok::<_, Infallible>(answer(&req)) },
                    ),
                )
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "admin connection ended");
            }
        });
    }
}

fn answer(req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    match req.uri().path() {
        "/metrics" => {
            let mut r = text(StatusCode::OK, crate::telemetry::render());
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        "/live" => text(StatusCode::OK, "live\n".into()),
        "/ready" => match not_ready() {
            waiting if waiting.is_empty() => text(StatusCode::OK, "ready\n".into()),
            waiting => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {}\n", waiting.join(", ")),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /metrics, /ready or /live\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
