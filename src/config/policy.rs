//! The config file's `[[policy]]` tables: one service's traffic policy each, in the shape
//! of `ferry policy set`'s flags. Policies the file declares are the file's: the CLI
//! refuses to change them, and one removed from the file is cleared at the next start.

use std::collections::{BTreeMap, BTreeSet};

use ferry_federation::model::traffic::{checked_limits, parse_retry_on};
use ferry_federation::{ClusterId, HeaderRoute, PolicyEdit, ServiceName, Split, TrafficPolicy};
use serde::Deserialize;

use super::{invalid, parse_duration, ConfigError};

/// One `[[policy]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    service: String,
    /// `local_only = true`: only this cluster's endpoints.
    #[serde(default)]
    local_only: bool,
    /// `pinned = "west"`: only that cluster's endpoints.
    pinned: Option<String>,
    /// `weights = { east = 90, west = 10 }`.
    weights: Option<BTreeMap<String, u32>>,
    /// `timeout = "2s"`.
    timeout: Option<String>,
    #[serde(default)]
    retries: u32,
    /// `retry_on = ["5xx", "reset"]`.
    retry_on: Option<Vec<String>>,
    /// `routes = ["x-canary=1 -> west"]`.
    #[serde(default)]
    routes: Vec<String>,
}

/// Validates every `[[policy]]` table.
pub(super) fn policies(raw: Vec<RawPolicy>) -> Result<Vec<TrafficPolicy>, ConfigError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, p) in raw.into_iter().enumerate() {
        let key = format!("policy[{i}]");
        let service: ServiceName = p
            .service
            .parse()
            .map_err(|e| invalid(format!("{key}.service"), e))?;
        if !seen.insert(service.clone()) {
            return Err(invalid(
                format!("{key}.service"),
                format!("service `{service}` has two [[policy]] tables; merge them"),
            ));
        }
        let splits = usize::from(p.local_only)
            + usize::from(p.pinned.is_some())
            + usize::from(p.weights.is_some());
        if splits > 1 {
            return Err(invalid(
                key,
                "set at most one of local_only, pinned and weights (none means failover)",
            ));
        }
        let split = if p.local_only {
            Split::LocalOnly
        } else if let Some(cluster) = &p.pinned {
            Split::Pinned(
                cluster
                    .parse()
                    .map_err(|e| invalid(format!("{key}.pinned"), e))?,
            )
        } else if let Some(weights) = &p.weights {
            let mut parsed = BTreeMap::new();
            for (cluster, weight) in weights {
                let cluster: ClusterId = cluster
                    .parse()
                    .map_err(|e| invalid(format!("{key}.weights"), e))?;
                parsed.insert(cluster, *weight);
            }
            Split::Weights(parsed)
        } else {
            Split::Failover
        };
        let timeout = p
            .timeout
            .as_deref()
            .map(|t| parse_duration(&format!("{key}.timeout"), t))
            .transpose()?;
        let retries = checked_limits(timeout, p.retries).map_err(|e| invalid(key.clone(), e))?;
        let retry_on = p
            .retry_on
            .map(|words| parse_retry_on(&words.join(",")))
            .transpose()
            .map_err(|e| invalid(format!("{key}.retry_on"), e))?;
        let routes = p
            .routes
            .iter()
            .map(|r| r.parse::<HeaderRoute>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("{key}.routes"), e))?;
        let edit = PolicyEdit {
            split: Some(split),
            routes: Some(routes),
            timeout: Some(timeout),
            retries: Some(retries),
            retry_on,
        };
        out.push(
            edit.apply(TrafficPolicy::new(service))
                .map_err(|e| invalid(key, e))?,
        );
    }
    out.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(out)
}
