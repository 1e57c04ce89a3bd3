//! Ferry's gateway: the QUIC endpoint that links clusters, with mutual TLS between SPIFFE
//! identities ([`pki`] makes and reads certificates, [`tls`] builds the rustls/quinn configs).

pub mod access;
pub mod dial;
pub mod guard;
pub mod http;
pub mod join;
pub mod link;
pub mod pki;
pub mod relay;
pub mod requests;
pub mod server;
pub mod tls;
pub mod trace;
pub mod tunnel;
pub mod udp;
