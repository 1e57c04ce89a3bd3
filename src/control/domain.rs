//! The control plane's rules: what each admin verb and role call does to the store, as
//! methods on [`ControlPlane`] that take the clock (`now`) and randomness as arguments.
//!
//! Every write to the store goes through here and ends in a republish, so no caller can
//! change state and forget to publish it. The tonic handlers in [`super::api`] only convert
//! requests to these calls and [`ControlError`]s to statuses; the rules are unit-tested
//! below without sockets.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ferry_federation::{check_gateways, ClusterId, Identity, LinkToken, ServiceName, ServiceSpec};
use ferry_gateway::pki::{self, IssuedLeaf};

use super::store::{CertDoc, LinkDoc, RedeemError, ServiceDoc, StoreError, TokenDoc};
use super::ControlPlane;

/// Longest a link token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// Why a control-plane call was refused; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The cluster is not in a state that allows it.
    #[error("{0}")]
    Precondition(String),
    /// A link token redemption was refused.
    #[error(transparent)]
    Redeem(#[from] RedeemError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA refused to issue.
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
}

/// Refuses a service whose endpoint is one of this cluster's admin listeners: the mesh
/// must never carry a call (from a VIP or a peer) to `/metrics` and its kind.
pub fn not_an_admin_listener(
    cfg: &crate::config::Config,
    spec: &ferry_federation::ServiceSpec,
) -> Result<(), ControlError> {
    let listeners = crate::admin::listeners(cfg);
    let addrs: Vec<std::net::SocketAddr> = listeners.iter().map(|(_, a)| *a).collect();
    for endpoint in &spec.endpoints {
        for port in &spec.ports {
            let target = endpoint.target(port);
            if ferry_gateway::guard::covers(&addrs, target) {
                let role = listeners
                    .iter()
                    .find(|(_, a)| ferry_gateway::guard::covers(&[*a], target))
                    .map_or("a", |(r, _)| r.as_str());
                return Err(ControlError::Invalid(format!(
                    "endpoint {target} of {} is the {role} role's admin listener (/metrics, /ready, /live), which the mesh never proxies to; give the service its own address",
                    spec.name
                )));
            }
        }
    }
    Ok(())
}

/// What `service add` did.
#[derive(Debug, PartialEq, Eq)]
pub struct AddOutcome {
    /// What changed, when it replaced an existing service.
    pub replaced: Option<String>,
}

impl ControlPlane {
    /// Refuses a runtime change to a service the config file declares: the file is its
    /// source of truth, and the change would be undone at the next start.
    fn not_declared(&self, name: &ServiceName, verb: &str) -> Result<(), ControlError> {
        if !self.cfg.services.iter().any(|d| &d.spec.name == name) {
            return Ok(());
        }
        Err(ControlError::Precondition(format!(
            "`{verb} {name}` refused: {name} is declared in {}, which is its source of truth; change it there and restart the cluster (a runtime change would be undone at the next start)",
            self.config_file()
        )))
    }

    /// The config file, for messages.
    pub(super) fn config_file(&self) -> String {
        self.cfg
            .file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the cluster's config file".into())
    }

    /// `service add`: stores `spec` (replacing a service of that name) and publishes it. An
    /// export that continues keeps its original time (so it never looks newer to peers).
    pub fn add_service(
        &self,
        now_ms: u64,
        spec: ServiceSpec,
        export: bool,
    ) -> Result<AddOutcome, ControlError> {
        let name = spec.name.clone();
        self.not_declared(&name, "service add")?;
        not_an_admin_listener(&self.cfg, &spec)?;
        let previous = self.store.services()?.remove(&name);
        let exported_at_ms = match &previous {
            Some(old) if old.exported && export => old.exported_at_ms,
            _ if export => now_ms,
            _ => 0,
        };
        let doc = ServiceDoc {
            spec,
            exported: export,
            exported_at_ms,
            declared: false,
        };
        self.store.put_service(&doc)?;
        let replaced = previous.map(|old| describe_replacement(&old, &doc));
        tracing::info!(service = %name, exported = export, headless = doc.spec.headless, replaced = replaced.as_deref().unwrap_or(""), "service added");
        self.republish()?;
        self.services_changed.notify_one();
        Ok(AddOutcome { replaced })
    }

    /// `service remove`.
    pub fn remove_service(&self, name: &ServiceName) -> Result<(), ControlError> {
        self.not_declared(name, "service remove")?;
        if !self.store.remove_service(name)? {
            return Err(ControlError::NotFound(format!(
                "no local service `{name}`; `ferry services` lists them"
            )));
        }
        tracing::info!(service = %name, "service removed");
        self.republish()?;
        self.services_changed.notify_one();
        Ok(())
    }

