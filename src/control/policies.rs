//! Traffic policies: `ferry policy set / show / clear` and the config's `[[policy]]`
//! tables, stored like services and published in the snapshot for the node proxies.
//!
//! A policy may name a service this cluster does not know yet (one a peer will export):
//! it applies once the name resolves. The rules here only store and publish; deciding a
//! call is `ferry_federation::traffic`'s.

use ferry_federation::model::traffic::{checked_limits, parse_retry_on};
use ferry_federation::{HeaderRoute, PolicyEdit, ServiceName, Split, TrafficPolicy};

use super::domain::ControlError;
use super::store::{PolicyDoc, Store, StoreError};
use super::ControlPlane;
use crate::config::Config;
use crate::pb;

/// Most policies one cluster stores.
pub const MAX_POLICIES: usize = 4096;

impl ControlPlane {
    /// Refuses a runtime change to a policy the config file declares.
    fn policy_not_declared(&self, name: &ServiceName, verb: &str) -> Result<(), ControlError> {
        if !self.cfg.policies.iter().any(|p| &p.service == name) {
            return Ok(());
        }
        Err(ControlError::Precondition(format!(
            "`policy {verb} {name}` refused: the policy of {name} is declared in {} ([[policy]]), which is its source of truth; change it there and restart the cluster",
            self.config_file()
        )))
    }

    /// `policy set`: applies `edit` to the service's policy (the default when it has none),
    /// stores and publishes the result.
    pub fn set_policy(
        &self,
        name: &ServiceName,
        edit: PolicyEdit,
    ) -> Result<TrafficPolicy, ControlError> {
        self.policy_not_declared(name, "set")?;
        let mut stored = self.store.policies()?;
        let base = match stored.remove(name) {
            Some(doc) => doc.policy,
            None if stored.len() >= MAX_POLICIES => {
                return Err(ControlError::Precondition(format!(
                    "this cluster already has {MAX_POLICIES} policies; clear some with `ferry policy clear`"
                )))
            }
            None => TrafficPolicy::new(name.clone()),
        };
        let policy = edit
            .apply(base)
            .map_err(|e| ControlError::Invalid(format!("policy for {name} refused: {e}")))?;
        self.store.put_policy(&PolicyDoc {
            policy: policy.clone(),
            declared: false,
        })?;
        tracing::info!(service = %name, split = %policy.split, routes = policy.routes.len(), retries = policy.retries, "policy set");
        self.republish()?;
        Ok(policy)
    }

    /// `policy clear`: the service goes back to the default policy.
    pub fn clear_policy(&self, name: &ServiceName) -> Result<(), ControlError> {
        self.policy_not_declared(name, "clear")?;
        if !self.store.remove_policy(name)? {
            return Err(ControlError::NotFound(format!(
                "service `{name}` has no policy (it follows the default, failover); `ferry policy show` lists the policies"
            )));
        }
        tracing::info!(service = %name, "policy cleared");
        self.republish()?;
        Ok(())
    }

    /// `policy show`: every stored policy, with whether the config file declares it.
    pub fn policies(&self) -> Result<Vec<PolicyDoc>, ControlError> {
        Ok(self.store.policies()?.into_values().collect())
    }
}

/// Stores the policies the config file declares exactly as it says, and clears those it
/// declared before but no longer does; policies set with the CLI are left alone.
pub(super) fn apply_declared_policies(cfg: &Config, store: &Store) -> Result<(), StoreError> {
    let stored = store.policies()?;
    for declared in &cfg.policies {
        let doc = PolicyDoc {
            policy: declared.clone(),
            declared: true,
        };
        if stored.get(&declared.service) != Some(&doc) {
            store.put_policy(&doc)?;
        }
    }
    for (name, doc) in &stored {
        if doc.declared && !cfg.policies.iter().any(|p| &p.service == name) {
            tracing::info!(service = %name, "policy no longer declared in the config file: cleared");
            store.remove_policy(name)?;
        }
    }
    Ok(())
}

/// The change a `SetPolicy` request asks for; the error says which flag is wrong.
pub(super) fn edit_from_request(req: &pb::SetPolicyRequest) -> Result<PolicyEdit, String> {
    let split = req
        .split
        .as_deref()
        .map(|s| s.parse::<Split>())
        .transpose()
        .map_err(|e| format!("invalid split: {e}"))?;
    let routes = match req.replace_routes {
        false => None,
        true => Some(
            req.routes
                .iter()
                .map(|r| r.parse::<HeaderRoute>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("invalid --route: {e}"))?,
        ),
    };
    let timeout = match req.timeout.as_deref() {
        None => None,
        Some("none") => Some(None),
        Some(t) => Some(Some(humantime::parse_duration(t).map_err(|e| {
            format!("invalid --timeout `{t}`: {e}; expected e.g. 2s or 500ms, or none")
        })?)),
    };
    let retries = req
        .retries
        .map(|r| checked_limits(timeout.flatten(), r))
        .transpose()
        .map_err(|e| format!("invalid --retries or --timeout: {e}"))?;
    if let Some(Some(t)) = timeout {
        checked_limits(Some(t), 0).map_err(|e| format!("invalid --timeout: {e}"))?;
    }
    let retry_on = req
        .retry_on
        .as_deref()
        .map(parse_retry_on)
        .transpose()
        .map_err(|e| format!("invalid --retry-on: {e}"))?;
    Ok(PolicyEdit {
        split,
        routes,
        timeout,
        retries,
        retry_on,
    })
}

/// A policy as the API shows it.
pub(super) fn policy_info(policy: &TrafficPolicy, declared: bool, known: bool) -> pb::PolicyInfo {
    pb::PolicyInfo {
        service: policy.service.to_string(),
        split: policy.split.to_string(),
        routes: policy.routes.iter().map(|r| r.to_string()).collect(),
        timeout: policy
            .timeout
            .map(|t| humantime::format_duration(t).to_string())
            .unwrap_or_default(),
        retries: u32::from(policy.retries),
        retry_on: policy
            .retry_on
            .iter()
            .map(|r| r.as_str().to_string())
            .collect(),
        declared,
        known,
    }
}
