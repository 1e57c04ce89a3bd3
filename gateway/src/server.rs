//! The gateway: one QUIC endpoint that accepts links from peer gateways, tunnel
//! connections from remote node proxies and join handshakes, and dials its links.
//!
//! It reads the control plane's [`MeshSnapshot`] from a watch channel (never calls the
//! control plane on the request path) and reports what it learns (imports, link
//! removals, join requests) as [`GatewayEvent`]s for the shell to forward.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use ferry_federation::{
    ClusterId, ExportedService, Identity, LimitExceeded, LinkConfig, MeshSnapshot,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::Instrument as _;

use crate::tls::{self, IdentityStore, TrustStore, ALPN_JOIN, ALPN_LINK, ALPN_TUNNEL};

/// A link session's connection: its round trip and the peer's certificates.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionInfo {
    pub rtt: std::time::Duration,
    /// SHA-256 of the peer gateway's leaf certificate (hex).
    pub peer_cert: String,
    /// SHA-256 of the CA that issued it: the peer's cluster CA (hex).
    pub peer_ca: String,
    /// SHA-256 of each root of the peer's trust bundle (hex), as its hello said.
    pub peer_roots: Vec<String>,
}

/// What the gateway tells its shell (which forwards it to the control plane).
#[derive(Debug)]
pub enum GatewayEvent {
    /// The complete current set of services `peer` exports to us (sent on change and
    /// periodically, as a lease refresh).
    Imports {
        peer: ClusterId,
        services: Vec<ExportedService>,
        peer_gateways: Vec<SocketAddr>,
        connected: bool,
        /// The bounds the peer is over right now (what was over them was refused).
        limited: Vec<LimitExceeded>,
        /// The link session's connection as this gateway sees it.
        session: SessionInfo,
    },
    /// `peer` went silent past its lease: withdraw its imports.
    Withdrawn { peer: ClusterId },
    /// `peer` removed the link on its side.
    PeerRemovedLink { peer: ClusterId },
    /// A cluster presents a link token; the control plane checks and spends it.
    Redeem {
        request: RedeemRequest,
        reply: oneshot::Sender<Result<JoinAccepted, String>>,
    },
}

/// A join request as received on the join stream, with the TLS channel binding.
#[derive(Debug, Clone)]
pub struct RedeemRequest {
    pub token_id: [u8; 16],
    pub joiner: ClusterId,
    pub proof: [u8; 32],
    pub channel_binding: Vec<u8>,
    pub gateways: Vec<SocketAddr>,
}

/// The issuer's answer to an accepted join.
#[derive(Debug, Clone)]
pub struct JoinAccepted {
    pub issuer: ClusterId,
    pub gateways: Vec<SocketAddr>,
}

/// Gateway failures at startup.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot bind the gateway's QUIC endpoint on {0}: {1}; pick a free address in gateway.listen")]
    Bind(SocketAddr, #[source] std::io::Error),
    #[error("invalid TLS setup for the gateway: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Which kind of connection a registered peer connection is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnKind {
    Link,
    Tunnel,
}

/// State shared by the gateway's tasks.
pub(crate) struct Shared {
    pub endpoint: quinn::Endpoint,
    pub identity: Arc<IdentityStore>,
    pub trust: Arc<TrustStore>,
    pub snapshots: watch::Receiver<Arc<MeshSnapshot>>,
    pub events: mpsc::Sender<GatewayEvent>,
    pub link_config: LinkConfig,
    pub advertise: SocketAddr,
    /// Open connections from each peer cluster, so removing a link can close them.
    pub conns: Mutex<HashMap<ClusterId, Vec<(ConnKind, quinn::Connection)>>>,
    pub pick: std::sync::atomic::AtomicU64,
    /// A relayed stream with no bytes either way for this long is closed.
    pub relay_idle: std::time::Duration,
    /// The peer session (process incarnation) each link connection has announced, by the
    /// connection's stable id.
    pub peer_sessions: Mutex<HashMap<usize, u64>>,
    /// The clusters not (yet) linked with a link connection waiting for the link.
    pub link_waits: Mutex<std::collections::HashSet<ClusterId>>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<MeshSnapshot> {
        self.snapshots.borrow().clone()
    }

