//! Moving bytes both ways between two streams, with an idle timeout: the relay ends when both
//! directions have finished, or when neither side has sent a byte for the timeout (a
//! connection a client forgot must not hold a gateway's or node's resources forever).
//!
//! Used by the gateway (tunnel stream ↔ endpoint) and the node proxy (client ↔ endpoint or
//! tunnel stream). It must not look at the bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

mod quic;
#[cfg(target_os = "linux")]
mod splice;

/// The code a relay resets or stops a QUIC stream with when its TCP side failed: no
/// refusal (those are 1..=9), the transfer was cut.
pub const STREAM_CUT: quinn::VarInt = quinn::VarInt::from_u32(0);

/// Bytes one direction of a user-space relay moves per read and write: big enough that a
/// QUIC stream gets a few packets' worth per write (each write wakes its connection), not
/// tokio's default 8 KiB.
const COPY_BUFFER: usize = 64 * 1024;

/// Where a relay counts the bytes it moves, as they move: `a_to_b` what it read from its
/// first stream (the caller's side), `b_to_a` what it read from the second. Counters are
/// the `metrics` handles of the caller's labels; [`Meter::default`] counts nowhere.
#[derive(Clone, Default)]
pub struct Meter {
    pub a_to_b: Arc<Count>,
    pub b_to_a: Arc<Count>,
}

/// Bytes one direction moved: added to a shared counter (all connections of the same
/// labels) and to this connection's own tally (for its access log line).
pub struct Count {
    counter: metrics::Counter,
    tally: AtomicU64,
}

impl Default for Count {
    fn default() -> Count {
        Count::new(metrics::Counter::noop())
    }
}

impl Count {
    pub fn new(counter: metrics::Counter) -> Count {
        Count {
            counter,
            tally: AtomicU64::new(0),
        }
    }

    pub fn add(&self, n: u64) {
        self.counter.increment(n);
        self.tally.fetch_add(n, Ordering::Relaxed);
    }

    /// What this connection moved so far.
    pub fn total(&self) -> u64 {
        self.tally.load(Ordering::Relaxed)
    }
}

/// One relayed TCP connection's metrics, per service and source and destination cluster
/// (`direction`: `outbound` at the caller's node proxy, `inbound` at the callee's
/// gateway): `ferry_tcp_connections_opened_total` and `ferry_tcp_connections_open` when
/// made, `ferry_tcp_sent_bytes_total` (caller → service) and
/// `ferry_tcp_received_bytes_total` (service → caller) as bytes move, and
/// `ferry_tcp_connections_closed_total` when dropped. Label values must be names the local
/// snapshot knows, never raw input.
pub struct TcpMetrics {
    /// Bytes from the caller toward the service.
    pub sent: Arc<Count>,
    /// Bytes from the service back to the caller.
    pub received: Arc<Count>,
    closed: metrics::Counter,
    open: metrics::Gauge,
}

impl TcpMetrics {
    pub fn open(
        direction: &'static str,
        service: &impl ToString,
        source: &impl ToString,
        destination: &impl ToString,
    ) -> TcpMetrics {
        let labels = [
            ("direction", direction.to_string()),
            ("service", service.to_string()),
            ("source_cluster", source.to_string()),
            ("destination_cluster", destination.to_string()),
        ];
        metrics::counter!("ferry_tcp_connections_opened_total", &labels).increment(1);
        let open = metrics::gauge!("ferry_tcp_connections_open", &labels);
        open.increment(1.0);
        TcpMetrics {
            sent: Arc::new(Count::new(metrics::counter!(
                "ferry_tcp_sent_bytes_total",
                &labels
            ))),
            received: Arc::new(Count::new(metrics::counter!(
                "ferry_tcp_received_bytes_total",
                &labels
            ))),
            closed: metrics::counter!("ferry_tcp_connections_closed_total", &labels),
            open,
        }
    }
}

impl TcpMetrics {
    /// The meter of a relay whose first stream is the caller's side.
    pub fn caller_first(&self) -> Meter {
        Meter {
            a_to_b: self.sent.clone(),
            b_to_a: self.received.clone(),
        }
    }

    /// The meter of a relay whose first stream is the service's side.
    pub fn service_first(&self) -> Meter {
        Meter {
            a_to_b: self.received.clone(),
            b_to_a: self.sent.clone(),
        }
    }
}

impl Drop for TcpMetrics {
    fn drop(&mut self) {
        self.closed.increment(1);
        self.open.decrement(1.0);
    }
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions finished: bytes from `a` to `b`, and from `b` to `a`.
    Done(u64, u64),
    /// One side failed.
    Failed(io::Error),
    /// Neither side sent anything for the idle timeout.
    Idle,
}

