//! Ferry's certificates and mTLS over real quinn endpoints on loopback.
//!
//! Every refusal test first shows the same setup with a good certificate completes the
//! handshake, then that the bad one fails it, with the reason in the error text.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_federation::{ClusterId, Identity, TrustDomain};
use ferry_gateway::pki::{
    self, create_cluster_ca, create_root, issue_leaf, new_leaf_request, parse_certs, Ca, Issued,
    IssuedLeaf, PkiError,
};
use ferry_gateway::tls::{
    client_config, peer_identity, server_config, IdentityStore, PeerExpectation, TlsError,
    TrustStore, ALPN_LINK, ALPN_TUNNEL, SERVER_NAME,
};
use quinn::{Connection, Endpoint};
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

const DAY: Duration = Duration::from_secs(24 * 3600);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn td() -> TrustDomain {
    "ferry.test".parse().unwrap()
}

fn cluster(c: &str) -> ClusterId {
    c.parse().unwrap()
}

fn gateway(c: &str) -> Identity {
    Identity::Gateway {
        cluster: cluster(c),
    }
}

fn node(c: &str, n: &str) -> Identity {
    Identity::Node {
        cluster: cluster(c),
        node: n.parse().unwrap(),
    }
}

fn ago(d: Duration) -> SystemTime {
    SystemTime::now() - d
}

/// A root and the CAs of `east` and `west`, all valid from 30 days ago for a year.
struct Mesh {
    root: Issued,
    east: Issued,
    west: Issued,
    trust: Arc<TrustStore>,
}

impl Mesh {
    fn new() -> Mesh {
        let start = ago(30 * DAY);
        let root = create_root(&td(), start, 365 * DAY).unwrap();
        let root_ca = Ca::from_pem(&root.cert_pem, &root.key_pem).unwrap();
        let east = create_cluster_ca(&root_ca, &cluster("east"), start, 365 * DAY).unwrap();
        let west = create_cluster_ca(&root_ca, &cluster("west"), start, 365 * DAY).unwrap();
        let trust = Arc::new(TrustStore::from_pem(td(), &root.cert_pem).unwrap());
        Mesh {
            root,
            east,
            west,
            trust,
        }
    }

    fn ca_pem(&self, c: &str) -> &Issued {
        match c {
            "east" => &self.east,
            "west" => &self.west,
            _ => panic!("no CA for {c}"),
        }
    }

    /// A leaf for `identity` from its cluster's CA, issued at `at`: (chain PEM, key PEM).
    fn leaf_at(&self, identity: &Identity, at: SystemTime, validity: Duration) -> (String, String) {
        let ca = self.ca_pem(identity.cluster().as_str());
        let ca = Ca::from_pem(&ca.cert_pem, &ca.key_pem).unwrap();
        let request = new_leaf_request().unwrap();
        let leaf = issue_leaf(&ca, identity, &request.csr_pem, at, validity).unwrap();
        (leaf.chain_pem, request.key_pem)
    }

    fn leaf(&self, identity: &Identity) -> (String, String) {
        self.leaf_at(identity, SystemTime::now(), DAY)
    }

    fn store(&self, (chain, key): &(String, String)) -> Arc<IdentityStore> {
        Arc::new(IdentityStore::from_pem(chain, key, &td()).unwrap())
    }

    fn server(&self, leaf: &(String, String)) -> quinn::ServerConfig {
        server_config(
            self.store(leaf),
            self.trust.clone(),
            &[ALPN_LINK, ALPN_TUNNEL],
        )
        .unwrap()
    }

    fn client(&self, leaf: &(String, String), expect: PeerExpectation) -> quinn::ClientConfig {
        client_config(self.store(leaf), self.trust.clone(), expect, ALPN_LINK).unwrap()
    }

    /// A hand-made leaf with exactly `sans`, signed with `signer_key_pem` under the name of
    /// `issuer_cert_pem`; `chain` is appended after it: (chain PEM, key PEM).
    fn forge(
        &self,
        sans: Vec<SanType>,
        issuer_cert_pem: &str,
        signer_key_pem: &str,
        chain: &[&str],
    ) -> (String, String) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "forged leaf");
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2090, 1, 1);
        let signer = KeyPair::from_pem(signer_key_pem).unwrap();
        let issuer = Issuer::from_ca_cert_pem(issuer_cert_pem, &signer).unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let mut pem = cert.pem();
        for c in chain {
            pem.push_str(c);
        }
        (pem, key.serialize_pem())
    }
}