    /// Records a peer's connection so removing the link can close it. Returns false (and
    /// records nothing) when the peer already holds [`MAX_CONNECTIONS_PER_PEER`].
    pub fn register(&self, peer: &ClusterId, kind: ConnKind, conn: &quinn::Connection) -> bool {
        let mut conns = self.conns.lock().expect("conn registry lock");
        let list = conns.entry(peer.clone()).or_default();
        list.retain(|(_, c)| c.close_reason().is_none());
        if list.len() >= MAX_CONNECTIONS_PER_PEER {
            return false;
        }
        list.push((kind, conn.clone()));
        true
    }

    /// Whether `peer` becomes linked within [`LINK_GRACE`] (false at once if `conn` closes).
    /// A link is recorded on both sides of a join at different moments: the issuer records
    /// it when it spends the token, and its gateway may dial before the joiner has recorded
    /// it from the answer. Waiting here saves that first session a refusal, a warning and a
    /// redial. One connection per cluster waits, and [`MAX_LINK_WAITS`] clusters at most;
    /// the rest are refused at once, so a cluster that keeps dialling holds one wait.
    pub async fn await_link(&self, peer: &ClusterId, conn: &quinn::Connection) -> bool {
        {
            let mut waiting = self.link_waits.lock().expect("link waits lock");
            if waiting.len() >= MAX_LINK_WAITS || !waiting.insert(peer.clone()) {
                return false;
            }
        }
        struct Waiting<'a>(&'a Shared, &'a ClusterId);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                let mut waiting = self.0.link_waits.lock().expect("link waits lock");
                waiting.remove(self.1);
            }
        }
        let _waiting = Waiting(self, peer);
        let mut rx = self.snapshots.clone();
        let linked = rx.wait_for(|s| s.link(peer).is_some());
        tokio::select! {
            linked = tokio::time::timeout(LINK_GRACE, linked) => matches!(linked, Ok(Ok(_))),
            _ = conn.closed() => false,
        }
    }

    pub fn has_link_session(&self, peer: &ClusterId) -> bool {
        let conns = self.conns.lock().expect("conn registry lock");
        conns.get(peer).is_some_and(|list| {
            list.iter()
                .any(|(k, c)| *k == ConnKind::Link && c.close_reason().is_none())
        })
    }

    /// A link session on `conn` heard `peer` announce its incarnation `session`. The peer's
    /// other link connections with the same gateway (remote address) that announced another
    /// incarnation are closed: a restarted peer gateway's stale session would otherwise keep
    /// reporting the exports it had before, in turn with the new session's, until its idle
    /// timeout. Sessions with the peer's other gateways (other processes) are left alone.
    pub fn note_peer_session(&self, peer: &ClusterId, conn: &quinn::Connection, session: u64) {
        let conns = self.conns.lock().expect("conn registry lock");
        let mut sessions = self.peer_sessions.lock().expect("peer sessions lock");
        let live: std::collections::HashSet<usize> = conns
            .values()
            .flatten()
            .filter(|(kind, c)| *kind == ConnKind::Link && c.close_reason().is_none())
            .map(|(_, c)| c.stable_id())
            .collect();
        sessions.retain(|id, _| live.contains(id));
        sessions.insert(conn.stable_id(), session);
        for (kind, other) in conns.get(peer).into_iter().flatten() {
            let stale = sessions
                .get(&other.stable_id())
                .is_some_and(|s| *s != session);
            let same_gateway = other.remote_address() == conn.remote_address();
            if *kind == ConnKind::Link
                && other.stable_id() != conn.stable_id()
                && same_gateway
                && stale
            {
                tracing::info!(%peer, "the peer restarted: closing its previous link session");
                other.close(CLOSE_DONE, b"superseded by the peer's new session");
            }
        }
    }

    pub fn next_pick(&self) -> u64 {
        self.pick.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Closes every tunnel connection from clusters that are no longer linked.
    fn close_unlinked(&self, snapshot: &MeshSnapshot) {
        let mut conns = self.conns.lock().expect("conn registry lock");
        conns.retain(|peer, list| {
            if snapshot.link(peer).is_some() {
                list.retain(|(_, c)| c.close_reason().is_none());
                return !list.is_empty();
            }
            for (kind, conn) in list.iter() {
                if *kind == ConnKind::Tunnel {
                    conn.close(CLOSE_LINK_REMOVED, b"link removed");
                }
            }
            tracing::info!(%peer, "link removed: closed the peer's connections");
            metrics::counter!("ferry_gateway_link_closures_total", "reason" => "link_removed")
                .increment(1);
            // Link sessions close themselves after saying goodbye; one that has not within
            // a second (a peer that does not read) is closed here.
            for (kind, conn) in list.iter() {
                if *kind == ConnKind::Link {
                    let conn = conn.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(LINK_GOODBYE_GRACE).await;
                        conn.close(CLOSE_LINK_REMOVED, b"link removed");
                    });
                }
            }
            false
        });
    }
}

