//! rustls/quinn configurations for Ferry's mutual TLS, with peers identified by SPIFFE ID.
//!
//! Both ends present a leaf issued by their cluster's CA (see [`crate::pki`]) and check the
//! other's: the chain must reach one of the [`TrustStore`] roots now, the leaf must carry exactly
//! one SPIFFE ID naming a gateway or node of our trust domain, and it must have been signed by
//! the CA of *that* cluster, presented as the first intermediate. Because rustls-webpki does not
//! enforce URI name constraints, this last rule is the only thing that stops east's CA from
//! minting west's gateway; it lives in `SpiffeClientVerifier` and `SpiffeServerVerifier` below.
//!
//! Only the *ring* provider is used, always passed explicitly: this module must never install or
//! rely on the process-wide default provider. TLS 1.3 only, no session resumption and no 0-RTT,
//! so every connection is a full handshake that re-checks certificates (expiry and renewal take
//! effect at once). It must not log or `Debug`-print private keys.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use ferry_federation::{ClusterId, Identity, TrustDomain};
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ParsedCertificate, ResolvesServerCert,
    WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::pki::{self, PkiError};

/// ALPN of the gateway-to-gateway link (control) connection.
pub const ALPN_LINK: &[u8] = b"ferry-link/1";
/// ALPN of tunnel connections carrying service traffic.
pub const ALPN_TUNNEL: &[u8] = b"ferry-tunnel/1";
/// ALPN of the join exchange that establishes a link.
pub const ALPN_JOIN: &[u8] = b"ferry-join/1";
/// SNI placeholder sent by clients. Peers are identified by SPIFFE ID, never by this name.
pub const SERVER_NAME: &str = "gateway.ferry.invalid";

/// Why a TLS configuration or identity could not be built or read.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A trust store was given no roots.
    #[error("the trust store for {0} has no root certificate; pass the mesh's root CA bundle")]
    NoRoots(TrustDomain),
    /// A root certificate cannot serve as a trust anchor.
    #[error("root certificate #{index} cannot be used as a trust anchor ({source}); pass the mesh's root CA certificate")]
    BadRoot {
        /// Position of the root in the list given.
        index: usize,
        /// What rustls-webpki objected to.
        #[source]
        source: rustls::Error,
    },
    /// A certificate or chain could not be read.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// The private key PEM could not be read (no details: they could echo key material).
    #[error("the private key file holds no readable PKCS#8/SEC1 PEM key; pass the key file written together with the certificate")]
    KeyPem,
    /// The private key is unusable or does not match the leaf.
    #[error("the private key cannot serve the leaf certificate ({0}); pass the key file that was created together with this certificate")]
    Key(#[source] rustls::Error),
    /// The leaf is not a gateway's or a node's.
    #[error("the leaf certificate is for {0}; only gateway and node certificates can be served")]
    NotALeafIdentity(Identity),
    /// A renewed certificate names another identity.
    #[error("the new certificate is for {new} but this process serves {current}; an identity cannot change while running, restart with the new identity instead")]
    IdentityChanged {
        /// The identity being served.
        current: Identity,
        /// The identity of the refused certificate.
        new: Identity,
    },
    /// Our identity and our trust store belong to different meshes.
    #[error("our certificate is for trust domain {identity} but the trust store is for {trust}; use the root bundle of the mesh that issued our certificate")]
    TrustDomainMismatch {
        /// The identity store's trust domain.
        identity: TrustDomain,
        /// The trust store's trust domain.
        trust: TrustDomain,
    },
    /// No ALPN protocol was given.
    #[error("no ALPN protocol given; name at least one (ALPN_LINK, ALPN_TUNNEL or ALPN_JOIN)")]
    NoAlpn,
    /// rustls refused the configuration.
    #[error("could not build the TLS configuration ({0}); this is a bug in Ferry, report it")]
    Config(#[source] rustls::Error),
    /// rustls refused the client-certificate verifier.
    #[error(
        "could not build the client-certificate verifier ({0}); check the trust store's roots"
    )]
    ClientVerifier(#[source] rustls::server::VerifierBuilderError),
    /// The TLS configuration cannot carry QUIC.
    #[error(
        "the TLS configuration cannot be used for QUIC ({0}); this is a bug in Ferry, report it"
    )]
    Quic(#[source] NoInitialCipherSuite),
    /// The connection carries no certificate chain.
    #[error(
        "the connection has no peer certificate; it was not made with Ferry's mTLS configuration"
    )]
    NoPeerCertificate,
    /// The peer's certificate names no usable identity.
    #[error("the peer certificate carries no Ferry identity: {0}")]
    PeerIdentity(#[source] PkiError),
}