fn uri(id: &str) -> SanType {
    SanType::URI(id.try_into().unwrap())
}

/// Accepts any server certificate: lets a raw client present a forged chain to our server.
#[derive(Debug)]
struct AcceptAnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn chain_and_key(
    (chain, key): &(String, String),
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    (
        parse_certs(chain).unwrap(),
        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
    )
}

/// A client that presents `leaf` as is (no checks of its own) and trusts any server.
fn raw_client(leaf: &(String, String)) -> quinn::ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let (chain, key) = chain_and_key(leaf);
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(algs)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![ALPN_LINK.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    quinn::ClientConfig::new(Arc::new(quic))
}

/// A server that presents `leaf` as is and asks for no client certificate.
fn raw_server(leaf: &(String, String)) -> quinn::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = chain_and_key(leaf);
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    tls.alpn_protocols = vec![ALPN_LINK.to_vec()];
    let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
    quinn::ServerConfig::with_crypto(Arc::new(quic))
}

/// Both ends of an established connection, with their endpoints kept alive.
struct Established {
    server: Connection,
    client: Connection,
    _endpoints: (Endpoint, Endpoint),
}

/// Runs one handshake between fresh endpoints on 127.0.0.1:0. `Err` carries the text of every
/// side that failed.
async fn handshake(
    server: quinn::ServerConfig,
    client: quinn::ClientConfig,
) -> Result<Established, String> {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let server_ep = Endpoint::server(server, any).unwrap();
    let addr = server_ep.local_addr().unwrap();
    let client_ep = Endpoint::client(any).unwrap();
    let accept = async {
        let incoming = server_ep.accept().await.ok_or("server endpoint closed")?;
        incoming.await.map_err(|e| format!("server: {e}"))
    };
    let connect = async {
        let connecting = client_ep
            .connect_with(client, addr, SERVER_NAME)
            .map_err(|e| format!("client: {e}"))?;
        connecting.await.map_err(|e| format!("client: {e}"))
    };
    let (server, client) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, async { tokio::join!(accept, connect) })
            .await
            .expect("handshake did not finish in time");
    match (server, client) {
        (Ok(server), Ok(client)) => Ok(Established {
            server,
            client,
            _endpoints: (server_ep, client_ep),
        }),
        (server, client) => Err([server.err(), client.err()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" / ")),
    }
}

async fn assert_ok(server: quinn::ServerConfig, client: quinn::ClientConfig) -> Established {
    match handshake(server, client).await {
        Ok(established) => established,
        Err(e) => panic!("the good handshake failed: {e}"),
    }
}

async fn assert_refused(server: quinn::ServerConfig, client: quinn::ClientConfig, why: &str) {
    match handshake(server, client).await {
        Ok(_) => panic!("the handshake succeeded, expected it refused with {why:?}"),
        Err(e) => assert!(e.contains(why), "refused, but not with {why:?}: {e}"),
    }
}

/// Our east gateway server accepts `good` from a raw client and refuses `bad` with `why`.
async fn server_refuses_client(
    mesh: &Mesh,
    good: &(String, String),
    bad: &(String, String),
    why: &str,
) {
    let server = mesh.server(&mesh.leaf(&gateway("east")));
    assert_ok(server.clone(), raw_client(good)).await;
    assert_refused(server, raw_client(bad), why).await;
}

/// Our client (expecting any gateway) accepts `good` from a raw server and refuses `bad`.
async fn client_refuses_server(
    mesh: &Mesh,
    good: &(String, String),
    bad: &(String, String),
    why: &str,
) {
    let client = mesh.client(
        &mesh.leaf(&gateway("west")),
        PeerExpectation::AnyLinkedGateway,
    );
    assert_ok(raw_server(good), client.clone()).await;
    assert_refused(raw_server(bad), client, why).await;
}