/// How long a removed link's session has to say goodbye before its connection is closed.
const LINK_GOODBYE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) use crate::dial::{CLOSE_DONE, CLOSE_LINK_REMOVED, CLOSE_REFUSED};

/// A bound gateway, ready to run.
pub struct Gateway {
    shared: Arc<Shared>,
}

impl Gateway {
    /// Binds the QUIC endpoint. `advertise` is the address peers are told (defaults to
    /// the bound address).
    pub fn bind(
        listen: SocketAddr,
        advertise: Option<SocketAddr>,
        identity: Arc<IdentityStore>,
        trust: Arc<TrustStore>,
        snapshots: watch::Receiver<Arc<MeshSnapshot>>,
        events: mpsc::Sender<GatewayEvent>,
        link_config: LinkConfig,
    ) -> Result<Gateway, GatewayError> {
        let server = tls::server_config(
            identity.clone(),
            trust.clone(),
            &[ALPN_LINK, ALPN_TUNNEL, ALPN_JOIN],
        )?;
        let endpoint =
            tls::endpoint(listen, Some(server)).map_err(|e| GatewayError::Bind(listen, e))?;
        let bound = endpoint
            .local_addr()
            .map_err(|e| GatewayError::Bind(listen, e))?;
        let advertise = advertise.unwrap_or(bound);
        Ok(Gateway {
            shared: Arc::new(Shared {
                endpoint,
                identity,
                trust,
                snapshots,
                events,
                link_config,
                advertise,
                conns: Mutex::new(HashMap::new()),
                pick: std::sync::atomic::AtomicU64::new(0),
                relay_idle: DEFAULT_RELAY_IDLE,
                peer_sessions: Mutex::new(HashMap::new()),
                link_waits: Mutex::new(std::collections::HashSet::new()),
            }),
        })
    }

    /// Sets how long a relayed stream may stay silent both ways before it is closed.
    pub fn with_relay_idle_timeout(mut self, idle: std::time::Duration) -> Gateway {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.relay_idle = idle;
        }
        self
    }

    /// The address the endpoint is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared
            .endpoint
            .local_addr()
            .expect("bound endpoint has an address")
    }

    /// The address peers are told to use.
    pub fn advertised(&self) -> SocketAddr {
        self.shared.advertise
    }

    /// Runs the gateway until the endpoint is closed.
    pub async fn run(self) {
        let shared = self.shared;
        // Every reason is a series from the start, so a rate over it reads 0, not nothing.
        for refusal in ferry_federation::Refusal::ALL {
            metrics::counter!("ferry_gateway_refusals_total", "reason" => refusal.as_str())
                .increment(0);
        }
        for reason in ["too_many_connections", "handshake"] {
            metrics::counter!("ferry_gateway_handshake_failures_total", "reason" => reason)
                .increment(0);
        }
        tokio::spawn(crate::link::manage_links(shared.clone()));
        tokio::spawn(watch_links(shared.clone()));
        let handshakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refusal_log = Arc::new(LogLimiter::default());
        while let Some(incoming) = shared.endpoint.accept().await {
            use std::sync::atomic::Ordering::Relaxed;
            if shared.endpoint.open_connections() >= MAX_CONNECTIONS {
                metrics::counter!("ferry_gateway_handshake_failures_total", "reason" => "too_many_connections").increment(1);
                if refusal_log.allow() {
                    tracing::warn!(limit = MAX_CONNECTIONS, "connection refused: the gateway holds its maximum of connections (further refusals for 10 s are counted, not logged)");
                }
                incoming.refuse();
                continue;
            }
            // Under a pile of handshakes, make unproven addresses prove they can receive
            // (QUIC Retry) before we spend a handshake's work on them.
            if handshakes.load(Relaxed) >= RETRY_ABOVE_HANDSHAKES
                && !incoming.remote_address_validated()
            {
                metrics::counter!("ferry_gateway_retries_total").increment(1);
                let _ = incoming.retry();
                continue;
            }
            handshakes.fetch_add(1, Relaxed);
            let (shared, handshakes, refusal_log) =
                (shared.clone(), handshakes.clone(), refusal_log.clone());
            tokio::spawn(async move {
                let remote = incoming.remote_address();
                let result = incoming.await;
                handshakes.fetch_sub(1, Relaxed);
                match result {
                    Ok(conn) => handle_connection(shared, conn).await,
                    Err(e) => {
                        metrics::counter!("ferry_gateway_handshake_failures_total", "reason" => "handshake").increment(1);
                        if refusal_log.allow() {
                            tracing::warn!(%remote, error = %e, "handshake refused (further refusals for 10 s are counted, not logged)");
                        }
                    }
                }
            });
        }
    }
}

