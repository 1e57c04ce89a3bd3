//! The calling side of tunnel streams ([`TunnelClient`], used by node proxies): pooled
//! long-lived QUIC connections to remote gateways, so a call costs one stream, never a
//! handshake. It knows nothing of the gateway's server side.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;
use tracing::Instrument as _;

use ferry_federation::{ClusterId, Refusal, TunnelHeader, TunnelStatus, WireError};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::HEADER_TIMEOUT;
use crate::dial::{dial, DialError};
use crate::tls::{self, IdentityStore, PeerExpectation, TrustStore, ALPN_TUNNEL};

/// Why opening a tunnel stream failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("no gateway address known for cluster `{0}`")]
    NoGateways(ClusterId),
    #[error("cannot reach any gateway of `{cluster}`: {addr}: {cause}")]
    Unreachable {
        cluster: ClusterId,
        addr: SocketAddr,
        cause: Unreachable,
    },
    /// The stream failed after it carried some of the caller's bytes: they may have
    /// reached an endpoint, so the call is not tried elsewhere.
    #[error("the stream to `{cluster}` via {addr} failed after it carried data: {cause}")]
    Interrupted {
        cluster: ClusterId,
        addr: SocketAddr,
        cause: Unreachable,
    },
    /// The caller's connection failed while its first bytes were on their way: the stream
    /// was reset, so the endpoint does not take a cut-off upload for a whole one.
    #[error("the caller's connection failed: {0}")]
    CallerFailed(#[source] std::io::Error),
    #[error("gateway of `{cluster}` refused the stream: {}", .refusal.as_str())]
    Refused {
        cluster: ClusterId,
        refusal: Refusal,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot bind the tunnel client endpoint: {0}")]
    Bind(#[source] std::io::Error),
}

/// What went wrong with one gateway.
#[derive(Debug)]
pub enum Unreachable {
    /// The gateway could not be dialled.
    Dial(DialError),
    /// The pooled connection failed.
    Connection(quinn::ConnectionError),
    /// The header could not be sent.
    Write(quinn::WriteError),
    /// The status could not be read.
    Read(quinn::ReadExactError),
    /// No status arrived in time (the gateway is gone or wedged).
    NoStatus,
    /// The status bytes were not a status.
    BadStatus(WireError),
}

impl fmt::Display for Unreachable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreachable::Dial(e) => write!(f, "{e}"),
            Unreachable::Connection(e) => write!(f, "{e}"),
            Unreachable::Write(e) => write!(f, "{e}"),
            Unreachable::Read(e) => write!(f, "{e}"),
            Unreachable::NoStatus => f.write_str("no status from the gateway"),
            Unreachable::BadStatus(e) => write!(f, "{e}"),
        }
    }
}

