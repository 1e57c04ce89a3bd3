//! Making and reading Ferry's certificates: one root CA per mesh (trust domain), one CA per
//! cluster signed by the root, and leaf certificates (X.509-SVIDs) for gateways and nodes signed
//! by their cluster's CA.
//!
//! Everything is ECDSA P-256. Time is passed in, never read here, so callers (and tests) choose
//! the validity window. This module does no TLS and no verification of peers (that is
//! [`crate::tls`]); it must never log a private key, and every type holding one redacts it in
//! `Debug`.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_federation::{ClusterId, Identity, InvalidSpiffeId, SpiffeId, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// How far `not_before` is set in the past, so a peer whose clock is a little behind still
/// accepts a certificate issued just now.
const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The last second X.509 `GeneralizedTime` (and rcgen) can express: 9999-12-31T23:59:59Z.
const MAX_CERT_TIME_SECS: u64 = 253_402_300_799;

/// A freshly made CA certificate and its private key, both PEM.
pub struct Issued {
    /// The certificate, PEM (`CERTIFICATE`).
    pub cert_pem: String,
    /// The PKCS#8 private key, PEM (`PRIVATE KEY`). Store with [`write_secret_file`].
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// A leaf certificate issued from a CSR (the key stays with whoever made the request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedLeaf {
    /// The leaf certificate alone, PEM.
    pub cert_pem: String,
    /// The leaf then the cluster CA, PEM: what a TLS endpoint presents.
    pub chain_pem: String,
    /// The serial number, lowercase hex, as encoded in the certificate.
    pub serial: String,
    /// End of validity, as encoded in the certificate (whole seconds).
    pub not_after: SystemTime,
}

/// A fresh private key and a certificate signing request for it, both PEM.
pub struct LeafRequest {
    /// The PKCS#8 private key, PEM. Never leaves the requesting process except to its 0600 file.
    pub key_pem: String,
    /// The CSR (`CERTIFICATE REQUEST`), PEM: send this to the cluster CA.
    pub csr_pem: String,
}