/// Both directions: `bad` refused as a client certificate and as a server certificate.
async fn refused_both_ways(mesh: &Mesh, bad: &(String, String), why: &str) {
    let good = mesh.leaf(&gateway("east"));
    server_refuses_client(mesh, &good, bad, why).await;
    client_refuses_server(mesh, &good, bad, why).await;
}

#[tokio::test]
async fn gateway_to_gateway_handshake_succeeds_with_identities() {
    let mesh = Mesh::new();
    let server = mesh.server(&mesh.leaf(&gateway("east")));
    let client = mesh.client(
        &mesh.leaf(&gateway("west")),
        PeerExpectation::Gateway(cluster("east")),
    );
    let conn = assert_ok(server, client).await;
    assert_eq!(peer_identity(&conn.client, &td()).unwrap(), gateway("east"));
    assert_eq!(peer_identity(&conn.server, &td()).unwrap(), gateway("west"));
    assert_eq!(
        conn.client.handshake_data().and_then(|d| {
            d.downcast::<quinn::crypto::rustls::HandshakeData>()
                .ok()?
                .protocol
        }),
        Some(ALPN_LINK.to_vec())
    );
}

#[tokio::test]
async fn node_to_gateway_handshake_succeeds_with_identities() {
    let mesh = Mesh::new();
    let server = mesh.server(&mesh.leaf(&gateway("east")));
    let client = mesh.client(
        &mesh.leaf(&node("east", "n1")),
        PeerExpectation::AnyLinkedGateway,
    );
    let conn = assert_ok(server, client).await;
    assert_eq!(peer_identity(&conn.client, &td()).unwrap(), gateway("east"));
    assert_eq!(
        peer_identity(&conn.server, &td()).unwrap(),
        node("east", "n1")
    );
}

#[tokio::test]
async fn client_from_another_root_is_refused() {
    let mesh = Mesh::new();
    let other = Mesh::new(); // same trust domain name, different root
    let server = mesh.server(&mesh.leaf(&gateway("east")));
    let good = mesh.client(
        &mesh.leaf(&gateway("west")),
        PeerExpectation::AnyLinkedGateway,
    );
    assert_ok(server.clone(), good).await;
    let bad = client_config(
        other.store(&other.leaf(&gateway("west"))),
        mesh.trust.clone(),
        PeerExpectation::AnyLinkedGateway,
        ALPN_LINK,
    )
    .unwrap();
    // Same names as our root and CAs, other keys: the signature check is what fails.
    assert_refused(server, bad, "BadSignature").await;
}

#[tokio::test]
async fn client_without_a_certificate_is_refused() {
    let mesh = Mesh::new();
    let server = mesh.server(&mesh.leaf(&gateway("east")));
    assert_ok(server.clone(), raw_client(&mesh.leaf(&gateway("west")))).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algs = provider.signature_verification_algorithms;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(algs)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN_LINK.to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let anonymous = quinn::ClientConfig::new(Arc::new(quic));
    assert_refused(server, anonymous, "peer sent no certificates").await;
}

#[tokio::test]
async fn expired_client_cert_is_refused() {
    let mesh = Mesh::new();
    let server = mesh.server(&mesh.leaf(&gateway("east")));
    let fresh = mesh.leaf(&gateway("west"));
    let expired = mesh.leaf_at(&gateway("west"), ago(2 * DAY), DAY);
    assert_ok(
        server.clone(),
        mesh.client(&fresh, PeerExpectation::AnyLinkedGateway),
    )
    .await;
    assert_refused(
        server,
        mesh.client(&expired, PeerExpectation::AnyLinkedGateway),
        "certificate expired",
    )
    .await;
}

#[tokio::test]
async fn expired_server_cert_is_refused() {
    let mesh = Mesh::new();
    let client = mesh.client(
        &mesh.leaf(&gateway("west")),
        PeerExpectation::AnyLinkedGateway,
    );
    let fresh = mesh.leaf(&gateway("east"));
    let expired = mesh.leaf_at(&gateway("east"), ago(2 * DAY), DAY);
    assert_ok(mesh.server(&fresh), client.clone()).await;
    assert_refused(mesh.server(&expired), client, "certificate expired").await;
}