/// Why a peer's certificate was refused after (or instead of) chain validation. Carried inside
/// the rustls error, so its text ends up in the handshake failure.
#[derive(thiserror::Error)]
enum PeerRejected {
    #[error("the peer's leaf has no usable identity: {0}")]
    LeafIdentity(PkiError),
    #[error("the peer presents {0}, which is not a gateway or node identity")]
    NotALeafIdentity(Identity),
    #[error("the peer sent its leaf without a cluster CA; a Ferry leaf is presented with the CA of its cluster (leaf then cluster CA), and a leaf signed directly by the root is refused")]
    NoClusterCa,
    #[error("the peer's first intermediate is not a cluster CA of this mesh: {0}")]
    BadClusterCa(PkiError),
    #[error("the peer's first intermediate is the mesh root, not a cluster CA")]
    NotAClusterCa,
    #[error("the peer claims to be {identity} but its intermediate is the CA of cluster {ca}; a cluster CA vouches only for its own cluster")]
    ForeignCluster { identity: Identity, ca: ClusterId },
    #[error("the peer's leaf was not signed by the cluster CA presented with it ({0}); a leaf must be issued by its own cluster's CA")]
    NotSignedByClusterCa(String),
    #[error("expected the gateway of {expected}, but the peer is {found}")]
    UnexpectedPeer {
        expected: ClusterId,
        found: Identity,
    },
    #[error("expected a gateway, but the peer is {0}")]
    NotAGateway(Identity),
}

// rustls shows `CertificateError::Other` with `{:?}`, so Debug is the message itself.
impl fmt::Debug for PeerRejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Ferry: {self}")
    }
}

impl From<PeerRejected> for rustls::Error {
    fn from(e: PeerRejected) -> Self {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// The roots of one trust domain, the only anchors peers' chains may lead to.
pub struct TrustStore {
    td: TrustDomain,
    roots: Vec<CertificateDer<'static>>,
    store: Arc<RootCertStore>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field("trust_domain", &self.td)
            .field("roots", &self.roots.len())
            .finish()
    }
}

impl TrustStore {
    /// A store of `roots` (at least one, each usable as a trust anchor) for trust domain `td`.
    pub fn new(td: TrustDomain, roots: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        if roots.is_empty() {
            return Err(TlsError::NoRoots(td));
        }
        let mut store = RootCertStore::empty();
        for (index, root) in roots.iter().enumerate() {
            store
                .add(root.clone())
                .map_err(|source| TlsError::BadRoot { index, source })?;
        }
        Ok(TrustStore {
            td,
            roots,
            store: Arc::new(store),
        })
    }

    /// A store of every `CERTIFICATE` block in `pem`.
    pub fn from_pem(td: TrustDomain, pem: &str) -> Result<Self, TlsError> {
        Self::new(td, pki::parse_certs(pem)?)
    }

    /// The trust domain peers must belong to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.td
    }

    /// The roots, DER, in the order given (for `ferry_federation::bundle_fingerprint`).
    pub fn roots_der(&self) -> Vec<Vec<u8>> {
        self.roots.iter().map(|r| r.to_vec()).collect()
    }
}

/// Our own certificate chain and key, served to peers; [`IdentityStore::replace`] swaps in a
/// renewed one, used from the next handshake on.
pub struct IdentityStore {
    td: TrustDomain,
    identity: Identity,
    current: RwLock<Served>,
}

struct Served {
    key: Arc<CertifiedKey>,
    not_after: SystemTime,
}

impl fmt::Debug for IdentityStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityStore")
            .field("identity", &self.identity)
            .field("not_after", &self.not_after())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl IdentityStore {
    /// Loads a chain (leaf then cluster CA) and the leaf's key. The identity is read from the
    /// leaf's single SPIFFE ID, which must be a gateway or node of `td`.
    pub fn from_pem(chain_pem: &str, key_pem: &str, td: &TrustDomain) -> Result<Self, TlsError> {
        let (identity, served) = load_identity(chain_pem, key_pem, td)?;
        Ok(IdentityStore {
            td: td.clone(),
            identity,
            current: RwLock::new(served),
        })
    }

    /// Serves a renewed chain and key from the next handshake on. Refused (and the current
    /// certificate kept) unless it is valid and names the same identity.
    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), TlsError> {
        let (identity, served) = load_identity(chain_pem, key_pem, &self.td)?;
        if identity != self.identity {
            return Err(TlsError::IdentityChanged {
                current: self.identity.clone(),
                new: identity,
            });
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = served;
        Ok(())
    }

    /// The identity served (fixed for the life of the store).
    pub fn identity(&self) -> Identity {
        self.identity.clone()
    }

    /// End of validity of the leaf being served.
    pub fn not_after(&self) -> SystemTime {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .not_after
    }

    fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .key
            .clone()
    }
}

