//! Dialling a peer gateway: one QUIC handshake under a deadline, with a typed failure, and
//! the application close codes both sides use. Shared by link sessions, the join handshake
//! and the tunnel client.

use std::net::SocketAddr;
use std::time::Duration;

use crate::tls;

/// QUIC application close code: the connection's work is done.
pub const CLOSE_DONE: quinn::VarInt = quinn::VarInt::from_u32(0);
/// QUIC application close code: the link was removed.
pub const CLOSE_LINK_REMOVED: quinn::VarInt = quinn::VarInt::from_u32(2);
/// QUIC application close code: the gateway refused the connection.
pub const CLOSE_REFUSED: quinn::VarInt = quinn::VarInt::from_u32(3);
/// QUIC application close code: the peer went silent (nothing received for longer than
/// its keep-alives allow).
pub const CLOSE_SILENT: quinn::VarInt = quinn::VarInt::from_u32(4);

/// Why a gateway could not be dialled.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The connection could not be started (bad address, endpoint closed).
    #[error("{0}")]
    Connect(#[from] quinn::ConnectError),
    /// The handshake failed (refused certificate, closed, unreachable).
    #[error("{0}")]
    Handshake(#[from] quinn::ConnectionError),
    /// The handshake did not finish in time.
    #[error("handshake timed out after {0:?}")]
    Timeout(Duration),
}

/// Dials `addr` with `config`, giving the handshake at most `deadline`.
pub async fn dial(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    deadline: Duration,
) -> Result<quinn::Connection, DialError> {
    let connecting = endpoint.connect_with(config, addr, tls::SERVER_NAME)?;
    match tokio::time::timeout(deadline, connecting).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(DialError::Timeout(deadline)),
    }
}
