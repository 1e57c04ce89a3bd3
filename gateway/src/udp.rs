//! The UDP socket under every QUIC endpoint: quinn's tokio runtime, with a socket that
//! costs fewer system calls and wake-ups per datagram.
//!
//! quinn's own tokio socket registers for readable *and* writable readiness. On Linux a UDP
//! socket reports a writable edge each time a sent datagram's buffer is freed, that is after
//! every `sendmsg`, so a process that sends one datagram per request also wakes once more
//! per request (an `epoll_wait` that returns at once, a turn of the reactor, nothing to do).
//! And its receive loop reads until `EAGAIN`, so every batch of datagrams costs one more
//! `recvmmsg` that finds nothing. Here:
//!
//! - The socket is registered for readable readiness only. Sends go straight to the
//!   socket; only when one finds the send buffer full (`EAGAIN`; with
//!   [`UDP_SOCKET_BUFFER`](crate::tls::UDP_SOCKET_BUFFER) that is rare) is a duplicate of the
//!   socket registered for writable readiness, to wake the senders when space frees up. The
//!   registration is dropped at the first send that gets through.
//! - A receive that fills fewer slots than it offered has drained the socket: the readiness
//!   is cleared, and the next datagram sets it again (edge-triggered). No `EAGAIN` call.
//!
//! Timers and task spawning are quinn's tokio runtime's.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncTimer, AsyncUdpSocket, Runtime, TokioRuntime, UdpPoller};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// quinn's tokio runtime with [`UdpSocket`] as its socket.
#[derive(Debug)]
pub struct FerryRuntime;

impl Runtime for FerryRuntime {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn AsyncTimer>> {
        TokioRuntime.new_timer(at)
    }

    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) {
        TokioRuntime.spawn(future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        Ok(Arc::new(UdpSocket::new(socket)?))
    }

    fn now(&self) -> Instant {
        TokioRuntime.now()
    }
}

/// A registration for writable readiness, on a duplicate of the socket (one open file can
/// be registered once per descriptor).
type WritableFd = Arc<AsyncFd<std::net::UdpSocket>>;

/// A UDP socket registered for readable readiness only; see the module doc.
pub struct UdpSocket {
    io: AsyncFd<std::net::UdpSocket>,
    state: UdpSocketState,
    /// Set while the send buffer is full: what the senders wait on.
    blocked: Mutex<Option<WritableFd>>,
    /// Whether `blocked` is set, read without the lock on every send.
    is_blocked: AtomicBool,
    log_limit: crate::server::LogLimiter,
}

impl UdpSocket {
    pub fn new(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        Ok(UdpSocket {
            io: register(socket, Interest::READABLE)?,
            state,
            blocked: Mutex::new(None),
            is_blocked: AtomicBool::new(false),
            log_limit: Default::default(),
        })
    }

    fn blocked(&self) -> MutexGuard<'_, Option<WritableFd>> {
        // The guarded value is an Option swapped whole: a panic elsewhere leaves it valid.
        self.blocked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the send buffer was last seen full, and so what to wait on for room.
    fn writable_fd(&self) -> Option<WritableFd> {
        if !self.is_blocked.load(Ordering::Acquire) {
            return None;
        }
        self.blocked().clone()
    }
}

/// Registers `socket` with the reactor for `interest` only (tokio's own `UdpSocket` always
/// asks for both directions).
///
/// `AsyncFd::with_interest` is deprecated because a type could hand it one descriptor and
/// later another (tokio#8587); its replacement is `unsafe`, which this workspace forbids. A
/// `std::net::UdpSocket` owns its descriptor and never replaces it, so the safe call is
/// sound here.
#[allow(deprecated)]
fn register(
    socket: std::net::UdpSocket,
    interest: Interest,
) -> io::Result<AsyncFd<std::net::UdpSocket>> {
    AsyncFd::with_interest(socket, interest)
}

impl fmt::Debug for UdpSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UdpSocket")
            .field("local_addr", &self.io.get_ref().local_addr().ok())
            .field("blocked", &self.writable_fd().is_some())
            .finish()
    }
}