#[tokio::test]
async fn leaf_with_two_uri_sans_is_refused() {
    let mesh = Mesh::new();
    let bad = mesh.forge(
        vec![
            uri("spiffe://ferry.test/cluster/east/gateway"),
            uri("spiffe://ferry.test/cluster/east/node/n1"),
        ],
        &mesh.east.cert_pem,
        &mesh.east.key_pem,
        &[&mesh.east.cert_pem],
    );
    refused_both_ways(&mesh, &bad, "this one has 2").await;
}

#[tokio::test]
async fn leaf_with_workload_san_is_refused() {
    let mesh = Mesh::new();
    let bad = mesh.forge(
        vec![uri("spiffe://ferry.test/ns/shop/sa/web")],
        &mesh.east.cert_pem,
        &mesh.east.key_pem,
        &[&mesh.east.cert_pem],
    );
    refused_both_ways(&mesh, &bad, "is not a Ferry identity").await;
}

#[tokio::test]
async fn leaf_with_only_a_dns_san_is_refused() {
    let mesh = Mesh::new();
    let bad = mesh.forge(
        vec![SanType::DnsName(SERVER_NAME.try_into().unwrap())],
        &mesh.east.cert_pem,
        &mesh.east.key_pem,
        &[&mesh.east.cert_pem],
    );
    refused_both_ways(&mesh, &bad, "this one has 0").await;
}

#[tokio::test]
async fn forged_leaf_through_the_same_path_is_accepted() {
    // The forging helper itself makes acceptable leaves: the refusals above are about the SANs.
    let mesh = Mesh::new();
    let forged = mesh.forge(
        vec![uri("spiffe://ferry.test/cluster/east/gateway")],
        &mesh.east.cert_pem,
        &mesh.east.key_pem,
        &[&mesh.east.cert_pem],
    );
    let server = mesh.server(&mesh.leaf(&gateway("east")));
    let conn = assert_ok(server, raw_client(&forged)).await;
    assert_eq!(peer_identity(&conn.server, &td()).unwrap(), gateway("east"));
}

#[tokio::test]
async fn west_leaf_signed_by_east_ca_is_refused() {
    let mesh = Mesh::new();
    let west_gw = vec![uri("spiffe://ferry.test/cluster/west/gateway")];
    // Presented honestly with east's CA: the chain is valid, the cluster is not.
    let under_east = mesh.forge(
        west_gw.clone(),
        &mesh.east.cert_pem,
        &mesh.east.key_pem,
        &[&mesh.east.cert_pem],
    );
    let good = mesh.leaf(&gateway("west"));
    server_refuses_client(
        &mesh,
        &good,
        &under_east,
        "vouches only for its own cluster",
    )
    .await;
    client_refuses_server(
        &mesh,
        &good,
        &under_east,
        "vouches only for its own cluster",
    )
    .await;
    // Named after west's CA and presented with it, but signed with east's key.
    let disguised = mesh.forge(
        west_gw,
        &mesh.west.cert_pem,
        &mesh.east.key_pem,
        &[&mesh.west.cert_pem],
    );
    server_refuses_client(&mesh, &good, &disguised, "BadSignature").await;
    client_refuses_server(&mesh, &good, &disguised, "BadSignature").await;
}

#[tokio::test]
async fn leaf_signed_directly_by_root_is_refused() {
    let mesh = Mesh::new();
    let east_gw = vec![uri("spiffe://ferry.test/cluster/east/gateway")];
    let alone = mesh.forge(
        east_gw.clone(),
        &mesh.root.cert_pem,
        &mesh.root.key_pem,
        &[],
    );
    refused_both_ways(&mesh, &alone, "without a cluster CA").await;
    let with_east_ca = mesh.forge(
        east_gw,
        &mesh.root.cert_pem,
        &mesh.root.key_pem,
        &[&mesh.east.cert_pem],
    );
    refused_both_ways(&mesh, &with_east_ca, "was not signed by the cluster CA").await;
}

