//! Tunnel streams: one QUIC bidirectional stream per proxied connection.
//!
//! Server side (in the gateway): read the header, admit it against the snapshot (linked
//! caller, exported service, known port, healthy endpoint, or the one named endpoint of a
//! headless service), connect to a local endpoint admission answered with only, answer a
//! status, then relay bytes both ways with half-closes.
//! Client side ([`TunnelClient`], used by node proxies): pooled long-lived connections
//! to remote gateways, so a call costs one stream, never a handshake.
//! Never connects to an address the caller chose.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::relay::RelayEnd;
use ferry_federation::{admit, revoked, ClusterId, Identity, Refusal, TunnelHeader, TunnelStatus};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::server::Shared;
use crate::tls::{self, IdentityStore, PeerExpectation, TrustStore, ALPN_TUNNEL};

const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_HEADER: usize = 1024;

/// Accepts tunnel streams on one connection until it closes.
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    caller: Identity,
) {
    let caller = Arc::new(caller);
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                let shared = shared.clone();
                let caller = caller.clone();
                tokio::spawn(async move { serve_stream(shared, send, recv, &caller).await });
            }
            Err(e) => {
                tracing::debug!(reason = %e, "tunnel connection ended");
                return;
            }
        }
    }
}

async fn read_header(recv: &mut quinn::RecvStream) -> Result<(TunnelHeader, Vec<u8>), Refusal> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 512];
    loop {
        match TunnelHeader::decode(&buf) {
            Ok(Some((header, used))) => return Ok((header, buf.split_off(used))),
            Ok(None) if buf.len() < MAX_HEADER => {}
            _ => return Err(Refusal::BadHeader),
        }
        match recv.read(&mut chunk).await {
            Ok(Some(n)) => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(Refusal::BadHeader),
        }
    }
}

async fn refuse(
    mut send: quinn::SendStream,
    caller: &Identity,
    header: Option<&TunnelHeader>,
    refusal: Refusal,
) {
    metrics::counter!("ferry_gateway_refusals_total", "reason" => refusal.as_str()).increment(1);
    match header {
        Some(h) => tracing::warn!(
            caller = %caller, service = %h.service, port = %h.port,
            endpoint = h.endpoint.as_ref().map_or("", |e| e.as_str()),
            reason = refusal.as_str(), "tunnel stream refused"
        ),
        None => {
            tracing::warn!(caller = %caller, reason = refusal.as_str(), "tunnel stream refused")
        }
    }
    let _ = send
        .write_all(&TunnelStatus::Refused(refusal).encode())
        .await;
    let _ = send.finish();
    // Give the status a moment to leave before the stream is dropped.
    let _ = tokio::time::timeout(Duration::from_secs(1), send.stopped()).await;
}

async fn serve_stream(
    shared: Arc<Shared>,
    send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    caller: &Identity,
) {
    let (header, early) = match tokio::time::timeout(HEADER_TIMEOUT, read_header(&mut recv)).await {
        Ok(Ok(h)) => h,
        Ok(Err(r)) => return refuse(send, caller, None, r).await,
        Err(_) => return refuse(send, caller, None, Refusal::BadHeader).await,
    };
    let snapshot = shared.snapshot();
    let endpoints = match admit(&snapshot, caller, &header, shared.next_pick()) {
        Ok(e) => e,
        Err(r) => return refuse(send, caller, Some(&header), r).await,
    };
    let mut upstream = None;
    for addr in endpoints {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                upstream = Some(s);
                break;
            }
            Ok(Err(e)) => tracing::debug!(%addr, error = %e, "endpoint refused the connection"),
            Err(_) => tracing::debug!(%addr, "endpoint connect timed out"),
        }
    }
    let Some(mut tcp) = upstream else {
        // A named endpoint that does not answer is that endpoint's failure, not the service's.
        let refusal = match header.endpoint {
            Some(_) => Refusal::EndpointUnhealthy,
            None => Refusal::NoEndpoints,
        };
        return refuse(send, caller, Some(&header), refusal).await;
    };
    let _ = tcp.set_nodelay(true);
    let mut send = send;
    if send.write_all(&TunnelStatus::Ok.encode()).await.is_err() {
        return;
    }
    if !early.is_empty() && tcp.write_all(&early).await.is_err() {
        return;
    }
    metrics::counter!("ferry_gateway_streams_total", "result" => "ok").increment(1);
    let mut stream = tokio::io::join(recv, send);
    // The stream lives only while what admitted it holds: an unexport or a link removal
    // cuts it at the next snapshot, not when the transfer happens to end.
    let mut snapshots = shared.snapshots.clone();
    let cut = {
        let relay = crate::relay::relay(&mut stream, &mut tcp, shared.relay_idle);
        tokio::pin!(relay);
        loop {
            tokio::select! {
                done = &mut relay => {
                    match done {
                        RelayEnd::Done(up, down) => tracing::debug!(service = %header.service, up, down, "tunnel stream done"),
                        RelayEnd::Failed(e) => tracing::debug!(service = %header.service, error = %e, "tunnel stream ended"),
                        RelayEnd::Idle => {
                            metrics::counter!("ferry_gateway_streams_idle_closed_total").increment(1);
                            tracing::debug!(service = %header.service, "tunnel stream idle; closed");
                        }
                    }
                    break None;
                }
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        // The snapshot source is gone (shutting down): finish the transfer.
                        let _ = (&mut relay).await;
                        break None;
                    }
                    let snapshot = snapshots.borrow_and_update().clone();
                    if let Some(refusal) = revoked(&snapshot, caller, &header) {
                        break Some(refusal);
                    }
                }
            }
        }
    };
    if let Some(refusal) = cut {
        tracing::info!(service = %header.service, reason = refusal.as_str(), "open tunnel stream cut: no longer admitted");
        metrics::counter!("ferry_gateway_streams_cut_total", "reason" => refusal.as_str())
            .increment(1);
        let (recv, mut send) = stream.into_inner();
        let code = quinn::VarInt::from_u32(u32::from(refusal.code()));
        let _ = send.reset(code);
        let mut recv = recv;
        let _ = recv.stop(code);
    }
}