    /// `export` / `unexport`.
    pub fn set_exported(
        &self,
        now_ms: u64,
        name: &ServiceName,
        exported: bool,
    ) -> Result<(), ControlError> {
        self.not_declared(name, if exported { "export" } else { "unexport" })?;
        let Some(mut doc) = self.store.services()?.remove(name) else {
            return Err(ControlError::NotFound(format!(
                "no local service `{name}`; add it first with `ferry service add {name} --port …`"
            )));
        };
        if doc.exported != exported {
            doc.exported = exported;
            doc.exported_at_ms = if exported { now_ms } else { 0 };
            self.store.put_service(&doc)?;
            tracing::info!(service = %name, exported, "export changed");
        }
        self.republish()?;
        Ok(())
    }

    /// `link create`: a single-use token for `peer`, valid `ttl` from `now_unix`, its id and
    /// secret drawn from `random`.
    pub fn create_link_token(
        &self,
        now_unix: u64,
        random: &mut dyn FnMut(&mut [u8]),
        peer: ClusterId,
        ttl: Duration,
    ) -> Result<LinkToken, ControlError> {
        if peer == self.cfg.cluster {
            return Err(ControlError::Invalid(format!(
                "cluster `{peer}` cannot link to itself; name the other cluster with --peer"
            )));
        }
        if ttl.is_zero() || ttl > MAX_TOKEN_TTL {
            return Err(ControlError::Invalid(
                "--ttl must be between 1s and 24h (default 15m)".into(),
            ));
        }
        let gateways = self.snapshot().gateways.clone();
        if gateways.is_empty() {
            return Err(ControlError::Precondition(
                "no gateway of this cluster is running, so a peer could not reach it; start `ferry gateway` (or `ferry up`) first".into(),
            ));
        }
        let mut id = [0u8; 16];
        let mut secret = [0u8; 32];
        random(&mut id);
        random(&mut secret);
        let expires_at_unix = now_unix + ttl.as_secs();
        self.store.put_token(
            &id,
            &TokenDoc {
                peer: peer.clone(),
                secret,
                expires_at_unix,
                used: false,
            },
        )?;
        tracing::info!(%peer, token_id = %super::store::hex(&id), ttl_s = ttl.as_secs(), "link token created");
        Ok(LinkToken {
            issuer: self.cfg.cluster.clone(),
            trust_domain: self.trust.trust_domain().clone(),
            peer,
            gateways,
            bundle_fingerprint: self.trust.fingerprint,
            id,
            secret,
            expires_at_unix,
        })
    }

    /// A joining cluster redeems token `id` (our gateway checked its proof with
    /// `check_proof`): on success the link is recorded with the joiner's dialable gateways
    /// and our gateways are returned.
    pub fn redeem_link_token(
        &self,
        now_unix: u64,
        id: &[u8; 16],
        joiner: &ClusterId,
        offered_gateways: &[SocketAddr],
        check_proof: impl FnOnce(&[u8; 32]) -> bool,
    ) -> Result<Vec<SocketAddr>, ControlError> {
        let (gateways, refused) = check_gateways(offered_gateways, &self.cfg.limits);
        for r in &refused {
            tracing::warn!(%joiner, detail = %r, "joining cluster's gateway address refused");
        }
        let link = LinkDoc {
            peer: joiner.clone(),
            gateways,
            created_at_unix: now_unix,
        };
        if let Err(refusal) = self
            .store
            .redeem_token(id, joiner, now_unix, check_proof, &link)?
        {
            tracing::warn!(%joiner, reason = %refusal, "link join refused");
            return Err(refusal.into());
        }
        tracing::info!(peer = %joiner, "link created by join");
        self.republish()?;
        Ok(self.snapshot().gateways.clone())
    }

    /// Checks a token this cluster was handed by `link join` before any network call, and
    /// keeps only the gateway addresses it may dial.
    pub fn check_join_token(
        &self,
        now_unix: u64,
        mut token: LinkToken,
    ) -> Result<LinkToken, ControlError> {
        let us = &self.cfg.cluster;
        if token.is_expired(now_unix) {
            return Err(ControlError::Invalid(format!(
                "link token expired; ask `{}` for a new one with `ferry link create --peer {us}`",
                token.issuer
            )));
        }
        if &token.trust_domain != self.trust.trust_domain()
            || token.bundle_fingerprint != self.trust.fingerprint
        {
            return Err(ControlError::Invalid(format!(
                "link token comes from a mesh with another root (trust domain `{}`, bundle {}; ours is `{}`, bundle {}); clusters linked in this release must share one root from `ferry trust init`",
                token.trust_domain,
                ferry_federation::fingerprint_hex(&token.bundle_fingerprint),
                self.trust.trust_domain(),
                ferry_federation::fingerprint_hex(&self.trust.fingerprint)
            )));
        }
        if &token.issuer == us {
            return Err(ControlError::Invalid(
                "this link token was issued by this very cluster; run `ferry link join` on the peer"
                    .into(),
            ));
        }
        if &token.peer != us {
            return Err(ControlError::Invalid(format!(
                "link token was issued for peer `{}`, but this cluster is `{us}`; ask `{}` for `ferry link create --peer {us}`",
                token.peer, token.issuer
            )));
        }
        let (usable, refused) = check_gateways(&token.gateways, &self.cfg.limits);
        if usable.is_empty() {
            let why: Vec<String> = refused.iter().map(|r| r.to_string()).collect();
            return Err(ControlError::Invalid(format!(
                "none of the link token's gateway addresses may be dialled ({}); on one host, set `allow_loopback_gateways = true` under [federation]",
                why.join("; ")
            )));
        }
        token.gateways = usable;
        Ok(token)
    }

