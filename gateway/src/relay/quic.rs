//! The two directions of a TCP ↔ QUIC stream relay, moving `Bytes` chunks rather than
//! copying through a buffer of this process: quinn keeps what TCP delivered as the chunk it
//! was read into, and what QUIC delivered goes to TCP as one `writev` of quinn's own chunks.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};

use super::{Activity, COPY_BUFFER};

/// Chunks taken from a QUIC stream per `writev`: a chunk is one STREAM frame (about one
/// packet), so this is about a 64 KiB copy buffer's worth.
const CHUNKS: usize = 48;

/// Moves bytes from TCP to the QUIC stream until TCP ends (then finishes the stream) or
/// either fails; returns how many moved.
pub(super) async fn tcp_to_quic(
    mut from: ReadHalf<'_>,
    to: &mut quinn::SendStream,
    activity: &Activity,
    counted: &super::Count,
) -> io::Result<u64> {
    let mut total = 0u64;
    let mut buf = BytesMut::new();
    loop {
        // What was split off before is quinn's until sent; the rest of that allocation
        // takes the next read, and a new one is made when too little of it is left.
        if buf.capacity() < COPY_BUFFER / 4 {
            buf = BytesMut::with_capacity(COPY_BUFFER);
        }
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            // Finishing twice, or after the peer stopped reading, is harmless.
            let _ = to.finish();
            return Ok(total);
        }
        activity.touch();
        counted.add(n as u64);
        to.write_chunk(buf.split().freeze()).await?;
        total += n as u64;
    }
}

/// Moves bytes from the QUIC stream to TCP until the stream finishes (then half-closes
/// TCP) or either fails; returns how many moved.
pub(super) async fn quic_to_tcp(
    from: &mut quinn::RecvStream,
    mut to: WriteHalf<'_>,
    activity: &Activity,
    counted: &super::Count,
) -> io::Result<u64> {
    let mut total = 0u64;
    let mut chunks: [Bytes; CHUNKS] = std::array::from_fn(|_| Bytes::new());
    loop {
        let Some(n) = from.read_chunks(&mut chunks).await? else {
            let _ = to.shutdown().await;
            return Ok(total);
        };
        activity.touch();
        counted.add(chunks[..n].iter().map(|c| c.len() as u64).sum());
        let mut pending = &mut chunks[..n];
        while !pending.is_empty() {
            let slices: Vec<IoSlice<'_>> = pending.iter().map(|c| IoSlice::new(c)).collect();
            let mut written = to.write_vectored(&slices).await?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the destination took no bytes",
                ));
            }
            drop(slices);
            total += written as u64;
            while written > 0 {
                let first = &mut pending[0];
                let take = written.min(first.len());
                first.advance(take);
                written -= take;
                if first.is_empty() {
                    pending = &mut pending[1..];
                }
            }
            // Empty chunks (a frame with no data) are skipped too.
            while pending.first().is_some_and(|c| c.is_empty()) {
                pending = &mut pending[1..];
            }
        }
    }
}
