//! Transports: one UDP socket and one TCP listener on the same address, feeding the
//! [`MeshHandler`].
//!
//! Every message passes [`precheck`] and the rate limiter before hickory parses it. Over UDP
//! an answer is never larger than [`MAX_AMPLIFICATION`](crate::handler::MAX_AMPLIFICATION) times the query (nor the client's
//! EDNS size, nor 1232 bytes): see [`udp_answer_limit`]. A larger one goes out truncated with TC set and the
//! client repeats it over TCP, where the source address is proven. Answers from the zone are
//! computed inline on the UDP loop; forwarded queries run in their own tasks.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use crate::handler::udp_answer_limit;
use crate::handler::MeshHandler;
use crate::packet::{header_reply, precheck, rcode, Precheck, HEADER_LEN};
use crate::ratelimit::{RateLimiter, Verdict};

/// Largest UDP query accepted; larger datagrams are dropped.
const MAX_UDP_QUERY: usize = 4096;
/// Most TCP connections open at once; more are closed at accept.
const MAX_TCP_CONNECTIONS: usize = 512;
/// Most TCP connections open at once from one client address.
const MAX_TCP_PER_SOURCE: usize = 16;
/// Largest query accepted over TCP; a longer one closes the connection.
const MAX_TCP_QUERY: usize = 4096;
/// Most queries answered on one TCP connection before it is closed.
const MAX_TCP_QUERIES: usize = 10_000;
/// A TCP connection idle this long (or this slow to deliver a message, or to take an answer)
/// is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// Shared state of both transports.
pub(crate) struct Shared {
    pub handler: Arc<MeshHandler>,
    pub limiter: Option<RateLimiter>,
}

impl Shared {
    pub(crate) fn verdict(&self, src: SocketAddr) -> Verdict {
        match &self.limiter {
            Some(l) => l.check(src.ip(), Instant::now()),
            None => Verdict::Allow,
        }
    }
}

/// What the UDP transport does with one datagram.
#[derive(Debug)]
pub enum Datagram {
    /// Send nothing.
    Ignore,
    /// Send this header-only reply (FORMERR, or TC for a rate-limited source).
    Reply([u8; HEADER_LEN]),
    /// Answer the request, in at most `limit` bytes.
    Answer {
        /// The parsed request.
        request: Box<Request>,
        /// The UDP size limit of the answer.
        limit: u16,
    },
}

/// Checks, rate-limits and parses one datagram from `src`.
pub fn triage(packet: &[u8], src: SocketAddr, limiter: Option<&RateLimiter>) -> Datagram {
    if packet.len() > MAX_UDP_QUERY {
        metrics::counter!("ferry_dns_dropped_total", "reason" => "oversized").increment(1);
        return Datagram::Ignore;
    }
    let check = precheck(packet);
    if check == Precheck::Drop {
        metrics::counter!("ferry_dns_dropped_total", "reason" => "malformed").increment(1);
        return Datagram::Ignore;
    }
    // Rate-limit before any reply, FORMERR included: a spoofed flood gets nothing back.
    let verdict = limiter.map_or(Verdict::Allow, |l| l.check(src.ip(), Instant::now()));
    match verdict {
        Verdict::Allow => {}
        Verdict::Slip => {
            metrics::counter!("ferry_dns_ratelimited_total").increment(1);
            metrics::counter!("ferry_dns_dropped_total", "reason" => "rate_limit_slip")
                .increment(1);
            return Datagram::Reply(header_reply(packet, 0, true));
        }
        Verdict::Drop => {
            metrics::counter!("ferry_dns_ratelimited_total").increment(1);
            metrics::counter!("ferry_dns_dropped_total", "reason" => "rate_limit").increment(1);
            return Datagram::Ignore;
        }
    }
    if check == Precheck::FormErr {
        return Datagram::Reply(header_reply(packet, rcode::FORMERR, false));
    }
    match Request::from_bytes(packet.to_vec(), src, Protocol::Udp) {
        Ok(request) => {
            let limit = udp_answer_limit(packet.len(), request.max_payload());
            Datagram::Answer {
                request: Box::new(request),
                limit,
            }
        }
        Err(_) => Datagram::Reply(header_reply(packet, rcode::FORMERR, false)),
    }
}