impl fmt::Debug for LeafRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeafRequest")
            .field("key_pem", &"<redacted>")
            .field("csr_pem", &self.csr_pem)
            .finish()
    }
}

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// rcgen failed to generate a key or sign a certificate.
    #[error("could not generate a P-256 key or sign a certificate ({0}); this points at a broken crypto backend, report it")]
    Generate(#[source] rcgen::Error),
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed; check that the kernel's entropy source (getrandom, /dev/urandom) is available")]
    Random,
    /// A validity window does not fit in a certificate.
    #[error("{what} cannot be written into a certificate (it must lie between 1970 and 9999); check the system clock and the requested validity")]
    TimeOutOfRange {
        /// Which time was out of range.
        what: &'static str,
    },
    /// The text holds no PEM `CERTIFICATE` block.
    #[error("no CERTIFICATE block found in the PEM text; pass the certificate file (-----BEGIN CERTIFICATE-----), not the key")]
    NoCertificates,
    /// The PEM text is malformed.
    #[error("the certificate PEM is malformed ({0}); pass the certificate file exactly as Ferry wrote it")]
    CertPem(String),
    /// A certificate is not valid X.509.
    #[error("a certificate is not valid X.509 ({0}); pass a certificate made by Ferry")]
    CertParse(String),
    /// The private key PEM could not be read.
    #[error("the private key is not a PKCS#8 PEM key ({0}); pass the key file written together with the certificate")]
    KeyPem(#[source] rcgen::Error),
    /// A key or CSR is not ECDSA P-256.
    #[error(
        "the {what} is not ECDSA P-256; Ferry uses P-256 everywhere, create it with Ferry's tools"
    )]
    NotP256 {
        /// "private key" or "certificate signing request".
        what: &'static str,
    },
    /// The private key does not belong to the certificate.
    #[error("the private key does not match the certificate's public key; pass the key file that was created together with this certificate")]
    KeyMismatch,
    /// A CA was expected but the certificate cannot sign others.
    #[error("the certificate is not a CA (basicConstraints cA is not set); pass the root or cluster CA certificate, not a leaf")]
    NotACa,
    /// Not exactly one URI SAN.
    #[error("a Ferry certificate carries exactly one URI SAN holding its SPIFFE ID, this one has {found}; re-issue it with Ferry")]
    UriSanCount {
        /// How many URI SANs were found.
        found: usize,
    },
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("the URI SAN {uri:?} is not a valid SPIFFE ID: {source}")]
    BadSpiffeId {
        /// The URI SAN as found.
        uri: String,
        /// What is wrong with it.
        #[source]
        source: Box<InvalidSpiffeId>,
    },
    /// The SPIFFE ID belongs to another trust domain.
    #[error("the SPIFFE ID {id} is not in trust domain {expected}; certificates from other meshes are not accepted")]
    WrongTrustDomain {
        /// The ID found.
        id: String,
        /// The trust domain expected.
        expected: TrustDomain,
    },
    /// The SPIFFE ID is in our trust domain but not one of Ferry's identity shapes.
    #[error("the SPIFFE ID {id} is not a Ferry identity: {source}")]
    NotAFerryIdentity {
        /// The ID found.
        id: String,
        /// What Ferry expected instead.
        #[source]
        source: Box<InvalidSpiffeId>,
    },
    /// A CA certificate's SPIFFE ID is not `spiffe://<trust domain>`.
    #[error("the CA certificate has SPIFFE ID {0}; a CA's SPIFFE ID is spiffe://<trust domain> with no path (X.509-SVID). A CA made by an older Ferry names its cluster in the path: re-issue it with `ferry trust issue`")]
    NotACaIdentity(String),
    /// A CA certificate's subject binds it to no valid cluster, or to several.
    #[error("the CA certificate's subject names cluster {0:?}, which is not one valid cluster name; re-issue it with `ferry trust issue`")]
    BadClusterBinding(String),
    /// A cluster CA was passed where the root is needed.
    #[error(
        "this is the cluster CA of {0}, not the root; cluster CAs are signed by the mesh's root CA"
    )]
    NotARoot(ClusterId),
    /// The root was passed where a cluster CA is needed.
    #[error("this is the root CA of {0}; leaf certificates are issued by a cluster CA, create one with create_cluster_ca and issue from it")]
    NotAClusterCa(TrustDomain),
    /// A cluster CA was asked to vouch for another cluster.
    #[error("the cluster CA of {ca} cannot issue a certificate for {identity}: a cluster CA vouches only for its own cluster; issue it from the CA of {}", .identity.cluster())]
    ForeignCluster {
        /// The CA's cluster.
        ca: ClusterId,
        /// The identity requested.
        identity: Box<Identity>,
    },
    /// Leaves are only for gateways and nodes.
    #[error("{0} is not a gateway or node identity; leaf certificates are only issued to gateways and nodes")]
    NotALeafIdentity(Identity),
    /// The CA itself is no longer valid at the requested time.
    #[error("the issuing CA expired at {not_after:?}; renew the CA before issuing from it")]
    CaExpired {
        /// The CA's end of validity.
        not_after: SystemTime,
    },
    /// The CSR is malformed or its signature does not verify.
    #[error("the certificate signing request is malformed or its signature does not verify ({0}); create a new one with new_leaf_request")]
    Csr(#[source] rcgen::Error),
}