/// Relays between `a` and `b` until both finish, one fails, or both are silent for `idle`.
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration, meter: &Meter) -> RelayEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let activity = Activity::new();
    let mut a = Tracked {
        inner: a,
        activity: activity.clone(),
        read: &meter.a_to_b,
    };
    let mut b = Tracked {
        inner: b,
        activity: activity.clone(),
        read: &meter.b_to_a,
    };
    until_idle(
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUFFER, COPY_BUFFER),
        &activity,
        idle,
    )
    .await
}

/// [`relay`] between two TCP connections. On Linux bulk bytes go socket → pipe → socket
/// with `splice(2)` and never through user space, while small messages take a plain read
/// and write (fewer system calls); elsewhere, or when no pipe can be made, it is [`relay`].
pub async fn relay_tcp(
    a: &mut TcpStream,
    b: &mut TcpStream,
    idle: Duration,
    meter: &Meter,
) -> RelayEnd {
    #[cfg(target_os = "linux")]
    match (splice::Pipe::new(), splice::Pipe::new()) {
        (Ok(ab), Ok(ba)) => {
            let activity = Activity::new();
            let ((a_read, a_write), (b_read, b_write)) = (a.split(), b.split());
            let both = async {
                tokio::try_join!(
                    splice::one_way(a_read, b_write, &ab, &activity, &meter.a_to_b),
                    splice::one_way(b_read, a_write, &ba, &activity, &meter.b_to_a),
                )
            };
            return until_idle(both, &activity, idle).await;
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::debug!(error = %e, "no pipe for splice; relaying through user space");
        }
    }
    relay(a, b, idle, meter).await
}

/// [`relay`] between a TCP connection and a QUIC stream (`send`, `recv`), moving quinn's
/// `Bytes` chunks instead of copying through a buffer. Ends as `Done(tcp → QUIC, QUIC →
/// TCP)`. A failure on either side is passed on as one (the QUIC stream reset and stopped,
/// the TCP connection closed with a reset), so neither end takes a cut transfer for a
/// complete one.
pub async fn relay_quic(
    tcp: &mut TcpStream,
    send: &mut quinn::SendStream,
    recv: &mut quinn::RecvStream,
    idle: Duration,
    meter: &Meter,
) -> RelayEnd {
    let activity = Activity::new();
    let end = {
        let (tcp_read, tcp_write) = tcp.split();
        let both = async {
            tokio::try_join!(
                quic::tcp_to_quic(tcp_read, send, &activity, &meter.a_to_b),
                quic::quic_to_tcp(recv, tcp_write, &activity, &meter.b_to_a),
            )
        };
        until_idle(both, &activity, idle).await
    };
    if !matches!(end, RelayEnd::Done(..)) {
        let _ = send.reset(STREAM_CUT);
        let _ = recv.stop(STREAM_CUT);
        // Closing with no linger sends a reset when the caller drops the connection.
        let _ = tcp.set_zero_linger();
    }
    end
}

/// Runs `copy` (both directions) until it ends, or until `activity` shows no bytes for
/// `idle`.
async fn until_idle(
    copy: impl Future<Output = io::Result<(u64, u64)>>,
    activity: &Activity,
    idle: Duration,
) -> RelayEnd {
    tokio::pin!(copy);
    loop {
        let quiet_since = activity.last();
        tokio::select! {
            done = &mut copy => return match done {
                Ok((ab, ba)) => RelayEnd::Done(ab, ba),
                Err(e) => RelayEnd::Failed(e),
            },
            _ = tokio::time::sleep_until(quiet_since + idle) => {
                if activity.last() == quiet_since {
                    return RelayEnd::Idle;
                }
            }
        }
    }
}