impl TunnelError {
    /// Whether another cluster may still serve the call (a refusal by policy may not).
    pub fn try_next_cluster(&self) -> bool {
        match self {
            TunnelError::Refused { refusal, .. } => matches!(refusal, Refusal::NoEndpoints),
            TunnelError::Interrupted { .. } | TunnelError::CallerFailed(_) => false,
            _ => true,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

/// How many bytes of the caller's a stream carries before the gateway's status arrives.
/// They are kept, so a refusal that lets another cluster serve the call can replay them
/// there; past this the caller waits for the status.
pub const MAX_EARLY: usize = 64 * 1024;

/// Opens tunnel streams on pooled, long-lived QUIC connections to remote gateways.
pub struct TunnelClient {
    endpoint: quinn::Endpoint,
    identity: Arc<IdentityStore>,
    trust: Arc<TrustStore>,
    pool: std::sync::Mutex<HashMap<(ClusterId, SocketAddr), Slot>>,
    alpn: &'static [u8],
}

impl TunnelClient {
    /// A client with its own UDP socket, presenting `identity` (a node or gateway cert).
    pub fn new(
        identity: Arc<IdentityStore>,
        trust: Arc<TrustStore>,
    ) -> Result<TunnelClient, TunnelError> {
        let endpoint = tls::endpoint("0.0.0.0:0".parse().expect("valid addr"), None)
            .map_err(TunnelError::Bind)?;
        Ok(TunnelClient {
            endpoint,
            identity,
            trust,
            pool: std::sync::Mutex::new(HashMap::new()),
            alpn: ALPN_TUNNEL,
        })
    }

    /// The last measured round trip to each cluster dialled: the smallest of quinn's
    /// smoothed estimates over that cluster's gateways (a closed connection keeps its last
    /// estimate, so a cluster that just went away is still known to be near or far). A
    /// cluster never dialled is not in it.
    pub fn rtts(&self) -> BTreeMap<ClusterId, Duration> {
        self.rtts_of(|_| true)
    }

    /// [`rtts`](Self::rtts) for one cluster: reads only its connections.
    pub fn rtt(&self, cluster: &ClusterId) -> Option<Duration> {
        self.rtts_of(|c| c == cluster).remove(cluster)
    }

    fn rtts_of(&self, wanted: impl Fn(&ClusterId) -> bool) -> BTreeMap<ClusterId, Duration> {
        let slots: Vec<(ClusterId, Slot)> = {
            let pool = self.pool.lock().expect("pool lock");
            pool.iter()
                .filter(|((cluster, _), _)| wanted(cluster))
                .map(|((cluster, _), slot)| (cluster.clone(), slot.clone()))
                .collect()
        };
        let mut rtts: BTreeMap<ClusterId, Duration> = BTreeMap::new();
        for (cluster, slot) in slots {
            // A slot being dialled is skipped: this must never wait.
            let Ok(guard) = slot.try_lock() else { continue };
            let Some(conn) = guard.as_ref() else {
                continue;
            };
            let rtt = conn.rtt();
            rtts.entry(cluster)
                .and_modify(|best| *best = (*best).min(rtt))
                .or_insert(rtt);
        }
        rtts
    }

    /// A pooled connection to one gateway of `cluster`, dialling it if needed.
    pub async fn connection(
        &self,
        cluster: &ClusterId,
        addr: SocketAddr,
    ) -> Result<quinn::Connection, TunnelError> {
        let slot = {
            let mut pool = self.pool.lock().expect("pool lock");
            pool.entry((cluster.clone(), addr)).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok(conn.clone());
            }
        }
        // A gateway dialled before answered within its round trip then; one that does not
        // answer a new handshake in a few of them is gone (a silent gateway is closed by
        // `watch_liveness`), and the caller moves on instead of waiting the full 3 s.
        let dial_timeout = guard.as_ref().map_or(DIAL_TIMEOUT, |old| {
            (old.rtt() * 4 + Duration::from_millis(250)).clamp(REDIAL_TIMEOUT_MIN, DIAL_TIMEOUT)
        });
        let mut config = tls::client_config(
            self.identity.clone(),
            self.trust.clone(),
            PeerExpectation::Gateway(cluster.clone()),
            self.alpn,
        )?;
        config.transport_config(tunnel_transport());
        let unreachable = |cause| TunnelError::Unreachable {
            cluster: cluster.clone(),
            addr,
            cause,
        };
        // A pooled connection outlives the call that dialled it: its span (and quinn's, made
        // under it) must not hang from that call's span, or the call's span would stay
        // open, and unexported, for as long as the connection lives.
        let span = tracing::info_span!(parent: None, "tunnel", %cluster, %addr);
        let conn = dial(&self.endpoint, config, addr, dial_timeout)
            .instrument(span)
            .await
            .map_err(|e| unreachable(Unreachable::Dial(e)))?;
        metrics::counter!("ferry_tunnel_connections_total").increment(1);
        tracing::debug!(%cluster, %addr, "tunnel connection established");
        tokio::spawn(watch_liveness(conn.clone(), cluster.clone(), addr));
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Opens a stream to `cluster` through the first gateway that answers, sends the
    /// header and waits for the gateway's status.
    pub async fn open(
        &self,
        cluster: &ClusterId,
        gateways: &[SocketAddr],
        header: &TunnelHeader,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TunnelError> {
        self.open_pipelined(
            cluster,
            gateways,
            header,
            &mut tokio::io::empty(),
            &mut Vec::new(),
        )
        .await
    }

    /// Opens a stream to `cluster` through the first gateway that answers and sends the
    /// header, then, without waiting for the gateway's status, whatever `caller` sends: a
    /// new connection costs one round trip, not two. The gateway admits the stream before
    /// any of it reaches an endpoint; a refused stream never does.
    ///
    /// `early` holds the caller's bytes sent before the status (at most [`MAX_EARLY`];
    /// the caller is not read past that until the status arrives). It starts with bytes
    /// an earlier attempt took, which are sent first; after a refusal that allows
    /// another cluster ([`TunnelError::try_next_cluster`]) it still holds them all, for
    /// the next attempt. After `Ok` it holds what the stream carried (delivered: for the
    /// caller's byte counts, not to send again), and the caller's remaining bytes are
    /// still unread.
    pub async fn open_pipelined<C: AsyncRead + Unpin + ?Sized>(
        &self,
        cluster: &ClusterId,
        gateways: &[SocketAddr],
        header: &TunnelHeader,
        caller: &mut C,
        early: &mut Vec<u8>,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TunnelError> {
        if gateways.is_empty() {
            return Err(TunnelError::NoGateways(cluster.clone()));
        }
        let mut encoded = Vec::with_capacity(128);
        header.encode(&mut encoded);
        let mut last = None;
        for &addr in gateways {
            match self.open_on(cluster, addr, &encoded, caller, early).await {
                Ok(streams) => return Ok(streams),
                Err(
                    e @ (TunnelError::Refused { .. }
                    | TunnelError::Interrupted { .. }
                    | TunnelError::CallerFailed(_)),
                ) => return Err(e),
                Err(e) => {
                    tracing::debug!(%cluster, %addr, error = %e, "gateway unusable; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| TunnelError::NoGateways(cluster.clone())))
    }

    async fn open_on<C: AsyncRead + Unpin + ?Sized>(
        &self,
        cluster: &ClusterId,
        addr: SocketAddr,
        header: &[u8],
        caller: &mut C,
        early: &mut Vec<u8>,
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TunnelError> {
        // Before any of the caller's bytes left, a failure lets the next gateway or cluster
        // try; after, it does not (they may have reached an endpoint).
        let stream_err = |cause, carried: bool| match carried {
            false => TunnelError::Unreachable {
                cluster: cluster.clone(),
                addr,
                cause,
            },
            true => TunnelError::Interrupted {
                cluster: cluster.clone(),
                addr,
                cause,
            },
        };
        let conn = self.connection(cluster, addr).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| stream_err(Unreachable::Connection(e), false))?;
        let mut chunk = vec![0u8; 16 * 1024];
        let mut caller_done = false;
        // What the caller has already sent (a client usually writes its request as soon
        // as it connects) joins the header in its packet: one packet and one wakeup of the
        // gateway instead of two.
        let room = MAX_EARLY.saturating_sub(early.len()).min(chunk.len());
        if room > 0 {
            match read_now(caller, &mut chunk[..room]).await {
                Some(Ok(0)) => caller_done = true,
                Some(Ok(n)) => early.extend_from_slice(&chunk[..n]),
                Some(Err(e)) => return Err(TunnelError::CallerFailed(e)),
                None => {}
            }
        }
        // Header and the bytes taken so far leave together.
        let mut first = Vec::with_capacity(header.len() + early.len());
        first.extend_from_slice(header);
        first.extend_from_slice(early);
        // A first write that fails found the stream or connection already closed: nothing
        // of it was delivered.
        send.write_all(&first)
            .await
            .map_err(|e| stream_err(Unreachable::Write(e), false))?;
        // While the status is on its way, the caller's bytes follow the header; the status
        // deadline covers those writes too.
        let deadline = tokio::time::Instant::now() + HEADER_TIMEOUT;
        let mut status = [0u8; 2];
        let waited = {
            let status_read = tokio::time::timeout_at(deadline, recv.read_exact(&mut status));
            tokio::pin!(status_read);
            loop {
                let room = MAX_EARLY.saturating_sub(early.len()).min(chunk.len());
                tokio::select! {
                    biased;
                    got = &mut status_read => break got,
                    read = caller.read(&mut chunk[..room]), if !caller_done && room > 0 => match read {
                        // The caller's end of input is passed on by the relay, after the status.
                        Ok(0) => caller_done = true,
                        Err(e) => {
                            let _ = send.reset(quinn::VarInt::from_u32(0));
                            return Err(TunnelError::CallerFailed(e));
                        }
                        Ok(n) => {
                            early.extend_from_slice(&chunk[..n]);
                            match tokio::time::timeout_at(deadline, send.write_all(&chunk[..n])).await {
                                Ok(Ok(())) => {}
                                // The gateway refused and stopped reading: its status says why.
                                Ok(Err(quinn::WriteError::Stopped(_))) => caller_done = true,
                                Ok(Err(e)) => return Err(stream_err(Unreachable::Write(e), true)),
                                Err(_) => {
                                    conn.close(quinn::VarInt::from_u32(0), b"no status");
                                    return Err(stream_err(Unreachable::NoStatus, true));
                                }
                            }
                        }
                    },
                }
            }
        };
        let carried = !early.is_empty();
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stream_err(Unreachable::Read(e), carried)),
            Err(_) => {
                // The gateway is gone or wedged: drop the pooled connection so the next
                // call dials afresh instead of waiting on it again.
                conn.close(quinn::VarInt::from_u32(0), b"no status");
                return Err(stream_err(Unreachable::NoStatus, carried));
            }
        }
        match TunnelStatus::decode(status) {
            Ok(TunnelStatus::Ok) => Ok((send, recv)),
            Ok(TunnelStatus::Refused(refusal)) => Err(TunnelError::Refused {
                cluster: cluster.clone(),
                refusal,
            }),
            Err(e) => Err(stream_err(Unreachable::BadStatus(e), carried)),
        }
    }
}

/// Reads what `caller` holds right now, without waiting: `None` when it has nothing yet.
async fn read_now<C: AsyncRead + Unpin + ?Sized>(
    caller: &mut C,
    buf: &mut [u8],
) -> Option<std::io::Result<usize>> {
    let read = caller.read(buf);
    tokio::pin!(read);
    // A read of a socket that has nothing registers for readiness and is cancel-safe:
    // dropping it here loses no bytes.
    match std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx))).await {
        Poll::Ready(result) => Some(result),
        Poll::Pending => None,
    }
}

/// The longest a first handshake with a gateway may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);
/// The shortest wait for the handshake with a gateway dialled before.
const REDIAL_TIMEOUT_MIN: Duration = Duration::from_millis(300);

/// Keep-alive interval of tunnel connections: short, so a dead gateway is noticed by
/// silence well within a second ([`watch_liveness`]).
const TUNNEL_KEEP_ALIVE: Duration = Duration::from_millis(200);
/// A tunnel connection that receives nothing for this long (or four round trips, if
/// longer) is closed: its gateway is gone.
const SILENT_FOR: Duration = Duration::from_millis(600);

/// Tunnel connections' transport: the shared limits, with a shorter keep-alive.
fn tunnel_transport() -> Arc<quinn::TransportConfig> {
    tls::transport_config_with_keep_alive(TUNNEL_KEEP_ALIVE)
}

/// Closes `conn` when its peer has been silent too long. QUIC alone would wait for its
/// idle timeout (3 s) while calls on the connection hang; with keep-alives every 200 ms
/// a live peer always has something to say, so silence means a dead gateway, and its
/// calls fail over at once.
async fn watch_liveness(conn: quinn::Connection, cluster: ClusterId, addr: SocketAddr) {
    let mut received = conn.stats().udp_rx.datagrams;
    let mut since = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = conn.closed() => return,
            _ = tokio::time::sleep(TUNNEL_KEEP_ALIVE / 2) => {}
        }
        let now = tokio::time::Instant::now();
        let count = conn.stats().udp_rx.datagrams;
        if count != received {
            received = count;
            since = now;
            continue;
        }
        let limit = SILENT_FOR.max(conn.rtt() * 4);
        if now.duration_since(since) > limit {
            metrics::counter!("ferry_tunnel_silent_closed_total").increment(1);
            tracing::warn!(%cluster, %addr, silent_for = ?now.duration_since(since), "gateway silent; closing the tunnel connection so its calls fail over");
            conn.close(crate::dial::CLOSE_SILENT, b"silent");
            return;
        }
    }
}