/// Most datagrams read (and answers written) with one system call.
const BATCH: usize = 32;

pub(crate) async fn serve_udp(socket: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut bufs = vec![[0u8; MAX_UDP_QUERY + 1]; BATCH];
    let mut replies: Vec<(Vec<u8>, SocketAddr)> = Vec::with_capacity(BATCH);
    loop {
        if let Err(e) = socket.readable().await {
            tracing::warn!(error = %e, "dns udp socket failed");
            return;
        }
        let received = match socket.try_io(Interest::READABLE, || batch::recv(&socket, &mut bufs)) {
            Ok(r) => r,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                // ICMP errors from earlier sends surface here; they are not fatal.
                tracing::debug!(error = %e, "udp receive error");
                continue;
            }
        };
        for (buf, &(n, src)) in bufs.iter().zip(&received) {
            if src.port() == 0 {
                // Nothing can be answered to port 0 (and it is a favourite of reflection).
                continue;
            }
            match triage(&buf[..n], src, shared.limiter.as_ref()) {
                Datagram::Ignore => {}
                Datagram::Reply(header) => replies.push((header.to_vec(), src)),
                Datagram::Answer { request, limit } => {
                    if shared.handler.answers_at_once(&request) {
                        replies.push((shared.handler.respond(&request, limit).await, src));
                    } else {
                        let socket = socket.clone();
                        let handler = shared.handler.clone();
                        tokio::spawn(async move {
                            let reply = handler.respond(&request, limit).await;
                            let _ = socket.send_to(&reply, src).await;
                        });
                    }
                }
            }
        }
        send_all(&socket, &mut replies).await;
    }
}