#[tokio::test]
async fn client_expecting_west_refuses_east_gateway() {
    let mesh = Mesh::new();
    let me = mesh.leaf(&node("east", "n2"));
    let east = mesh.server(&mesh.leaf(&gateway("east")));
    let expect_east = mesh.client(&me, PeerExpectation::Gateway(cluster("east")));
    let expect_west = mesh.client(&me, PeerExpectation::Gateway(cluster("west")));
    assert_ok(east.clone(), expect_east).await;
    assert_refused(east, expect_west, "expected the gateway of west").await;
    // A node is never accepted as a server, even by "any gateway".
    let node_server = mesh.server(&mesh.leaf(&node("east", "n1")));
    let any = mesh.client(&me, PeerExpectation::AnyLinkedGateway);
    assert_refused(node_server, any, "expected a gateway").await;
}

#[tokio::test]
async fn identity_store_replace_serves_the_new_cert_on_the_next_handshake() {
    let mesh = Mesh::new();
    let (chain, key) = mesh.leaf(&gateway("east"));
    let store = Arc::new(IdentityStore::from_pem(&chain, &key, &td()).unwrap());
    let server = server_config(store.clone(), mesh.trust.clone(), &[ALPN_LINK]).unwrap();
    let client = mesh.client(
        &mesh.leaf(&gateway("west")),
        PeerExpectation::AnyLinkedGateway,
    );
    let served_leaf = |conn: &Established| -> CertificateDer<'static> {
        let certs = conn.client.peer_identity().unwrap();
        certs.downcast::<Vec<CertificateDer<'static>>>().unwrap()[0].clone()
    };

    let first = assert_ok(server.clone(), client.clone()).await;
    assert_eq!(served_leaf(&first), parse_certs(&chain).unwrap()[0]);

    let (new_chain, new_key) = mesh.leaf_at(&gateway("east"), SystemTime::now(), 2 * DAY);
    store.replace(&new_chain, &new_key).unwrap();
    let second = assert_ok(server.clone(), client.clone()).await;
    assert_eq!(served_leaf(&second), parse_certs(&new_chain).unwrap()[0]);
    assert!(store.not_after() > SystemTime::now() + DAY + DAY / 2);

    // Another identity, or a key that is not the cert's, is refused and the current one kept.
    let (west_chain, west_key) = mesh.leaf(&gateway("west"));
    assert!(matches!(
        store.replace(&west_chain, &west_key),
        Err(TlsError::IdentityChanged { .. })
    ));
    assert!(matches!(
        store.replace(&new_chain, &west_key),
        Err(TlsError::Key(_))
    ));
    assert_eq!(store.identity(), gateway("east"));
    let third = assert_ok(server, client).await;
    assert_eq!(served_leaf(&third), parse_certs(&new_chain).unwrap()[0]);
}

#[test]
fn issue_leaf_refuses_a_foreign_cluster_identity() {
    let mesh = Mesh::new();
    let east = Ca::from_pem(&mesh.east.cert_pem, &mesh.east.key_pem).unwrap();
    let root = Ca::from_pem(&mesh.root.cert_pem, &mesh.root.key_pem).unwrap();
    let csr = new_leaf_request().unwrap().csr_pem;
    let now = SystemTime::now();
    assert!(issue_leaf(&east, &gateway("east"), &csr, now, DAY).is_ok());
    let err = issue_leaf(&east, &gateway("west"), &csr, now, DAY).unwrap_err();
    assert!(matches!(err, PkiError::ForeignCluster { .. }), "{err}");
    assert!(
        err.to_string().contains("vouches only for its own cluster"),
        "{err}"
    );
    let err = issue_leaf(&east, &node("west", "n1"), &csr, now, DAY).unwrap_err();
    assert!(matches!(err, PkiError::ForeignCluster { .. }), "{err}");
    let err = issue_leaf(&root, &gateway("east"), &csr, now, DAY).unwrap_err();
    assert!(matches!(err, PkiError::NotAClusterCa(_)), "{err}");
    let ca_identity = Identity::ClusterCa {
        cluster: cluster("east"),
    };
    let err = issue_leaf(&east, &ca_identity, &csr, now, DAY).unwrap_err();
    assert!(matches!(err, PkiError::NotALeafIdentity(_)), "{err}");
    let err = issue_leaf(&east, &gateway("east"), "not a csr", now, DAY).unwrap_err();
    assert!(matches!(err, PkiError::Csr(_)), "{err}");
}