/// When bytes last moved, shared by both directions of a relay.
#[derive(Clone)]
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: Arc<AtomicU64>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// A stream that records when it last delivered bytes, and counts them.
struct Tracked<'a, S: ?Sized> {
    inner: &'a mut S,
    activity: Activity,
    read: &'a Count,
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
            self.read.add((buf.filled().len() - before) as u64);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn silence_ends_the_relay_and_traffic_keeps_it() {
        let (mut a, mut a_far) = tokio::io::duplex(64);
        let (mut b, mut b_far) = tokio::io::duplex(64);
        let idle = Duration::from_secs(10);
        let relay =
            tokio::spawn(async move { relay(&mut a, &mut b, idle, &Meter::default()).await });
        // Traffic every 6 s for a minute: never idle.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            a_far.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            b_far.read_exact(&mut one).await.unwrap();
        }
        assert!(!relay.is_finished());
        // Then silence: ended once the idle timeout passes.
        tokio::time::sleep(Duration::from_secs(11)).await;
        assert!(matches!(relay.await.unwrap(), RelayEnd::Idle));
    }

    #[tokio::test(start_paused = true)]
    async fn both_sides_finishing_ends_the_relay_with_counts() {
        let (mut a, mut a_far) = tokio::io::duplex(64);
        let (mut b, mut b_far) = tokio::io::duplex(64);
        let relay = tokio::spawn(async move {
            relay(&mut a, &mut b, Duration::from_secs(5), &Meter::default()).await
        });
        a_far.write_all(b"hello").await.unwrap();
        a_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        b_far.write_all(b"hi").await.unwrap();
        b_far.shutdown().await.unwrap();
        b_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        assert!(matches!(relay.await.unwrap(), RelayEnd::Done(5, 2)));
    }

    /// Two connected TCP streams on loopback.
    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let near = TcpStream::connect(listener.local_addr().unwrap());
        let (near, far) = tokio::join!(near, listener.accept());
        (near.unwrap(), far.unwrap().0)
    }

    #[tokio::test]
    async fn tcp_relay_moves_every_byte_both_ways_and_passes_half_closes_on() {
        let (mut client, mut a) = tcp_pair().await;
        let (mut b, mut server) = tcp_pair().await;
        let relay = tokio::spawn(async move {
            relay_tcp(&mut a, &mut b, Duration::from_secs(30), &Meter::default()).await
        });
        // Far more than one pipe's worth, in odd-sized writes, each byte position-dependent.
        let up: Vec<u8> = (0..9_000_001u32).map(|i| (i * 7 % 251) as u8).collect();
        let expected = up.clone();
        let sender = tokio::spawn(async move {
            for piece in up.chunks(100_003) {
                client.write_all(piece).await.unwrap();
            }
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(got == expected, "the bytes arrived intact and in order");
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(sender.await.unwrap(), b"done");
        match relay.await.unwrap() {
            RelayEnd::Done(ab, ba) => assert_eq!((ab, ba), (9_000_001, 4)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn tcp_relay_keeps_order_as_messages_switch_between_small_and_bulk() {
        let (mut client, mut a) = tcp_pair().await;
        let (mut b, mut server) = tcp_pair().await;
        let relay = tokio::spawn(async move {
            relay_tcp(&mut a, &mut b, Duration::from_secs(30), &Meter::default()).await
        });
        // Around the switch point, far above it and tiny, each answered before the next is
        // sent, so every size is read on its own.
        let sizes = [1, 70_000, 5, 16_384, 16_383, 16_385, 300_000, 2, 65_536, 7];
        let mut sent = 0u64;
        for (i, &size) in sizes.iter().enumerate() {
            let message: Vec<u8> = (0..size).map(|j| ((i * 31 + j) % 253) as u8).collect();
            client.write_all(&message).await.unwrap();
            let mut got = vec![0u8; size];
            server.read_exact(&mut got).await.unwrap();
            assert!(got == message, "message {i} ({size} B) arrived intact");
            server.write_all(&message).await.unwrap();
            let mut back = vec![0u8; size];
            client.read_exact(&mut back).await.unwrap();
            assert!(back == message, "answer {i} ({size} B) arrived intact");
            sent += size as u64;
        }
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        server.shutdown().await.unwrap();
        client.read_to_end(&mut rest).await.unwrap();
        match relay.await.unwrap() {
            RelayEnd::Done(ab, ba) => assert_eq!((ab, ba), (sent, sent)),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn tcp_relay_ends_when_idle_and_on_a_reset() {
        let (_client, mut a) = tcp_pair().await;
        let (mut b, _server) = tcp_pair().await;
        let end = relay_tcp(
            &mut a,
            &mut b,
            Duration::from_millis(200),
            &Meter::default(),
        )
        .await;
        assert!(matches!(end, RelayEnd::Idle), "{end:?}");

        let (client, mut a) = tcp_pair().await;
        let (mut b, _server) = tcp_pair().await;
        let relay = tokio::spawn(async move {
            relay_tcp(&mut a, &mut b, Duration::from_secs(30), &Meter::default()).await
        });
        client.set_zero_linger().unwrap();
        drop(client);
        let end = tokio::time::timeout(Duration::from_secs(5), relay)
            .await
            .expect("a reset ends the relay")
            .unwrap();
        assert!(matches!(end, RelayEnd::Failed(_)), "{end:?}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn splice_pipes_can_be_made() {
        let pipe = splice::Pipe::new().expect("a pipe for splice");
        assert!(pipe.capacity() >= 4096);
    }
}