    /// Records the link a successful join made with `issuer`, whose gateways are
    /// `announced` (falling back to the token's when none may be dialled).
    pub fn record_joined_link(
        &self,
        now_unix: u64,
        issuer: ClusterId,
        announced: &[SocketAddr],
        token_gateways: &[SocketAddr],
    ) -> Result<LinkDoc, ControlError> {
        let (mut gateways, _) = check_gateways(announced, &self.cfg.limits);
        if gateways.is_empty() {
            gateways = token_gateways.to_vec();
        }
        let doc = LinkDoc {
            peer: issuer,
            gateways,
            created_at_unix: now_unix,
        };
        self.store.put_link(&doc)?;
        tracing::info!(peer = %doc.peer, "link joined");
        self.republish()?;
        Ok(doc)
    }

    /// `link remove`: forgets the link and what the peer reported.
    pub fn remove_link(&self, peer: &ClusterId) -> Result<(), ControlError> {
        if !self.store.remove_link(peer)? {
            return Err(ControlError::NotFound(format!(
                "no link to `{peer}`; `ferry link list` shows the links"
            )));
        }
        self.forget_peer(peer);
        tracing::info!(%peer, "link removed");
        self.republish()?;
        Ok(())
    }

    /// The peer removed the link on its side: remove ours too (nothing if already gone).
    pub fn peer_removed_link(&self, peer: &ClusterId) -> Result<(), ControlError> {
        if self.store.remove_link(peer)? {
            tracing::warn!(%peer, "peer removed the link; removed here too");
            self.forget_peer(peer);
            self.republish()?;
        }
        Ok(())
    }

    /// The links as stored.
    pub fn links(&self) -> Result<Vec<LinkDoc>, ControlError> {
        Ok(self.store.links()?)
    }

    /// Issues `identity` (a gateway or node of this cluster) a certificate for the key in
    /// `csr_pem`, valid from `now` for `control.cert_ttl`, and records its serial.
    pub fn issue_certificate(
        &self,
        now: SystemTime,
        identity: &Identity,
        csr_pem: &str,
    ) -> Result<IssuedLeaf, ControlError> {
        let leaf = pki::issue_leaf(&self.trust.ca, identity, csr_pem, now, self.cfg.cert_ttl)?;
        let not_after_unix = leaf
            .not_after
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.store.record_cert(
            &leaf.serial,
            &CertDoc {
                identity: identity.spiffe_id(self.trust.trust_domain()).to_string(),
                not_after_unix,
            },
        )?;
        tracing::info!(identity = %identity, serial = %leaf.serial, "certificate issued");
        Ok(leaf)
    }
}

/// What `service add` changed about a service that already existed, for the operator.
fn describe_replacement(old: &ServiceDoc, new: &ServiceDoc) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_owned()
        } else {
            v.join(" ")
        }
    };
    let ports = |d: &ServiceDoc| {
        d.spec
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    };
    let eps = |d: &ServiceDoc| {
        d.spec
            .endpoints
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
    };
    let mut changes = Vec::new();
    if ports(old) != ports(new) {
        changes.push(format!(
            "ports {} -> {}",
            list(&ports(old)),
            list(&ports(new))
        ));
    }
    if eps(old) != eps(new) {
        changes.push(format!(
            "endpoints {} -> {}",
            list(&eps(old)),
            list(&eps(new))
        ));
    }
    if old.spec.headless != new.spec.headless {
        changes.push(format!(
            "headless {} -> {}",
            old.spec.headless, new.spec.headless
        ));
    }
    match (old.exported, new.exported) {
        (true, false) => {
            changes.push("no longer exported (add --export to keep it exported)".into())
        }
        (false, true) => changes.push("now exported".into()),
        _ => {}
    }
    if changes.is_empty() {
        format!("replaced {} with an identical definition", new.spec.name)
    } else {
        format!("replaced {}: {}", new.spec.name, changes.join("; "))
    }
}

#[cfg(test)]
mod tests;
