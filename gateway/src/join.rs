//! The join handshake: `ferry link join <token>` on the joining cluster ([`client`]),
//! answered by the issuing cluster's gateway ([`server`]).
//!
//! The joiner connects over QUIC with its own gateway identity, pins the issuer (its
//! gateway certificate must chain to our shared root and name the token's issuer),
//! and proves it holds the token's secret with an HMAC bound to this TLS session's
//! exported keying material, so a captured proof is useless on another connection.
//! The issuer's control plane checks and spends the token in one transaction. The two
//! sides share only the framing below.

use std::time::Duration;

use ferry_federation::{ClusterId, FrameDecoder, JoinMessage, WireError};

pub mod client;
pub(crate) mod server;

pub use client::{join, JoinError, JoinOutcome, JOIN_DEADLINE};

const BINDING_LABEL: &[u8] = b"EXPORTER-ferry-join";
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What went wrong in the exchange on an established join connection.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("cannot export TLS keying material for the channel binding")]
    Binding,
    #[error("cannot open or accept the join stream: {0}")]
    Stream(#[from] quinn::ConnectionError),
    #[error("cannot send the join message: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("reading the join stream failed: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("the stream ended before a message arrived")]
    Ended,
    #[error(transparent)]
    Frame(#[from] WireError),
    #[error("only a cluster's gateway identity may join")]
    NotAGateway,
    #[error("the gateway answered as `{0}`, not the token's issuer")]
    WrongIssuer(ClusterId),
    #[error("unexpected request from the issuer")]
    UnexpectedRequest,
    #[error("no answer within {} s", JOIN_TIMEOUT.as_secs())]
    Timeout,
}

/// The channel binding both sides compute: keying material exported from this TLS session.
fn binding(conn: &quinn::Connection) -> Result<Vec<u8>, ExchangeError> {
    let mut out = vec![0u8; 32];
    conn.export_keying_material(&mut out, BINDING_LABEL, b"")
        .map_err(|_| ExchangeError::Binding)?;
    Ok(out)
}

/// Reads one framed join message.
async fn read_message(recv: &mut quinn::RecvStream) -> Result<JoinMessage, ExchangeError> {
    let mut decoder = FrameDecoder::<JoinMessage>::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(msg) = decoder.next()? {
            return Ok(msg);
        }
        match recv.read(&mut buf).await? {
            Some(n) => decoder.push(&buf[..n]),
            None => return Err(ExchangeError::Ended),
        }
    }
}