#[test]
fn pki_round_trip_through_pem() {
    let now = SystemTime::now();
    let root = create_root(&td(), now, 365 * DAY).unwrap();
    let root_ca = Ca::from_pem(&root.cert_pem, &root.key_pem).unwrap();
    assert_eq!(root_ca.trust_domain(), &td());
    assert_eq!(root_ca.cluster(), None);
    assert_eq!(
        root_ca.cert_der(),
        parse_certs(&root.cert_pem).unwrap()[0].as_ref()
    );
    assert!(!format!("{root:?}").contains("PRIVATE KEY"));
    assert!(!format!("{root_ca:?}").contains("PRIVATE KEY"));

    let east = create_cluster_ca(&root_ca, &cluster("east"), now, 30 * DAY).unwrap();
    let east_ca = Ca::from_pem(&east.cert_pem, &east.key_pem).unwrap();
    assert_eq!(east_ca.cluster(), Some(&cluster("east")));
    assert_eq!(east_ca.trust_domain(), &td());
    assert!(east_ca.not_after() <= root_ca.not_after());
    let err = create_cluster_ca(&east_ca, &cluster("west"), now, DAY).unwrap_err();
    assert!(matches!(err, PkiError::NotARoot(_)), "{err}");

    let request = new_leaf_request().unwrap();
    assert!(!format!("{request:?}").contains("PRIVATE KEY"));
    let leaf: IssuedLeaf =
        issue_leaf(&east_ca, &node("east", "n1"), &request.csr_pem, now, DAY).unwrap();
    let chain = parse_certs(&leaf.chain_pem).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0], parse_certs(&leaf.cert_pem).unwrap()[0]);
    assert_eq!(chain[1].as_ref(), east_ca.cert_der());
    assert_eq!(leaf.serial.len(), 32);

    let (_, cert) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    assert_eq!(cert.raw_serial_as_string().replace(':', ""), leaf.serial);
    let sans = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = sans
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(names, ["URI(spiffe://ferry.test/cluster/east/node/n1)"]);
    assert!(!cert.is_ca());
    let not_after = cert.validity().not_after.timestamp();
    let not_before = cert.validity().not_before.timestamp();
    let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert_eq!(not_after, secs(leaf.not_after));
    assert_eq!(not_after - not_before, (DAY.as_secs() + 300) as i64);
    let eku = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let ku = cert.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.digital_signature() && !ku.value.key_cert_sign());

    // The key from the request serves the issued chain, and the identity comes from the SAN.
    let store = IdentityStore::from_pem(&leaf.chain_pem, &request.key_pem, &td()).unwrap();
    assert_eq!(store.identity(), node("east", "n1"));
    assert_eq!(store.not_after(), leaf.not_after);
    assert!(!format!("{store:?}").contains("PRIVATE KEY"));
    let other_td: TrustDomain = "other.test".parse().unwrap();
    assert!(IdentityStore::from_pem(&leaf.chain_pem, &request.key_pem, &other_td).is_err());
    let trust = TrustStore::from_pem(td(), &root.cert_pem).unwrap();
    assert_eq!(trust.roots_der(), vec![root_ca.cert_der().to_vec()]);
}

#[test]
fn ca_from_pem_refuses_a_mismatched_key_and_a_leaf() {
    let now = SystemTime::now();
    let a = create_root(&td(), now, DAY).unwrap();
    let b = create_root(&td(), now, DAY).unwrap();
    assert!(Ca::from_pem(&a.cert_pem, &a.key_pem).is_ok());
    let err = Ca::from_pem(&a.cert_pem, &b.key_pem).unwrap_err();
    assert!(matches!(err, PkiError::KeyMismatch), "{err}");
    assert!(err.to_string().contains("does not match"), "{err}");

    let root = Ca::from_pem(&a.cert_pem, &a.key_pem).unwrap();
    let east = create_cluster_ca(&root, &cluster("east"), now, DAY).unwrap();
    let east = Ca::from_pem(&east.cert_pem, &east.key_pem).unwrap();
    let request = new_leaf_request().unwrap();
    let leaf = issue_leaf(&east, &gateway("east"), &request.csr_pem, now, DAY).unwrap();
    let err = Ca::from_pem(&leaf.cert_pem, &request.key_pem).unwrap_err();
    assert!(matches!(err, PkiError::NotACa), "{err}");
    assert!(matches!(
        Ca::from_pem("no pem here", &a.key_pem),
        Err(PkiError::NoCertificates)
    ));
}