/// A CA certificate and its signing key, loaded from PEM.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    trust_domain: TrustDomain,
    cluster: Option<ClusterId>,
    not_after: SystemTime,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("cluster", &self.cluster)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Ca {
    /// Loads a CA. The first `CERTIFICATE` block of `cert_pem` is the CA; it must have
    /// `cA=true`, exactly one URI SAN `spiffe://<td>`, at most one subject OU `cluster:<c>`
    /// (present: a cluster CA; absent: the root), and `key_pem` must be its P-256 key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, PkiError> {
        let cert_der = parse_certs(cert_pem)?.swap_remove(0);
        let key = KeyPair::from_pem(key_pem).map_err(PkiError::KeyPem)?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(PkiError::NotP256 {
                what: "private key",
            });
        }
        let cert = parse_x509(&cert_der)?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        if !cert.is_ca() {
            return Err(PkiError::NotACa);
        }
        let (trust_domain, cluster) = ca_binding(&cert)?;
        let not_after = cert_not_after(&cert);
        Ok(Ca {
            cert_pem: format!("{}\n", cert_pem.trim()),
            cert_der,
            key,
            trust_domain,
            cluster,
            not_after,
        })
    }

    /// The trust domain this CA belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// `Some(cluster)` for a cluster CA, `None` for the root.
    pub fn cluster(&self) -> Option<&ClusterId> {
        self.cluster.as_ref()
    }

    /// The CA certificate as given to [`Ca::from_pem`] (trimmed, newline-terminated).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The CA's end of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, PkiError> {
        Issuer::from_ca_cert_der(&self.cert_der, &self.key).map_err(PkiError::Generate)
    }
}

/// Makes a self-signed root CA for `td`: CN "Ferry root CA (<td>)", URI SAN `spiffe://<td>`,
/// key usage keyCertSign + cRLSign, at most one CA below it, random serial, valid from
/// `now - 5 min` to `now + validity`.
pub fn create_root(
    td: &TrustDomain,
    now: SystemTime,
    validity: Duration,
) -> Result<Issued, PkiError> {
    let key = new_key()?;
    let mut params = ca_params(format!("Ferry root CA ({td})"), format!("spiffe://{td}"), 1)?;
    set_validity(&mut params, now, later(now, validity)?)?;
    let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Makes the CA of `cluster`, signed by `root`: CN "Ferry cluster CA (<cluster>)", OU
/// `cluster:<cluster>` (the binding Ferry's verifier checks), URI SAN `spiffe://<td>` (a CA's
/// SPIFFE ID has no path), path length 0. Its validity ends no later than the root's.
/// Refuses when `root` is itself a cluster CA.
pub fn create_cluster_ca(
    root: &Ca,
    cluster: &ClusterId,
    now: SystemTime,
    validity: Duration,
) -> Result<Issued, PkiError> {
    if let Some(c) = root.cluster() {
        return Err(PkiError::NotARoot(c.clone()));
    }
    let not_after = capped_not_after(root, now, validity)?;
    let key = new_key()?;
    let td = root.trust_domain();
    let mut params = ca_params(
        format!("Ferry cluster CA ({cluster})"),
        format!("spiffe://{td}"),
        0,
    )?;
    params.distinguished_name.push(
        DnType::OrganizationalUnitName,
        format!("{CLUSTER_OU_PREFIX}{cluster}"),
    );
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, not_after)?;
    let cert = params
        .signed_by(&key, &root.issuer()?)
        .map_err(PkiError::Generate)?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// Makes a fresh P-256 key and a CSR for it. The CSR carries no names: the CA decides them.
pub fn new_leaf_request() -> Result<LeafRequest, PkiError> {
    let key = new_key()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "Ferry leaf request");
    let csr = params
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(PkiError::Generate)?;
    Ok(LeafRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr,
    })
}

