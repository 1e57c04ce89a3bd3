//! Gathers the facts `ferry check` judges ([`ferry_federation::check`]): the trust
//! bundle's roots and the cluster CA, the certificates this control plane issued to roles
//! still alive, the snapshot, what the roles last reported, and a probe of the mesh DNS
//! server. The judgement itself is pure and lives in `federation`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ferry_federation::check::{self, DnsProbe, Facts, Finding, RoleCert, RoleVersion, Validity};
use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::ControlPlane;

/// How long the DNS probe waits for an answer.
const DNS_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What the roles told the control plane about themselves.
#[derive(Default)]
pub(super) struct RoleReports {
    /// The certificate each role instance ("gateway <addr>", "node <name>") last said it
    /// holds.
    certs: BTreeMap<String, Validity>,
    /// The snapshot version each live role instance reported, under a lease.
    versions: BTreeMap<String, (u64, Instant)>,
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl ControlPlane {
    /// Notes the certificate a role instance ("gateway <addr>", "node <name>") says it
    /// holds (Unix seconds; a report without one changes nothing).
    pub fn note_role_cert(&self, instance: &str, not_before: u64, not_after: u64) {
        if not_after == 0 {
            return;
        }
        let validity = Validity {
            not_before: i64::try_from(not_before).unwrap_or(i64::MAX),
            not_after: i64::try_from(not_after).unwrap_or(i64::MAX),
        };
        let mut roles = self.roles.lock().expect("role reports lock");
        match roles.certs.get_mut(instance) {
            Some(held) => *held = validity,
            None => {
                roles.certs.insert(instance.to_string(), validity);
            }
        }
    }

    /// Notes the snapshot version a role instance ("gateway <addr>", "node <name>") runs,
    /// for `lease`.
    pub fn note_role_version(&self, instance: String, version: u64, lease: Duration) {
        self.roles
            .lock()
            .expect("role reports lock")
            .versions
            .insert(instance, (version, Instant::now() + lease));
    }

    /// Every check, judged now.
    pub async fn check(&self) -> Vec<Finding> {
        let dns = self.probe_dns().await;
        let dns_version = self.dns_version_applied().await;
        let snapshot = self.snapshot();
        let now = SystemTime::now();
        let (role_certs, role_versions) = {
            let mut roles = self.roles.lock().expect("role reports lock");
            let at = Instant::now();
            let RoleReports { certs, versions } = &mut *roles;
            versions.retain(|_, (_, until)| *until > at);
            // A role instance that is gone keeps no certificate to judge.
            certs.retain(|instance, _| versions.contains_key(instance));
            let certs: Vec<RoleCert> = certs
                .iter()
                .map(|(role, validity)| RoleCert {
                    role: role.clone(),
                    validity: validity.clone(),
                })
                .collect();
            let versions = roles
                .versions
                .iter()
                .map(|(role, (version, _))| RoleVersion {
                    role: role.clone(),
                    version: *version,
                })
                .collect();
            (certs, versions)
        };
        let mut role_versions: Vec<RoleVersion> = role_versions;
        if let Some(version) = dns_version {
            role_versions.push(RoleVersion {
                role: "dns".into(),
                version,
            });
        }
        let roots = pem_validities(&self.trust.bundle_pem);
        let ca_pem = self.trust.ca.cert_pem().to_string();
        let facts = Facts {
            now: unix(now),
            roots: roots.iter().map(|(v, _)| v.clone()).collect(),
            cluster_ca: pem_validities(&ca_pem)
                .first()
                .map(|(v, _)| v.clone())
                .unwrap_or(Validity {
                    not_before: 0,
                    not_after: unix(self.trust.ca.not_after()),
                }),
            ca_chained: chained(&ca_pem, &self.trust.bundle_pem),
            role_certs,
            snapshot: &snapshot,
            published_at: self.published_at.load(Ordering::Relaxed) as i64,
            listen_failures: self
                .listen_failures()
                .iter()
                .map(|(addr, e, node)| format!("{addr}: {e} (node {node})"))
                .collect(),
            without_vip: self.unallocated(),
            dns,
            role_versions,
            local_roots: self.trust.root_fingerprints(),
            peer_roots: snapshot
                .links
                .iter()
                .map(|l| (l.peer.clone(), self.session(&l.peer).peer_roots))
                .filter(|(_, roots)| !roots.is_empty())
                .collect(),
        };
        check::evaluate(&facts)
    }

    /// Asks the cluster's DNS server (the address it recorded) for `dns-version.<zone>`.
    /// The snapshot version the DNS server answers from, read from its admin listener's
    /// `/metrics` (`ferry dns`'s, or `ferry up`'s that runs it; found like its DNS address,
    /// in the data directory); `None` when it does not say.
    async fn dns_version_applied(&self) -> Option<u64> {
        let recorded = crate::admin::recorded(&self.cfg.data_dir);
        let (_, addr) = recorded
            .iter()
            .find(|(role, _)| *role == crate::admin::Role::Dns)
            .or_else(|| {
                recorded
                    .iter()
                    .find(|(role, _)| *role == crate::admin::Role::Up)
            })?;
        let addr = *addr;
        let text = tokio::time::timeout(DNS_PROBE_TIMEOUT, crate::admin::get_metrics(addr))
            .await
            .ok()?
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("ferry_dns_snapshot_version "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|v| v as u64)
    }

    async fn probe_dns(&self) -> DnsProbe {
        let file = self.cfg.data_dir.join(crate::roles::dns::ADDR_FILE);
        let Some(addr) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        else {
            return DnsProbe::NotRunning;
        };
        match tokio::time::timeout(DNS_PROBE_TIMEOUT, dns_version(addr, &self.cfg.dns.zone)).await {
            Ok(Ok(version)) => DnsProbe::Answered(version),
            Ok(Err(e)) => DnsProbe::Failed(format!("{addr}: {e}")),
            Err(_) => DnsProbe::Failed(format!(
                "{addr}: no answer within {}",
                humantime::format_duration(DNS_PROBE_TIMEOUT)
            )),
        }
    }
}

/// The TXT answer to `dns-version.<zone>` from the server at `addr`, over UDP.
async fn dns_version(addr: SocketAddr, zone: &str) -> anyhow::Result<String> {
    let name = Name::from_ascii(format!("dns-version.{}.", zone.trim_end_matches('.')))?;
    let id = fastrand::u16(..);
    let mut query = Message::new(id, MessageType::Query, OpCode::Query);
    query.add_query(Query::query(name, RecordType::TXT));
    let socket = tokio::net::UdpSocket::bind(match addr {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    })
    .await?;
    socket.connect(addr).await?;
    socket.send(&query.to_vec()?).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.metadata.id != id {
            continue;
        }
        let code = reply.metadata.response_code;
        let text = reply.answers.iter().find_map(|r| match &r.data {
            RData::TXT(txt) => Some(txt.to_string()),
            _ => None,
        });
        return text.ok_or_else(|| anyhow::anyhow!("answered {code} without a TXT record"));
    }
}

