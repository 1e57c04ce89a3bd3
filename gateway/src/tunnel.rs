//! Tunnel streams: one QUIC bidirectional stream per proxied connection, opened with a
//! [`ferry_federation::TunnelHeader`] and answered with a status.
//!
//! [`client`] is the calling side (node proxies); [`server`] the gateway's side. The two share
//! only the wire format and this module's timing; neither imports the other.

use std::time::Duration;

pub mod client;
pub(crate) mod server;

pub use client::{TunnelClient, TunnelError, Unreachable};

/// How long the header (server side) or the status (client side) may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