fn load_identity(
    chain_pem: &str,
    key_pem: &str,
    td: &TrustDomain,
) -> Result<(Identity, Served), TlsError> {
    let chain = pki::parse_certs(chain_pem)?;
    let leaf = pki::parse_x509(&chain[0])?;
    let identity = pki::cert_identity(&leaf, td)?;
    if !is_leaf_identity(&identity) {
        return Err(TlsError::NotALeafIdentity(identity));
    }
    let not_after = pki::cert_not_after(&leaf);
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::KeyPem)?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(TlsError::Key)?;
    Ok((
        identity,
        Served {
            key: Arc::new(certified),
            not_after,
        },
    ))
}

/// Which server a client config accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerExpectation {
    /// Exactly the gateway of this cluster.
    Gateway(ClusterId),
    /// Any gateway of our trust domain (used before the peer's cluster is known, e.g. joining).
    AnyLinkedGateway,
}

/// Server config: TLS 1.3, client certificate required and verified as described in the module
/// doc, our certificate served from `identity`, offering the `alpn` protocols (at least one).
pub fn server_config(
    identity: Arc<IdentityStore>,
    trust: Arc<TrustStore>,
    alpn: &[&[u8]],
) -> Result<quinn::ServerConfig, TlsError> {
    check_same_mesh(&identity, &trust)?;
    if alpn.is_empty() {
        return Err(TlsError::NoAlpn);
    }
    let provider = Arc::new(provider());
    let inner = WebPkiClientVerifier::builder_with_provider(trust.store.clone(), provider.clone())
        .build()
        .map_err(TlsError::ClientVerifier)?;
    let verifier = Arc::new(SpiffeClientVerifier {
        inner,
        td: trust.td.clone(),
    });
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(ServeIdentity(identity)));
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // No tickets, no session cache: a resumed session would skip certificate checks.
    tls.session_storage = Arc::new(NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    let quic = QuicServerConfig::try_from(tls).map_err(TlsError::Quic)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(transport_config());
    Ok(config)
}

/// Client config: TLS 1.3, our certificate served from `identity`, the server verified as
/// described in the module doc and required to match `expect`, offering `alpn`. Connect with
/// [`SERVER_NAME`] as the server name.
pub fn client_config(
    identity: Arc<IdentityStore>,
    trust: Arc<TrustStore>,
    expect: PeerExpectation,
    alpn: &[u8],
) -> Result<quinn::ClientConfig, TlsError> {
    check_same_mesh(&identity, &trust)?;
    if alpn.is_empty() {
        return Err(TlsError::NoAlpn);
    }
    let provider = Arc::new(provider());
    let verifier = Arc::new(SpiffeServerVerifier {
        algorithms: provider.signature_verification_algorithms,
        trust,
        expect,
    });
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(TlsError::Config)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(Arc::new(ServeIdentity(identity)));
    tls.alpn_protocols = vec![alpn.to_vec()];
    // A resumed session would skip certificate checks (and hide a renewed server certificate).
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    let quic = QuicClientConfig::try_from(tls).map_err(TlsError::Quic)?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(transport_config());
    Ok(config)
}

/// The identity of the peer of an established connection, read from its leaf certificate
/// (already verified during the handshake by these configs).
pub fn peer_identity(conn: &quinn::Connection, td: &TrustDomain) -> Result<Identity, TlsError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())
        .ok_or(TlsError::NoPeerCertificate)?;
    let leaf = certs.first().ok_or(TlsError::NoPeerCertificate)?;
    let leaf = pki::parse_x509(leaf).map_err(TlsError::PeerIdentity)?;
    pki::cert_identity(&leaf, td).map_err(TlsError::PeerIdentity)
}

