//! Forwarding names outside the mesh zone to upstream resolvers.
//!
//! Each forwarded query leaves from a fresh socket (a random source port) with a fresh random
//! ID, and only a reply from the upstream's address with that ID and the same question is
//! accepted, so an off-path attacker has to guess 32 bits. Upstreams are tried in order; UDP
//! replies with TC set are retried over TCP. Nothing is cached.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::Message;
use ring::rand::{SecureRandom, SystemRandom};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_millis(1500);
/// Most forwarded queries in flight at once (each holds a socket); more are answered SERVFAIL.
const MAX_IN_FLIGHT: usize = 256;
/// The EDNS payload size asked of upstreams: larger answers come back truncated and are
/// fetched over TCP rather than cut off at the UDP read buffer.
const UPSTREAM_EDNS_PAYLOAD: u16 = 1232;
/// Largest UDP reply read from an upstream.
const MAX_UPSTREAM_UDP: usize = 4096;

/// Why a query could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Too many forwarded queries are waiting already.
    #[error("too many forwarded queries in flight ({MAX_IN_FLIGHT}); upstreams are slow or a client floods")]
    Busy,
    /// Every upstream failed.
    #[error("no upstream answered ({tried} tried): {last}")]
    NoAnswer {
        /// How many upstreams were asked.
        tried: usize,
        /// The last failure.
        last: String,
    },
}

/// Sends queries to upstream resolvers.
#[derive(Debug)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    in_flight: Arc<Semaphore>,
    rng: SystemRandom,
}

impl Forwarder {
    /// A forwarder to `upstreams`, or `None` when there are none.
    pub fn new(upstreams: Vec<SocketAddr>) -> Option<Forwarder> {
        (!upstreams.is_empty()).then(|| Forwarder {
            upstreams,
            in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            rng: SystemRandom::new(),
        })
    }

    /// Forwards the query `query` (raw bytes; its EDNS size is capped at 1232 on the way) and
    /// returns the upstream's reply (its ID is the upstream's, not the client's). `tcp`
    /// forwards over TCP from the start.
    pub async fn forward(&self, query: &[u8], tcp: bool) -> Result<Message, ForwardError> {
        let _permit = self
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ForwardError::Busy)?;
        let mut outgoing = Message::from_vec(query).map_err(|e| ForwardError::NoAnswer {
            tried: 0,
            last: format!("the query does not parse: {e}"),
        })?;
        if let Some(edns) = outgoing.edns.as_mut() {
            let payload = edns.max_payload().min(UPSTREAM_EDNS_PAYLOAD);
            edns.set_max_payload(payload);
        }
        let mut last = String::new();
        for upstream in &self.upstreams {
            let mut id = [0u8; 2];
            if self.rng.fill(&mut id).is_err() {
                last = "the system random generator failed".into();
                continue;
            }
            outgoing.metadata.id = u16::from_be_bytes(id);
            let msg = match outgoing.to_vec() {
                Ok(m) => m,
                Err(e) => {
                    last = format!("the query cannot be re-encoded: {e}");
                    break;
                }
            };
            let result = if tcp {
                ask_tcp(*upstream, &msg).await
            } else {
                match ask_udp(*upstream, &msg).await {
                    Ok(reply) if reply.metadata.truncation => ask_tcp(*upstream, &msg).await,
                    other => other,
                }
            };
            match result.and_then(|reply| check_reply(&msg, reply)) {
                Ok(reply) => return Ok(reply),
                Err(e) => {
                    tracing::debug!(%upstream, error = %e, "upstream failed");
                    last = format!("{upstream}: {e}");
                }
            }
        }
        Err(ForwardError::NoAnswer {
            tried: self.upstreams.len(),
            last,
        })
    }
}

fn check_reply(sent: &[u8], reply: Message) -> Result<Message, String> {
    let id = u16::from_be_bytes([sent[0], sent[1]]);
    if reply.metadata.id != id {
        return Err("reply with a different ID".into());
    }
    let sent = Message::from_vec(sent).map_err(|e| e.to_string())?;
    if reply.queries != sent.queries {
        return Err("reply for a different question".into());
    }
    Ok(reply)
}

async fn ask_udp(upstream: SocketAddr, msg: &[u8]) -> Result<Message, String> {
    let bind: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
    socket.connect(upstream).await.map_err(|e| e.to_string())?;
    socket.send(msg).await.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; MAX_UPSTREAM_UDP];
    let wait = async {
        loop {
            // A connected socket only sees datagrams from the upstream.
            let n = socket.recv(&mut buf).await.map_err(|e| e.to_string())?;
            if n >= 2 && buf[..2] == msg[..2] {
                return Message::from_vec(&buf[..n]).map_err(|e| e.to_string());
            }
        }
    };
    timeout(UPSTREAM_TIMEOUT, wait)
        .await
        .map_err(|_| "timed out".to_string())?
}

async fn ask_tcp(upstream: SocketAddr, msg: &[u8]) -> Result<Message, String> {
    let exchange = async {
        let mut stream = TcpStream::connect(upstream)
            .await
            .map_err(|e| e.to_string())?;
        let len = u16::try_from(msg.len()).map_err(|_| "query too long".to_string())?;
        let mut framed = Vec::with_capacity(msg.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(msg);
        stream.write_all(&framed).await.map_err(|e| e.to_string())?;
        let len = stream.read_u16().await.map_err(|e| e.to_string())?;
        let mut buf = vec![0u8; usize::from(len)];
        stream
            .read_exact(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Message::from_vec(&buf).map_err(|e| e.to_string())
    };
    timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| "timed out".to_string())?
}
