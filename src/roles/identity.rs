//! Obtains a role's short-lived certificate from the control plane and renews it.
//!
//! The key is made here and never leaves the process: the control plane sees a CSR
//! and answers the chain. Renewal happens at two thirds of the lifetime; the new
//! certificate is swapped into the `IdentityStore`, so new handshakes use it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferry_federation::TrustDomain;
use ferry_gateway::pki;
use ferry_gateway::tls::{IdentityStore, TrustStore};

use crate::client;
use crate::pb;

/// The identity and trust a role runs with.
pub struct RoleTls {
    pub identity: Arc<IdentityStore>,
    pub trust: Arc<TrustStore>,
    /// The validity of the certificate it holds now.
    pub held: Held,
}

/// The validity (Unix seconds: not before, not after) of the certificate a role holds
/// now, kept current across renewals; the role reports it with its snapshot version, so
/// `ferry check` judges each gateway's and node's own certificate (FERRY104).
#[derive(Clone, Default)]
pub struct Held(Arc<std::sync::Mutex<(u64, u64)>>);

impl Held {
    pub fn get(&self) -> (u64, u64) {
        *self.0.lock().expect("held cert lock")
    }

    fn set(&self, chain_pem: &str) {
        if let Some(validity) = leaf_validity(chain_pem) {
            *self.0.lock().expect("held cert lock") = validity;
        }
    }
}

/// The validity of the first certificate (the leaf) in `chain_pem`.
fn leaf_validity(chain_pem: &str) -> Option<(u64, u64)> {
    let pem = x509_parser::pem::Pem::iter_from_buffer(chain_pem.as_bytes()).next()?;
    let pem = pem.ok()?;
    let cert = pem.parse_x509().ok()?;
    let validity = cert.validity();
    Some((
        u64::try_from(validity.not_before.timestamp()).ok()?,
        u64::try_from(validity.not_after.timestamp()).ok()?,
    ))
}

async fn request(
    socket: &Path,
    role: &str,
    node: &str,
) -> anyhow::Result<(pb::IssueReply, String)> {
    let req = pki::new_leaf_request()?;
    let mut c = client::connect(socket).await?;
    let reply = c
        .issue_certificate(pb::IssueRequest {
            role: role.to_owned(),
            node: node.to_owned(),
            csr_pem: req.csr_pem.clone(),
        })
        .await
        .map_err(client::status_error)?
        .into_inner();
    Ok((reply, req.key_pem.clone()))
}

/// Gets a certificate for `role` ("gateway" or "node") and starts its renewal.
pub async fn obtain(socket: PathBuf, role: &'static str, node: String) -> anyhow::Result<RoleTls> {
    let (reply, key_pem) = request(&socket, role, &node).await?;
    let td: TrustDomain = reply.trust_domain.parse()?;
    let identity = Arc::new(IdentityStore::from_pem(&reply.chain_pem, &key_pem, &td)?);
    let trust = Arc::new(TrustStore::from_pem(td, &reply.bundle_pem)?);
    tracing::info!(identity = %identity.identity(), "certificate obtained");
    let expiry = metrics::gauge!("ferry_cert_expiry_timestamp_seconds", "role" => role);
    expiry.set(reply.not_after_unix as f64);
    if let Some(root) = earliest_not_after(&reply.bundle_pem) {
        metrics::gauge!("ferry_root_expiry_timestamp_seconds").set(root as f64);
    }
    let held = Held::default();
    held.set(&reply.chain_pem);
    let renew = identity.clone();
    let renewed = held.clone();
    tokio::spawn(async move {
        let mut not_after = reply.not_after_unix;
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let left = not_after.saturating_sub(now);
            let wait = Duration::from_secs((left / 3).max(5));
            tokio::time::sleep(wait).await;
            match request(&socket, role, &node).await {
                Ok((reply, key_pem)) => match renew.replace(&reply.chain_pem, &key_pem) {
                    Ok(()) => {
                        renewed.set(&reply.chain_pem);
                        not_after = reply.not_after_unix;
                        expiry.set(not_after as f64);
                        tracing::info!("certificate renewed");
                    }
                    Err(e) => tracing::error!(error = %e, "renewed certificate unusable"),
                },
                Err(e) => tracing::warn!(error = %e, "certificate renewal failed; retrying"),
            }
        }
    });
    Ok(RoleTls {
        identity,
        trust,
        held,
    })
}

/// The earliest end of validity (Unix seconds) among the certificates in `pem`.
pub fn earliest_not_after(pem: &str) -> Option<i64> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .filter_map(|p| {
            let cert = p.parse_x509().ok()?;
            Some(cert.validity().not_after.timestamp())
        })
        .min()
}