/// SHA-256 fingerprints (hex) of the peer's leaf certificate and of the CA that issued it
/// (the next certificate of its chain), as presented on `conn`.
pub fn peer_fingerprints(conn: &quinn::Connection) -> Option<(String, String)> {
    let certs = conn
        .peer_identity()
        .and_then(|any| any.downcast::<Vec<CertificateDer<'static>>>().ok())?;
    let leaf = sha256_hex(certs.first()?);
    let issuer = certs.get(1).map(|c| sha256_hex(c)).unwrap_or_default();
    Some((leaf, issuer))
}

/// The SHA-256 of a certificate's DER, in lowercase hex: how certificates are named in
/// `ferry link status`.
pub fn sha256_hex(der: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Concurrent tunnel streams one connection may hold open.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Bytes one stream may have in flight toward us before the sender must wait.
pub const STREAM_RECEIVE_WINDOW: u32 = 1024 * 1024;
/// Bytes one connection may have in flight toward us, all streams together: what a peer
/// that opens every stream and never lets us drain them can make us buffer.
pub const CONNECTION_RECEIVE_WINDOW: u32 = 16 * 1024 * 1024;

/// Transport settings shared by both configs, every limit explicit: keep-alive every 750 ms
/// and a 3 s idle timeout (a dead peer is noticed within seconds), at most
/// [`MAX_STREAMS_PER_CONNECTION`] concurrent tunnel streams, no unidirectional streams (Ferry
/// uses none), and receive windows of [`STREAM_RECEIVE_WINDOW`] per stream and
/// [`CONNECTION_RECEIVE_WINDOW`] per connection.
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    // A dead peer must be noticed before the 5 s import lease runs out, so a link session
    // can move to a surviving gateway without its imports being withdrawn.
    transport_config_with_keep_alive(Duration::from_millis(750))
}

/// [`transport_config`] with another keep-alive interval.
pub fn transport_config_with_keep_alive(keep_alive: Duration) -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(keep_alive))
        .max_idle_timeout(Some(quinn::VarInt::from_u32(3_000).into()))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS_PER_CONNECTION))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(STREAM_RECEIVE_WINDOW))
        .receive_window(quinn::VarInt::from_u32(CONNECTION_RECEIVE_WINDOW))
        .send_window(u64::from(CONNECTION_RECEIVE_WINDOW));
    Arc::new(transport)
}

/// A QUIC endpoint on `addr` with socket buffers sized for full speed, serving `server` if
/// given.
pub fn endpoint(
    addr: std::net::SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<quinn::Endpoint> {
    let config = quinn::EndpointConfig::default();
    quinn::Endpoint::new(
        config,
        server,
        udp_socket(addr)?,
        Arc::new(crate::udp::FerryRuntime),
    )
}

/// A UDP socket on `addr` with buffers of [`UDP_SOCKET_BUFFER`] where allowed.
fn udp_socket(addr: std::net::SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    size_socket_buffers(&socket);
    Ok(socket)
}

/// The UDP socket buffers asked for. With the default (about 200 KiB) a receiver that is
/// a moment late overflows at full speed: the datagrams are dropped, congestion control
/// reads it as loss, and path MTU discovery as a black hole.
pub const UDP_SOCKET_BUFFER: usize = 8 << 20;

/// Asks for [`UDP_SOCKET_BUFFER`] both ways: past `net.core.rmem_max`/`wmem_max` where the
/// process may (`CAP_NET_ADMIN`), else up to them.
fn size_socket_buffers(socket: &std::net::UdpSocket) {
    use nix::sys::socket::{getsockopt, setsockopt, sockopt};
    if setsockopt(socket, sockopt::RcvBufForce, &UDP_SOCKET_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::RcvBuf, &UDP_SOCKET_BUFFER);
    }
    if setsockopt(socket, sockopt::SndBufForce, &UDP_SOCKET_BUFFER).is_err() {
        let _ = setsockopt(socket, sockopt::SndBuf, &UDP_SOCKET_BUFFER);
    }
    // The kernel reports twice what it granted (its bookkeeping overhead).
    let got = getsockopt(socket, sockopt::RcvBuf).unwrap_or(0) / 2;
    if got < UDP_SOCKET_BUFFER {
        tracing::info!(
            wanted = UDP_SOCKET_BUFFER,
            got,
            "UDP receive buffer smaller than wanted; raise net.core.rmem_max for full speed"
        );
    }
}

/// The *ring* provider, built here every time: never the process default.
fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

fn check_same_mesh(identity: &IdentityStore, trust: &TrustStore) -> Result<(), TlsError> {
    if identity.td != trust.td {
        return Err(TlsError::TrustDomainMismatch {
            identity: identity.td.clone(),
            trust: trust.td.clone(),
        });
    }
    Ok(())
}

fn is_leaf_identity(identity: &Identity) -> bool {
    matches!(identity, Identity::Gateway { .. } | Identity::Node { .. })
}

