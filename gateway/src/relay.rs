//! Moving bytes both ways between two streams, with an idle timeout: the relay ends when both
//! directions have finished, or when neither side has sent a byte for the timeout (a
//! connection a client forgot must not hold a gateway's or node's resources forever).
//!
//! Used by the gateway (tunnel stream ↔ endpoint) and the node proxy (client ↔ endpoint or
//! tunnel stream). It must not look at the bytes.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

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
pub async fn relay<A, B>(a: &mut A, b: &mut B, idle: Duration) -> RelayEnd
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let start = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let mut a = Tracked {
        inner: a,
        start,
        last: last.clone(),
    };
    let mut b = Tracked {
        inner: b,
        start,
        last: last.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut a, &mut b);
    tokio::pin!(copy);
    loop {
        let quiet_since = start + Duration::from_millis(last.load(Ordering::Relaxed));
        tokio::select! {
            done = &mut copy => return match done {
                Ok((ab, ba)) => RelayEnd::Done(ab, ba),
                Err(e) => RelayEnd::Failed(e),
            },
            _ = tokio::time::sleep_until(quiet_since + idle) => {
                let now_quiet = start + Duration::from_millis(last.load(Ordering::Relaxed));
                if now_quiet == quiet_since {
                    return RelayEnd::Idle;
                }
            }
        }
    }
}

/// A stream that records when it last delivered bytes.
struct Tracked<'a, S: ?Sized> {
    inner: &'a mut S,
    start: Instant,
    last: Arc<AtomicU64>,
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
            let ms = self.start.elapsed().as_millis() as u64;
            self.last.store(ms, Ordering::Relaxed);
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
        let relay = tokio::spawn(async move { relay(&mut a, &mut b, idle).await });
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
        let relay =
            tokio::spawn(async move { relay(&mut a, &mut b, Duration::from_secs(5)).await });
        a_far.write_all(b"hello").await.unwrap();
        a_far.shutdown().await.unwrap();
        let mut got = Vec::new();
        b_far.write_all(b"hi").await.unwrap();
        b_far.shutdown().await.unwrap();
        b_far.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");
        assert!(matches!(relay.await.unwrap(), RelayEnd::Done(5, 2)));
    }
}