/// Issues the leaf certificate of `identity` (a gateway or node of `ca`'s own cluster) for the
/// public key in `csr_pem`. Nothing else from the CSR is used: the certificate has exactly one
/// URI SAN, `identity.spiffe_id(td)`, EKU serverAuth + clientAuth, key usage digitalSignature,
/// `cA=false`, a random 16-byte serial, and is valid from `now - 5 min` to `now + validity`
/// (no later than the CA).
pub fn issue_leaf(
    ca: &Ca,
    identity: &Identity,
    csr_pem: &str,
    now: SystemTime,
    validity: Duration,
) -> Result<IssuedLeaf, PkiError> {
    let Some(ca_cluster) = ca.cluster() else {
        return Err(PkiError::NotAClusterCa(ca.trust_domain().clone()));
    };
    if identity.cluster() != ca_cluster {
        return Err(PkiError::ForeignCluster {
            ca: ca_cluster.clone(),
            identity: Box::new(identity.clone()),
        });
    }
    if !matches!(identity, Identity::Gateway { .. } | Identity::Node { .. }) {
        return Err(PkiError::NotALeafIdentity(identity.clone()));
    }
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::Csr)?;
    if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(PkiError::NotP256 {
            what: "certificate signing request",
        });
    }
    let not_after = capped_not_after(ca, now, validity)?;
    let id = identity.spiffe_id(ca.trust_domain()).to_string();

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, id.as_str());
    params.subject_alt_names = vec![uri_san(&id)?];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.serial_number = Some(random_serial()?);
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, now, not_after)?;
    let cert = params
        .signed_by(&csr.public_key, &ca.issuer()?)
        .map_err(PkiError::Generate)?;

    let parsed = parse_x509(cert.der())?;
    let serial = hex(parsed.raw_serial());
    let not_after = cert_not_after(&parsed);
    let cert_pem = cert.pem();
    let chain_pem = format!("{cert_pem}{}", ca.cert_pem());
    Ok(IssuedLeaf {
        cert_pem,
        chain_pem,
        serial,
        not_after,
    })
}

/// Every `CERTIFICATE` block of `pem`, in order (other blocks are skipped). No block is an error.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::CertPem(e.to_string()))?;
    if certs.is_empty() {
        return Err(PkiError::NoCertificates);
    }
    Ok(certs)
}

/// Writes a secret (a private key) to `path`: the data goes to a temporary file in the same
/// directory created with mode 0600, is fsynced, then renamed over `path`, so readers never see a
/// partial key and the key is never readable by others, even for an instant.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_file(path, contents, 0o600)
}

/// Writes public data (certificates, bundles) to `path` with mode 0644, the same way as
/// [`write_secret_file`] (temporary file, fsync, rename).
pub fn write_public_file(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_file(path, contents, 0o644)
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    // Unique per process and call, so concurrent writers never share a temporary file.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(format!(
        ".tmp{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` only applies when the file is created (and is filtered by the umask).
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    // Make the rename itself durable.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The single URI SAN of `cert`; zero or several is an error (several SPIFFE IDs in one
/// certificate is how CVE-2022-40716 happened).
pub(crate) fn single_uri_san<'a>(cert: &X509Certificate<'a>) -> Result<&'a str, PkiError> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| PkiError::CertParse(e.to_string()))?;
    let uris: Vec<&'a str> = san
        .iter()
        .flat_map(|ext| ext.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [uri] => Ok(uri),
        other => Err(PkiError::UriSanCount { found: other.len() }),
    }
}

/// The Ferry identity named by `cert`'s single URI SAN, which must be in trust domain `td`.
pub(crate) fn cert_identity(
    cert: &X509Certificate<'_>,
    td: &TrustDomain,
) -> Result<Identity, PkiError> {
    let uri = single_uri_san(cert)?;
    let id = SpiffeId::parse(uri).map_err(|source| PkiError::BadSpiffeId {
        uri: uri.to_owned(),
        source: Box::new(source),
    })?;
    if id.trust_domain() != td {
        return Err(PkiError::WrongTrustDomain {
            id: id.to_string(),
            expected: td.clone(),
        });
    }
    Identity::from_spiffe(&id, td).map_err(|source| PkiError::NotAFerryIdentity {
        id: id.to_string(),
        source: Box::new(source),
    })
}

/// Parses one DER certificate.
pub(crate) fn parse_x509(der: &[u8]) -> Result<X509Certificate<'_>, PkiError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PkiError::CertParse(
            "trailing bytes after the certificate".into(),
        )),
        Err(e) => Err(PkiError::CertParse(e.to_string())),
    }
}