/// Connections one peer cluster may hold open to this gateway: one pooled connection per
/// node proxy of the peer plus its gateways, so this bounds the peer clusters' size too.
/// Each connection holds at most CONNECTION_RECEIVE_WINDOW of data in flight toward it.
pub const MAX_CONNECTIONS_PER_PEER: usize = 512;

fn refuse_crowded(conn: &quinn::Connection) {
    metrics::counter!("ferry_gateway_refusals_total", "reason" => "too_many_connections")
        .increment(1);
    tracing::warn!(
        limit = MAX_CONNECTIONS_PER_PEER,
        "connection refused: the peer cluster holds its maximum of connections"
    );
    conn.close(CLOSE_REFUSED, b"too many connections");
}

/// How long a relayed stream may be silent both ways by default.
pub const DEFAULT_RELAY_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long a link connection from a gateway of a cluster not linked here waits for the
/// link to be recorded before it is refused (`unknown_peer`).
pub const LINK_GRACE: std::time::Duration = std::time::Duration::from_secs(2);
/// Clusters whose link connections may wait for [`LINK_GRACE`] at once (one each).
pub const MAX_LINK_WAITS: usize = 8;

/// Connections the gateway holds at most, from all peers together.
pub const MAX_CONNECTIONS: usize = 4096;
/// Handshakes in progress above which new unvalidated addresses get a QUIC Retry first.
pub const RETRY_ABOVE_HANDSHAKES: usize = 64;

/// Lets one log line through per interval; the rest are only counted.
#[derive(Default)]
pub(crate) struct LogLimiter {
    last: Mutex<Option<std::time::Instant>>,
}

impl LogLimiter {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    pub(crate) fn allow(&self) -> bool {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().expect("log limiter lock");
        if last.is_some_and(|at| now < at + Self::EVERY) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// Closes connections of peers whose link disappears from the snapshot.
async fn watch_links(shared: Arc<Shared>) {
    let mut rx = shared.snapshots.clone();
    loop {
        let snapshot = rx.borrow_and_update().clone();
        shared.close_unlinked(&snapshot);
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn alpn_of(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}

async fn handle_connection(shared: Arc<Shared>, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let identity = match tls::peer_identity(&conn, shared.trust.trust_domain()) {
        Ok(id) => id,
        Err(e) => {
            tracing::warn!(%remote, error = %e, "connection without a usable identity");
            conn.close(CLOSE_REFUSED, b"no identity");
            return;
        }
    };
    let alpn = alpn_of(&conn).unwrap_or_default();
    let span = tracing::info_span!("conn", peer = %identity, %remote);
    async move {
        if alpn == ALPN_JOIN {
            crate::join::server::serve(shared, conn, identity).await;
            return;
        }
        let cluster = identity.cluster().clone();
        let linked = shared.snapshot().link(&cluster).is_some();
        if alpn == ALPN_LINK {
            let is_gateway = matches!(identity, Identity::Gateway { .. });
            let linked = linked || (is_gateway && shared.await_link(&cluster, &conn).await);
            if !linked || !is_gateway {
                let reason = if linked {
                    "not_a_gateway"
                } else {
                    "unknown_peer"
                };
                metrics::counter!("ferry_gateway_refusals_total", "reason" => reason).increment(1);
                tracing::warn!(reason, "link connection refused");
                conn.close(CLOSE_REFUSED, reason.as_bytes());
                return;
            }
            if !shared.register(&cluster, ConnKind::Link, &conn) {
                return refuse_crowded(&conn);
            }
            crate::link::accept_session(shared, conn, cluster).await;
        } else if alpn == ALPN_TUNNEL {
            // An unlinked caller still gets its answer as a status on each stream
            // (`admit` refuses it as unknown_peer); only linked callers are registered,
            // so removing a link closes exactly their connections.
            if linked && !shared.register(&cluster, ConnKind::Tunnel, &conn) {
                return refuse_crowded(&conn);
            }
            crate::tunnel::server::serve_connection(shared, conn, identity).await;
        } else {
            conn.close(CLOSE_REFUSED, b"unknown protocol");
        }
    }
    .instrument(span)
    .await
}
