//! One direction of a TCP-to-TCP relay with `splice(2)`: the kernel moves the bytes from
//! one socket into a pipe and from the pipe into the other socket, as HAProxy does, so they
//! are never copied into this process.
//!
//! The pipe is always drained into the destination before more is read from the source,
//! so a splice into it never finds it full: an `EAGAIN` always comes from the socket and
//! may clear that socket's readiness.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::sys::socket::{shutdown, Shutdown};
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::Activity;

/// A pipe for one direction, and how much it holds.
pub(super) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// How many bytes the pipe holds.
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn new() -> io::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)?;
        // The kernel's default size (64 KiB, HAProxy's too). A 1 MiB pipe moved bulk data
        // with less CPU here (0.23 vs 0.36 s/GB) but new connections looked slower in the
        // same comparison, and every pipe would be able to pin 1 MiB.
        let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ)?;
        Ok(Pipe {
            read,
            write,
            capacity: usize::try_from(capacity).unwrap_or(1 << 16).max(4096),
        })
    }
}

fn flags() -> SpliceFFlags {
    SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK
}

/// Moves bytes from `from` to `to` until `from` ends (then half-closes `to`) or either
/// fails; returns how many moved.
pub(super) async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    pipe: &Pipe,
    activity: &Activity,
) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let filled = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(
                    from.as_fd(),
                    None,
                    &pipe.write,
                    None,
                    pipe.capacity,
                    flags(),
                )
                .map_err(io::Error::from)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        };
        if filled == 0 {
            // The source finished: pass the half-close on (the peer may already be gone).
            let _ = shutdown(to.as_raw_fd(), Shutdown::Write);
            return Ok(total);
        }
        activity.touch();
        let mut left = filled;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(&pipe.read, None, to.as_fd(), None, left, flags()).map_err(io::Error::from)
            }) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the destination took no bytes",
                    ))
                }
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += filled as u64;
    }
}