/// The certificate's `notAfter`.
pub(crate) fn cert_not_after(cert: &X509Certificate<'_>) -> SystemTime {
    let secs = cert.validity().not_after.timestamp();
    match u64::try_from(secs) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

/// The subject organizational unit that binds a cluster CA to its cluster: `cluster:<name>`.
const CLUSTER_OU_PREFIX: &str = "cluster:";

/// What a CA certificate is: its trust domain, and the cluster it vouches for (`None` for the
/// root). Per X.509-SVID a CA's SPIFFE ID (its single URI SAN) is `spiffe://<td>` with no
/// path, so the cluster comes from the subject: exactly one organizational unit
/// `cluster:<name>` for a cluster CA, none for the root. Ferry's verifier checks this binding
/// (rustls-webpki does not enforce URI name constraints).
pub(crate) fn ca_binding(
    cert: &X509Certificate<'_>,
) -> Result<(TrustDomain, Option<ClusterId>), PkiError> {
    let uri = single_uri_san(cert)?;
    let Some(td) = uri
        .strip_prefix("spiffe://")
        .filter(|rest| !rest.contains('/'))
    else {
        return Err(PkiError::NotACaIdentity(uri.to_owned()));
    };
    let td: TrustDomain = td
        .parse()
        .map_err(|_| PkiError::NotACaIdentity(uri.to_owned()))?;
    let mut clusters = cert
        .subject()
        .iter_organizational_unit()
        .filter_map(|ou| ou.as_str().ok())
        .filter_map(|ou| ou.strip_prefix(CLUSTER_OU_PREFIX));
    let cluster = match (clusters.next(), clusters.next()) {
        (None, _) => None,
        (Some(name), None) => Some(
            name.parse::<ClusterId>()
                .map_err(|_| PkiError::BadClusterBinding(name.to_owned()))?,
        ),
        (Some(a), Some(_)) => return Err(PkiError::BadClusterBinding(format!("{a} and more"))),
    };
    Ok((td, cluster))
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)
}

fn ca_params(
    common_name: String,
    uri: String,
    path_len: u8,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.subject_alt_names = vec![uri_san(&uri)?];
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

fn uri_san(uri: &str) -> Result<SanType, PkiError> {
    let ia5 = uri.try_into().map_err(PkiError::Generate)?;
    Ok(SanType::URI(ia5))
}

/// 16 random bytes, top bit clear (serials are positive) and second bit set (so no leading zero
/// byte is dropped and the encoded serial is exactly 16 bytes).
fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Random)?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn later(now: SystemTime, validity: Duration) -> Result<SystemTime, PkiError> {
    now.checked_add(validity).ok_or(PkiError::TimeOutOfRange {
        what: "the end of validity",
    })
}

/// `now + validity`, but never past the issuer's own end of validity; an expired issuer is an
/// error.
fn capped_not_after(
    issuer: &Ca,
    now: SystemTime,
    validity: Duration,
) -> Result<SystemTime, PkiError> {
    if issuer.not_after() <= now {
        return Err(PkiError::CaExpired {
            not_after: issuer.not_after(),
        });
    }
    Ok(later(now, validity)?.min(issuer.not_after()))
}

/// Sets `not_before = now - 5 min` and `not_after`, in whole seconds. rcgen takes
/// `time::OffsetDateTime`; adding to its epoch spares a direct dependency on `time`.
fn set_validity(
    params: &mut CertificateParams,
    now: SystemTime,
    not_after: SystemTime,
) -> Result<(), PkiError> {
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(UNIX_EPOCH);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + since_epoch(not_before, "the start of validity")?;
    params.not_after = epoch + since_epoch(not_after, "the end of validity")?;
    Ok(())
}

fn since_epoch(t: SystemTime, what: &'static str) -> Result<Duration, PkiError> {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.as_secs() <= MAX_CERT_TIME_SECS => Ok(Duration::from_secs(d.as_secs())),
        _ => Err(PkiError::TimeOutOfRange { what }),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