impl AsyncUdpSocket for UdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Writable {
            socket: self,
            wait: None,
        })
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        // Not blocked (the usual case): straight to the socket, no lock, so the connections
        // of a multi-threaded runtime send side by side.
        let tried = !self.is_blocked.load(Ordering::Acquire);
        if tried {
            match self.state.send(self.io.get_ref().into(), transmit) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                sent => return sent,
            }
        }
        let mut blocked = self.blocked();
        let fd = match &*blocked {
            Some(fd) => fd.clone(),
            None => {
                // Nobody waits for room. Unless the send was just tried, a send got through
                // since this one saw the wait: try it. Then register the wait; registering
                // reports the current state, so room freed since the failed send is not
                // missed.
                if !tried {
                    match self.state.send(self.io.get_ref().into(), transmit) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        sent => return sent,
                    }
                }
                match self
                    .io
                    .get_ref()
                    .try_clone()
                    .and_then(|dup| register(dup, Interest::WRITABLE))
                {
                    Ok(fd) => {
                        *blocked = Some(Arc::new(fd));
                        self.is_blocked.store(true, Ordering::Release);
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    Err(e) => {
                        // No descriptor or watch left to wait with. quinn ends a connection
                        // on any send error but WouldBlock, and waiting without a
                        // registration would spin: the datagram counts as lost instead, and
                        // loss recovery sends it again.
                        if self.log_limit.allow() {
                            tracing::warn!(error = %e, "UDP send buffer full and no way to wait for room; datagram dropped (further drops for 10 s are not logged)");
                        }
                        return Ok(());
                    }
                }
            }
        };
        // Sent only while the registration says writable; a send that finds the buffer still
        // full clears that, so the waiters sleep until the next edge.
        let sent = fd.try_io(Interest::WRITABLE, |dup| {
            self.state.send(dup.into(), transmit)
        });
        if sent.is_ok() {
            *blocked = None;
            self.is_blocked.store(false, Ordering::Release);
        }
        sent
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let offered = bufs.len().min(meta.len()).min(quinn::udp::BATCH_SIZE);
        loop {
            let mut ready = match self.io.poll_read_ready(cx) {
                Poll::Ready(ready) => ready?,
                Poll::Pending => return Poll::Pending,
            };
            match ready.try_io(|io| self.state.recv(io.get_ref().into(), bufs, meta)) {
                Ok(Ok(got)) => {
                    // `recvmmsg` fills every slot it can; elsewhere quinn-udp reads one
                    // datagram a call, so a short read says nothing there.
                    if cfg!(any(target_os = "linux", target_os = "android")) && got < offered {
                        ready.clear_ready();
                    }
                    return Poll::Ready(Ok(got));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // EAGAIN: readiness cleared by try_io; wait for the next edge.
                Err(_would_block) => continue,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

/// One connection's wait for room in the send buffer.
struct Writable {
    socket: Arc<UdpSocket>,
    wait: Option<Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>>,
}

impl fmt::Debug for Writable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Writable")
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

impl UdpPoller for Writable {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.wait.is_none() {
            // Not blocked: the send is tried (and a full buffer registers the wait).
            let Some(fd) = self.socket.writable_fd() else {
                return Poll::Ready(Ok(()));
            };
            // `writable()` keeps a waiter per caller, so every blocked connection is woken.
            self.wait = Some(Box::pin(async move { fd.writable().await.map(drop) }));
        }
        let done = self.wait.as_mut().expect("set above").as_mut().poll(cx);
        if done.is_ready() {
            self.wait = None;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn transmit(to: SocketAddr, bytes: &[u8]) -> Transmit<'_> {
        Transmit {
            destination: to,
            ecn: None,
            contents: bytes,
            segment_size: None,
            src_ip: None,
        }
    }

    fn bind() -> UdpSocket {
        UdpSocket::new(std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap()
    }

    /// One poll for up to `slots` datagrams: their contents.
    fn poll_batch(
        socket: &UdpSocket,
        cx: &mut Context<'_>,
        slots: usize,
    ) -> Poll<io::Result<Vec<Vec<u8>>>> {
        let mut store = vec![vec![0u8; 2048]; slots];
        let mut bufs: Vec<IoSliceMut<'_>> = store.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let mut meta = vec![RecvMeta::default(); slots];
        match socket.poll_recv(cx, &mut bufs, &mut meta) {
            Poll::Ready(Ok(n)) => Poll::Ready(Ok((0..n)
                .map(|i| store[i][..meta[i].len].to_vec())
                .collect())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    async fn recv(socket: &UdpSocket, slots: usize) -> Vec<Vec<u8>> {
        tokio::time::timeout(
            Duration::from_secs(5),
            std::future::poll_fn(|cx| poll_batch(socket, cx, slots)),
        )
        .await
        .expect("a datagram arrives")
        .unwrap()
    }

    fn poll_once(socket: &UdpSocket, slots: usize) -> Poll<io::Result<Vec<Vec<u8>>>> {
        poll_batch(
            socket,
            &mut Context::from_waker(std::task::Waker::noop()),
            slots,
        )
    }

    #[tokio::test]
    async fn full_batches_keep_reading_and_a_short_one_waits_for_the_next_edge() {
        let (a, b) = (bind(), bind());
        let to_b = b.local_addr().unwrap();
        for i in 0..3u8 {
            a.try_send(&transmit(to_b, &[i; 100])).unwrap();
        }
        // Batches of one are always full: the readiness stays and each poll reads.
        for i in 0..3u8 {
            assert_eq!(recv(&b, 1).await, vec![vec![i; 100]]);
        }
        // A short batch (one datagram, four slots) means the socket was drained: the
        // readiness is cleared. A datagram that lands before the reactor runs again is
        // not read by a poll (no recvmmsg that could find it is made)...
        a.try_send(&transmit(to_b, b"one")).unwrap();
        assert_eq!(recv(&b, 4).await, vec![b"one".to_vec()]);
        a.try_send(&transmit(to_b, b"two")).unwrap();
        assert!(
            poll_once(&b, 4).is_pending(),
            "a drained socket is not read again before its next edge"
        );
        // ...but its edge wakes the receiver, and it is read then.
        assert_eq!(recv(&b, 4).await, vec![b"two".to_vec()]);
        // Sent from another task while the receiver waits: woken as well.
        let a = Arc::new(a);
        let sender = a.clone();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            sender.try_send(&transmit(to_b, b"late")).unwrap();
        });
        assert_eq!(recv(&b, 4).await, vec![b"late".to_vec()]);
        late.await.unwrap();
    }

    /// A UDP socket bound in a network namespace of its own whose loopback holds packets
    /// in a slow token bucket, so the sender's buffer fills; dropped with the namespace.
    struct SlowLoopback {
        name: String,
    }

    impl SlowLoopback {
        fn new() -> (SlowLoopback, std::net::UdpSocket, std::net::UdpSocket) {
            let name = format!("ferry-udp-test-{}", std::process::id());
            let ns = SlowLoopback { name };
            ns.run("ip", &["netns", "add", &ns.name]);
            ns.run("ip", &["-n", &ns.name, "link", "set", "lo", "up"]);
            ns.run(
                "tc",
                &[
                    "-n", &ns.name, "qdisc", "add", "dev", "lo", "root", "tbf", "rate", "8kbit",
                    "burst", "1600", "latency", "60s",
                ],
            );
            let path = format!("/run/netns/{}", ns.name);
            let (sender, sink) = std::thread::spawn(move || {
                let file = std::fs::File::open(&path).expect("open the namespace");
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                    .expect("enter the namespace");
                let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                (sender, sink)
            })
            .join()
            .unwrap();
            (ns, sender, sink)
        }

        fn run(&self, cmd: &str, args: &[&str]) {
            let out = std::process::Command::new(cmd)
                .args(args)
                .output()
                .unwrap_or_else(|e| panic!("{cmd} (this test needs root and iproute2): {e}"));
            assert!(
                out.status.success(),
                "{cmd} {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }

        /// Drops the queued packets: their buffers go back to the sender.
        fn release(&self) {
            self.run(
                "tc",
                &["-n", &self.name, "qdisc", "del", "dev", "lo", "root"],
            );
        }
    }

    impl Drop for SlowLoopback {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }

    #[tokio::test]
    async fn a_full_send_buffer_makes_the_sender_wait_for_room_then_send() {
        let (ns, sender, sink) = SlowLoopback::new();
        nix::sys::socket::setsockopt(&sender, nix::sys::socket::sockopt::SndBuf, &8192).unwrap();
        let to = sink.local_addr().unwrap();
        let a = Arc::new(UdpSocket::new(sender).unwrap());
        let mut poller = a.clone().create_io_poller();
        let payload = [7u8; 1200];
        let mut sent = 0;
        let full = loop {
            match a.try_send(&transmit(to, &payload)) {
                Ok(()) => sent += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break true,
                Err(e) => panic!("send: {e}"),
            }
            if sent > 1000 {
                break false;
            }
        };
        assert!(
            full,
            "the token bucket holds the packets, so a small send buffer fills"
        );
        assert!(
            a.writable_fd().is_some(),
            "a full buffer registers the wait for room"
        );
        // Still full: the poller waits.
        let pending = tokio::time::timeout(
            Duration::from_millis(200),
            std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)),
        )
        .await;
        if pending.is_ok() {
            // A stale writable edge: the next send must find the buffer full and clear it.
            let e = a.try_send(&transmit(to, &payload)).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
            assert!(
                tokio::time::timeout(
                    Duration::from_millis(200),
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx)),
                )
                .await
                .is_err(),
                "a full buffer keeps the sender waiting"
            );
        }
        // Room frees up: the waiting sender is woken and its send gets through.
        let waiting = tokio::spawn({
            let a = a.clone();
            async move {
                let mut poller = a.clone().create_io_poller();
                loop {
                    std::future::poll_fn(|cx| poller.as_mut().poll_writable(cx))
                        .await
                        .unwrap();
                    match a.try_send(&transmit(to, &[8u8; 1200])) {
                        Ok(()) => return,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("send: {e}"),
                    }
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        ns.release();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("room in the send buffer wakes the waiting sender")
            .unwrap();
        assert!(
            a.writable_fd().is_none(),
            "a send that gets through drops the wait"
        );
        assert!(
            poller
                .as_mut()
                .poll_writable(&mut Context::from_waker(std::task::Waker::noop()))
                .is_ready(),
            "not blocked: nothing to wait for"
        );
    }
}