/// The validity of each certificate in `pem`, with its DER.
fn pem_validities(pem: &str) -> Vec<(Validity, Vec<u8>)> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|p| {
            let cert = p.parse_x509().ok()?;
            let v = cert.validity();
            Some((
                Validity {
                    not_before: v.not_before.timestamp(),
                    not_after: v.not_after.timestamp(),
                },
                p.contents.clone(),
            ))
        })
        .collect()
}

/// Whether the CA certificate in `ca_pem` names a root of `bundle_pem` as its issuer (the
/// issuer's name and key identifier both match).
fn chained(ca_pem: &str, bundle_pem: &str) -> bool {
    use x509_parser::extensions::ParsedExtension;
    let Some((_, ca_der)) = pem_validities(ca_pem).into_iter().next() else {
        return false;
    };
    let Ok((_, ca)) = x509_parser::parse_x509_certificate(&ca_der) else {
        return false;
    };
    let authority_key = ca
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => {
                aki.key_identifier.as_ref().map(|k| k.0.to_vec())
            }
            _ => None,
        });
    pem_validities(bundle_pem).iter().any(|(_, der)| {
        let Ok((_, root)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        let subject_key = root
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(ski) => Some(ski.0.to_vec()),
                _ => None,
            });
        root.subject() == ca.issuer()
            && match (&authority_key, subject_key) {
                (Some(a), Some(s)) => *a == s,
                _ => true,
            }
    })
}