/// Sends every reply, batched while the socket takes them, one by one when it pushes back.
async fn send_all(socket: &UdpSocket, replies: &mut Vec<(Vec<u8>, SocketAddr)>) {
    let mut sent = 0;
    while sent < replies.len() {
        match socket.try_io(Interest::WRITABLE, || batch::send(socket, &replies[sent..])) {
            Ok(0) => break,
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    for (reply, dst) in &replies[sent..] {
        let _ = socket.send_to(reply, *dst).await;
    }
    replies.clear();
}

/// recvmmsg/sendmmsg: one system call for a batch of datagrams.
mod batch {
    use std::io::{self, IoSlice, IoSliceMut};
    use std::net::SocketAddr;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{recvmmsg, sendmmsg, MsgFlags, MultiHeaders, SockaddrStorage};

    /// Reads up to `bufs.len()` datagrams without blocking: `(length, source)` of each, in
    /// the order of `bufs`.
    pub fn recv<const N: usize>(
        socket: &impl AsRawFd,
        bufs: &mut [[u8; N]],
    ) -> io::Result<Vec<(usize, SocketAddr)>> {
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(iovs.len(), None);
        let results = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        Ok(results
            .map(|m| (m.bytes, m.address.and_then(to_std)))
            .map(|(n, a)| (n, a.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))))
            .collect())
    }

    /// Sends as many of `msgs` as the socket takes without blocking; returns how many.
    pub fn send(socket: &impl AsRawFd, msgs: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
        let msgs = &msgs[..msgs.len().min(super::BATCH)];
        let iovs: Vec<[IoSlice<'_>; 1]> = msgs.iter().map(|(b, _)| [IoSlice::new(b)]).collect();
        let addrs: Vec<Option<SockaddrStorage>> = msgs
            .iter()
            .map(|(_, a)| Some(SockaddrStorage::from(*a)))
            .collect();
        let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(msgs.len(), None);
        let sent = sendmmsg(
            socket.as_raw_fd(),
            &mut headers,
            &iovs,
            &addrs,
            [],
            MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        Ok(sent.count())
    }

    fn to_std(addr: SockaddrStorage) -> Option<SocketAddr> {
        if let Some(v4) = addr.as_sockaddr_in() {
            return Some(SocketAddr::from(*v4));
        }
        addr.as_sockaddr_in6().map(|v6| SocketAddr::from(*v6))
    }
}

/// Open TCP connections per client address; an entry leaves when its last connection ends.
#[derive(Default)]
struct PerSource(Mutex<HashMap<IpAddr, usize>>);

/// One open connection counted in [`PerSource`].
struct SourceSlot {
    table: Arc<PerSource>,
    ip: IpAddr,
}

impl PerSource {
    fn acquire(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= MAX_TCP_PER_SOURCE {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

pub(crate) async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let per_source = Arc::new(PerSource::default());
    loop {
        let (stream, src) = match listener.accept().await {
            Ok(v) => v,
            Err(e) => {
                tracing::debug!(error = %e, "tcp accept error");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(source_slot) = per_source.acquire(crate::ratelimit::source_key(src.ip())) else {
            metrics::counter!("ferry_dns_dropped_total", "reason" => "tcp_per_source").increment(1);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics::counter!("ferry_dns_dropped_total", "reason" => "tcp_connections")
                .increment(1);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, src, &shared).await {
                tracing::debug!(%src, error = %e, "dns tcp connection ended");
            }
            drop(slot);
            drop(source_slot);
        });
    }
}

async fn serve_connection(
    mut stream: TcpStream,
    src: SocketAddr,
    shared: &Shared,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    for _ in 0..MAX_TCP_QUERIES {
        let len = match timeout(TCP_IDLE, stream.read_u16()).await {
            Ok(Ok(len)) => usize::from(len),
            // Idle, or the client closed: both end the connection quietly.
            Ok(Err(_)) | Err(_) => return Ok(()),
        };
        if len > MAX_TCP_QUERY {
            return Err(std::io::Error::other(format!(
                "a {len}-byte query; queries are at most {MAX_TCP_QUERY} bytes"
            )));
        }
        let mut msg = vec![0u8; len];
        timeout(TCP_IDLE, stream.read_exact(&mut msg))
            .await
            .map_err(|_| std::io::Error::other("message not delivered in time"))??;
        let mut head = [0u8; HEADER_LEN];
        let n = head.len();
        if msg.len() >= n {
            head.copy_from_slice(&msg[..n]);
        }
        let reply = match precheck(&msg) {
            Precheck::Drop => return Ok(()),
            Precheck::FormErr => header_reply(&msg, rcode::FORMERR, false).to_vec(),
            Precheck::Parse => match shared.verdict(src) {
                Verdict::Allow => match Request::from_bytes(msg, src, Protocol::Tcp) {
                    Ok(request) => shared.handler.respond(&request, u16::MAX).await,
                    Err(_) => header_reply(&head, rcode::FORMERR, false).to_vec(),
                },
                Verdict::Slip | Verdict::Drop => {
                    metrics::counter!("ferry_dns_ratelimited_total").increment(1);
                    metrics::counter!("ferry_dns_refused_total", "reason" => "rate_limit")
                        .increment(1);
                    header_reply(&msg, rcode::REFUSED, false).to_vec()
                }
            },
        };
        let len = u16::try_from(reply.len()).unwrap_or(u16::MAX);
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply[..usize::from(len)]);
        timeout(TCP_IDLE, stream.write_all(&framed))
            .await
            .map_err(|_| std::io::Error::other("client does not read its answers"))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::MAX_UDP_PAYLOAD;

    #[test]
    fn udp_answers_are_bounded_by_the_query_size() {
        assert_eq!(udp_answer_limit(50, 512), 200);
        assert_eq!(udp_answer_limit(200, 512), 512);
        assert_eq!(udp_answer_limit(1000, 4096), MAX_UDP_PAYLOAD);
        assert_eq!(udp_answer_limit(1000, 100), 512);
    }
}