/// Why opening a tunnel stream failed.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    #[error("no gateway address known for cluster `{0}`")]
    NoGateways(ClusterId),
    #[error("cannot reach any gateway of `{cluster}`: {detail}")]
    Unreachable { cluster: ClusterId, detail: String },
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

impl TunnelError {
    /// Whether another cluster may still serve the call (a refusal by policy may not).
    pub fn try_next_cluster(&self) -> bool {
        match self {
            TunnelError::Refused { refusal, .. } => matches!(refusal, Refusal::NoEndpoints),
            _ => true,
        }
    }
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

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
        let endpoint = quinn::Endpoint::client("0.0.0.0:0".parse().expect("valid addr"))
            .map_err(TunnelError::Bind)?;
        Ok(TunnelClient {
            endpoint,
            identity,
            trust,
            pool: std::sync::Mutex::new(HashMap::new()),
            alpn: ALPN_TUNNEL,
        })
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
        let config = tls::client_config(
            self.identity.clone(),
            self.trust.clone(),
            PeerExpectation::Gateway(cluster.clone()),
            self.alpn,
        )?;
        let unreachable = |detail: String| TunnelError::Unreachable {
            cluster: cluster.clone(),
            detail: format!("{addr}: {detail}"),
        };
        let connecting = self
            .endpoint
            .connect_with(config, addr, tls::SERVER_NAME)
            .map_err(|e| unreachable(e.to_string()))?;
        let conn = match tokio::time::timeout(Duration::from_secs(3), connecting).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Err(_) => return Err(unreachable("handshake timed out".into())),
        };
        metrics::counter!("ferry_tunnel_connections_total").increment(1);
        tracing::debug!(%cluster, %addr, "tunnel connection established");
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
        if gateways.is_empty() {
            return Err(TunnelError::NoGateways(cluster.clone()));
        }
        let mut encoded = Vec::with_capacity(128);
        header.encode(&mut encoded);
        let mut last = None;
        for &addr in gateways {
            match self.open_on(cluster, addr, &encoded).await {
                Ok(streams) => return Ok(streams),
                Err(e @ TunnelError::Refused { .. }) => return Err(e),
                Err(e) => {
                    tracing::debug!(%cluster, %addr, error = %e, "gateway unusable; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| TunnelError::NoGateways(cluster.clone())))
    }

    async fn open_on(
        &self,
        cluster: &ClusterId,
        addr: SocketAddr,
        header: &[u8],
    ) -> Result<(quinn::SendStream, quinn::RecvStream), TunnelError> {
        let stream_err = |detail: String| TunnelError::Unreachable {
            cluster: cluster.clone(),
            detail: format!("{addr}: {detail}"),
        };
        let conn = self.connection(cluster, addr).await?;
        let (mut send, mut recv) = conn
            .open_bi()
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        send.write_all(header)
            .await
            .map_err(|e| stream_err(e.to_string()))?;
        let mut status = [0u8; 2];
        match tokio::time::timeout(HEADER_TIMEOUT, recv.read_exact(&mut status)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(stream_err(e.to_string())),
            Err(_) => {
                // The gateway is gone or wedged: drop the pooled connection so the next
                // call dials afresh instead of waiting on it again.
                conn.close(quinn::VarInt::from_u32(0), b"no status");
                return Err(stream_err("no status from the gateway".into()));
            }
        }
        match TunnelStatus::decode(status) {
            Ok(TunnelStatus::Ok) => Ok((send, recv)),
            Ok(TunnelStatus::Refused(refusal)) => Err(TunnelError::Refused {
                cluster: cluster.clone(),
                refusal,
            }),
            Err(e) => Err(stream_err(e.to_string())),
        }
    }
}
