//! Ferry's mesh DNS server: one name per exported service, answered from the live snapshot.
//!
//! The server follows the Kubernetes Multi-Cluster Services DNS specification (schema 1.0.0)
//! for the mesh zone (`clusterset.local` by default); see [`zone`] for the names it answers.
//! It is built on hickory-server: the [`MeshHandler`] is a hickory [`RequestHandler`] and
//! replies are hickory messages. Ferry's own transports ([`server`]) put a precheck, a
//! per-source rate limit and an amplification bound in front of the parser.
//!
//! The zone is rebuilt from every [`MeshSnapshot`] the control plane publishes, so an export
//! or unexport shows in DNS as soon as the snapshot does. Until the first snapshot, mesh names
//! get SERVFAIL (never NXDOMAIN, which resolvers would cache). Names outside the mesh zone
//! and the VIP reverse zones are forwarded to upstream resolvers, only for clients in
//! `forward_from`, or refused.
//!
//! [`RequestHandler`]: hickory_server::server::RequestHandler

pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod packet;
pub mod ratelimit;
pub mod server;
pub mod zone;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use ferry_federation::MeshSnapshot;
use ipnet::IpNet;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::watch;

pub use handler::MeshHandler;
pub use zone::{InvalidZone, Lookup, Zone, ZoneConfig};

/// Everything the DNS server needs to know.
#[derive(Clone, Debug)]
pub struct DnsSettings {
    /// UDP and TCP listen address.
    pub listen: SocketAddr,
    /// The mesh zone.
    pub zone: ZoneConfig,
    /// Resolvers for other names; empty to refuse them.
    pub upstreams: Vec<SocketAddr>,
    /// Client networks allowed to have other names forwarded (no open recursion).
    pub forward_from: Vec<IpNet>,
    /// Queries per second per client address; 0 for no limit.
    pub rate_limit: u32,
}

/// Networks that may use forwarding by default: loopback and private ranges.
pub fn private_networks() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "::1/128",
        "fc00::/7",
        "fe80::/10",
    ]
    .iter()
    .map(|s| s.parse().expect("valid network"))
    .collect()
}

/// A bound DNS server, not yet serving.
pub struct DnsServer {
    udp: Arc<UdpSocket>,
    tcp: TcpListener,
    handler: Arc<MeshHandler>,
    settings: DnsSettings,
}

impl DnsServer {
    /// Binds UDP and TCP on `settings.listen` (with port 0, both get the same free port).
    pub async fn bind(settings: DnsSettings) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair(settings.listen).await?;
        let handler = Arc::new(MeshHandler::new(
            Zone::pending(&settings.zone),
            forward::Forwarder::new(settings.upstreams.clone()),
            settings.forward_from.clone(),
        ));
        Ok(DnsServer {
            udp: Arc::new(udp),
            tcp,
            handler,
            settings,
        })
    }

    /// The address both transports listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.udp.local_addr().unwrap_or(self.settings.listen)
    }

    /// The handler (to answer queries in-process, e.g. in tests).
    pub fn handler(&self) -> Arc<MeshHandler> {
        self.handler.clone()
    }

    /// Serves until the snapshot channel closes. `None` in the channel means no snapshot yet.
    pub async fn run(self, snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>) {
        // A series from the start, so a rate over it reads 0 rather than nothing.
        metrics::counter!("ferry_dns_ratelimited_total").increment(0);
        let shared = Arc::new(server::Shared {
            handler: self.handler.clone(),
            limiter: ratelimit::RateLimiter::new(self.settings.rate_limit),
        });
        let udp = tokio::spawn(server::serve_udp(self.udp, shared.clone()));
        let tcp = tokio::spawn(server::serve_tcp(self.tcp, shared));
        follow_snapshots(&self.handler, &self.settings.zone, snapshots).await;
        udp.abort();
        tcp.abort();
    }
}

/// Rebuilds the zone on every snapshot until the channel closes.
pub async fn follow_snapshots(
    handler: &MeshHandler,
    cfg: &ZoneConfig,
    mut snapshots: watch::Receiver<Option<Arc<MeshSnapshot>>>,
) {
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        if let Some(snapshot) = snapshot {
            let zone = Zone::build(cfg, &snapshot);
            tracing::debug!(
                version = snapshot.version,
                names = zone.len(),
                "mesh zone rebuilt"
            );
            metrics::gauge!("ferry_dns_zone_names").set(zone.len() as f64);
            handler.set_zone(zone);
            metrics::gauge!("ferry_dns_snapshot_version").set(snapshot.version as f64);
        }
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

async fn bind_pair(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let with_context = |e: io::Error, proto: &str, addr: SocketAddr| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for DNS on {proto} {addr}: {e}; pick a free address in [dns] listen (ports below 1024 need root)"),
        )
    };
    if listen.port() != 0 {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| with_context(e, "udp", listen))?;
        let tcp = TcpListener::bind(listen)
            .await
            .map_err(|e| with_context(e, "tcp", listen))?;
        return Ok((udp, tcp));
    }
    // Port 0: find a port free for both.
    let mut last = None;
    for _ in 0..20 {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|e| with_context(e, "udp", listen))?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(with_context(e, "tcp", addr)),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port for DNS")))
}