/// Rules 2 and 3 of the module doc, after the chain has been validated: the leaf's identity,
/// and that the cluster CA presented first both names the leaf's cluster and signed the leaf.
fn check_spiffe(
    td: &TrustDomain,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Result<Identity, PeerRejected> {
    let leaf = pki::parse_x509(end_entity).map_err(PeerRejected::LeafIdentity)?;
    let identity = pki::cert_identity(&leaf, td).map_err(PeerRejected::LeafIdentity)?;
    if !is_leaf_identity(&identity) {
        return Err(PeerRejected::NotALeafIdentity(identity));
    }
    let ca_der = intermediates.first().ok_or(PeerRejected::NoClusterCa)?;
    let ca = pki::parse_x509(ca_der).map_err(PeerRejected::BadClusterCa)?;
    let (ca_td, ca_cluster) = pki::ca_binding(&ca).map_err(PeerRejected::BadClusterCa)?;
    if &ca_td != td {
        return Err(PeerRejected::BadClusterCa(PkiError::WrongTrustDomain {
            id: format!("spiffe://{ca_td}"),
            expected: td.clone(),
        }));
    }
    let Some(ca_cluster) = ca_cluster else {
        return Err(PeerRejected::NotAClusterCa);
    };
    if &ca_cluster != identity.cluster() {
        return Err(PeerRejected::ForeignCluster {
            identity,
            ca: ca_cluster,
        });
    }
    leaf.verify_signature(Some(ca.public_key()))
        .map_err(|e| PeerRejected::NotSignedByClusterCa(e.to_string()))?;
    Ok(identity)
}

/// Only the first intermediate takes part in validation: it must be the cluster CA that signed
/// the leaf, so webpki can only build leaf → that CA → root (anything else sent is ignored).
fn first_intermediate<'a>(intermediates: &'a [CertificateDer<'a>]) -> &'a [CertificateDer<'a>] {
    &intermediates[..intermediates.len().min(1)]
}

/// Verifies client certificates on the server: webpki chain validation, then [`check_spiffe`].
/// Any gateway or node of the trust domain passes; what it may do is decided by admission policy.
#[derive(Debug)]
struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    td: TrustDomain,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.inner
            .verify_client_cert(end_entity, first_intermediate(intermediates), now)?;
        check_spiffe(&self.td, end_entity, intermediates)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Verifies the server certificate on the client: webpki chain validation (no name check: the
/// name is a placeholder), [`check_spiffe`], then the [`PeerExpectation`].
#[derive(Debug)]
struct SpiffeServerVerifier {
    trust: Arc<TrustStore>,
    expect: PeerExpectation,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.trust.store,
            first_intermediate(intermediates),
            now,
            self.algorithms.all,
        )?;
        let identity = check_spiffe(&self.trust.td, end_entity, intermediates)?;
        match (&self.expect, identity) {
            (PeerExpectation::Gateway(want), Identity::Gateway { cluster }) if *want == cluster => {
            }
            (PeerExpectation::AnyLinkedGateway, Identity::Gateway { .. }) => {}
            (PeerExpectation::Gateway(want), found) => {
                return Err(PeerRejected::UnexpectedPeer {
                    expected: want.clone(),
                    found,
                }
                .into())
            }
            (PeerExpectation::AnyLinkedGateway, found) => {
                return Err(PeerRejected::NotAGateway(found).into())
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Serves the current certificate of an [`IdentityStore`] on both sides of the handshake.
#[derive(Debug)]
struct ServeIdentity(Arc<IdentityStore>);

impl ResolvesServerCert for ServeIdentity {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

impl ResolvesClientCert for ServeIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod socket_tests {
    use super::*;

    #[test]
    fn udp_sockets_get_big_buffers_where_allowed() {
        use nix::sys::socket::{getsockopt, sockopt};
        let socket = udp_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let rcv = getsockopt(&socket, sockopt::RcvBuf).unwrap() / 2;
        let snd = getsockopt(&socket, sockopt::SndBuf).unwrap() / 2;
        // With CAP_NET_ADMIN (root in CI) the full size; without, up to net.core.rmem_max.
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let floor = if nix::sys::socket::setsockopt(&probe, sockopt::RcvBufForce, &4096).is_ok() {
            UDP_SOCKET_BUFFER
        } else {
            std::fs::read_to_string("/proc/sys/net/core/rmem_max")
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .unwrap_or(200 * 1024)
                .min(UDP_SOCKET_BUFFER)
        };
        assert!(rcv >= floor && snd >= floor, "rcv {rcv}, snd {snd}");
    }
}