#[test]
fn written_files_have_the_right_modes() {
    let dir = std::env::temp_dir().join(format!("ferry-gateway-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret = dir.join("key.pem");
    // An existing, world-readable file is replaced by a 0600 one.
    std::fs::write(&secret, b"old").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    pki::write_secret_file(&secret, b"secret").unwrap();
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");

    let public = dir.join("cert.pem");
    pki::write_public_file(&public, b"public").unwrap();
    let mode = std::fs::metadata(&public).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(std::fs::read(&public).unwrap(), b"public");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A cluster CA as older Ferry made it: the cluster in the SPIFFE ID's path, which the
/// X.509-SVID rules forbid for a CA. Signed by the mesh root, so only the SPIFFE rules refuse it.
fn legacy_cluster_ca(mesh: &Mesh, c: &str) -> Issued {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("legacy CA ({c})"));
    params.subject_alt_names = vec![uri(&format!("spiffe://ferry.test/cluster/{c}"))];
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let signer = KeyPair::from_pem(&mesh.root.key_pem).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&mesh.root.cert_pem, &signer).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

#[test]
fn issued_chain_follows_the_x509_svid_rules() {
    let mesh = Mesh::new();
    let (chain, _) = mesh.leaf(&gateway("east"));
    let certs = parse_certs(&chain).unwrap();
    assert_eq!(certs.len(), 2);
    let uris = |cert: &x509_parser::certificate::X509Certificate<'_>| -> Vec<String> {
        cert.subject_alternative_name()
            .unwrap()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    // Leaf: one URI SAN with a path, not a CA, digitalSignature only.
    let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
    assert_eq!(uris(&leaf), ["spiffe://ferry.test/cluster/east/gateway"]);
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical && ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    // Cluster CA and root: a CA, keyCertSign, SPIFFE ID without a path.
    let root = parse_certs(&mesh.root.cert_pem).unwrap();
    for der in [&certs[1], &root[0]] {
        let (_, ca) = x509_parser::parse_x509_certificate(der).unwrap();
        assert!(ca.is_ca());
        assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
        assert_eq!(
            uris(&ca),
            ["spiffe://ferry.test"],
            "a CA's SPIFFE ID has no path"
        );
    }
    // The cluster binding is the CA's subject.
    let (_, east_ca) = x509_parser::parse_x509_certificate(&certs[1]).unwrap();
    let ous: Vec<&str> = east_ca
        .subject()
        .iter_organizational_unit()
        .map(|ou| ou.as_str().unwrap())
        .collect();
    assert_eq!(ous, ["cluster:east"]);
}

#[tokio::test]
async fn a_cluster_ca_with_a_path_in_its_spiffe_id_is_refused() {
    let mesh = Mesh::new();
    let legacy = legacy_cluster_ca(&mesh, "east");
    let err = Ca::from_pem(&legacy.cert_pem, &legacy.key_pem).unwrap_err();
    assert!(matches!(err, PkiError::NotACaIdentity(_)), "{err}");
    assert!(
        err.to_string()
            .contains("re-issue it with `ferry trust issue`"),
        "{err}"
    );
    // A leaf under it, presented with it, is refused in both directions.
    let bad = mesh.forge(
        vec![uri("spiffe://ferry.test/cluster/east/gateway")],
        &legacy.cert_pem,
        &legacy.key_pem,
        &[&legacy.cert_pem],
    );
    refused_both_ways(&mesh, &bad, "with no path (X.509-SVID)").await;
}
