//! Which of a plan's hops a call may use, in which groups, under the service's policy:
//! the header routes, then the split, with locality (this cluster first, then the other
//! clusters nearest first). The balancer picks within a group ([`super::balance`]); the
//! next group is the failover.
//!
//! Pure: the request's headers, the clusters' round-trip times and the random roll for a
//! weighted split are passed in.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::model::{ClusterId, ServiceName};
use crate::routing::{Hop, Plan};

use crate::model::{Split, TrafficPolicy};

/// What a call brings to the decision besides the plan and the policy.
#[derive(Clone, Copy, Debug)]
pub struct CallFacts<'a> {
    /// This cluster.
    pub local: &'a ClusterId,
    /// Measured round trip to each peer's gateways; a peer not in it counts as farthest.
    pub rtt: &'a BTreeMap<ClusterId, Duration>,
    /// The request's headers (lowercase names), for header routes; empty for TCP.
    pub headers: &'a [(&'a str, &'a str)],
    /// A random number for a weighted split.
    pub roll: u32,
}

/// Why a call went where it went (a bounded set: metrics label it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// A header route matched (its index in the policy).
    Route(usize),
    /// The default: local first, then nearest.
    Failover,
    /// `local-only`.
    LocalOnly,
    /// `pinned`.
    Pinned,
    /// A weighted split picked the first group's cluster.
    Weighted,
    /// A plan for one named endpoint (a headless service's endpoint VIP): no policy applies.
    Endpoint,
}

/// The groups of hops a call may use, best first; never empty, and no group is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Groups in the order to use them.
    pub groups: Vec<Vec<Hop>>,
    /// Why.
    pub reason: Reason,
}

/// The policy leaves a call nowhere to go.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unroutable {
    /// Every cluster the policy allows lacks a healthy endpoint.
    #[error(
        "service {service} has no healthy endpoint where its policy ({allowed}) lets calls \
         go; check `ferry policy show {service}` and the endpoints of those clusters"
    )]
    NoAllowedEndpoint {
        /// The service.
        service: ServiceName,
        /// The policy's allowance, as text (`local-only`, `pinned=west`, `route x-canary=1
        /// -> west`).
        allowed: String,
    },
}

impl Unroutable {
    /// The `ferry-error` reason of a proxy's 503.
    pub fn reason(&self) -> &'static str {
        match self {
            Unroutable::NoAllowedEndpoint { .. } => "no_allowed_endpoint",
        }
    }
}

/// Groups the hops of `plan` for one call under `policy` (`None`: the default policy).
pub fn decide(
    plan: &Plan,
    policy: Option<&TrafficPolicy>,
    call: &CallFacts<'_>,
) -> Result<Decision, Unroutable> {
    if plan.endpoint.is_some() {
        return Ok(Decision {
            groups: vec![plan.hops.clone()],
            reason: Reason::Endpoint,
        });
    }
    let by_cluster = || group_by_cluster(plan, call.local);
    let nowhere = |allowed: String| Unroutable::NoAllowedEndpoint {
        service: plan.service.clone(),
        allowed,
    };
    let Some(policy) = policy else {
        return Ok(failover(plan, call));
    };
    for (i, route) in policy.routes.iter().enumerate() {
        let matched = call
            .headers
            .iter()
            .any(|(name, value)| *name == route.header && *value == route.value);
        if matched {
            // A canary call goes where its route says or nowhere: it must not quietly
            // test the stable version instead.
            return match by_cluster().remove(&route.cluster) {
                Some(hops) => Ok(Decision {
                    groups: vec![hops],
                    reason: Reason::Route(i),
                }),
                None => Err(nowhere(format!("route {route}"))),
            };
        }
    }
    match &policy.split {
        Split::Failover => Ok(failover(plan, call)),
        Split::LocalOnly => match by_cluster().remove(call.local) {
            Some(hops) => Ok(Decision {
                groups: vec![hops],
                reason: Reason::LocalOnly,
            }),
            None => Err(nowhere(policy.split.to_string())),
        },
        Split::Pinned(cluster) => match by_cluster().remove(cluster) {
            Some(hops) => Ok(Decision {
                groups: vec![hops],
                reason: Reason::Pinned,
            }),
            None => Err(nowhere(policy.split.to_string())),
        },
        Split::Weights(weights) => {
            weighted(by_cluster(), weights, call).ok_or_else(|| nowhere(policy.split.to_string()))
        }
    }
}

/// The plan's hops by cluster (local endpoints under this cluster's name), in plan order.
fn group_by_cluster(plan: &Plan, local: &ClusterId) -> BTreeMap<ClusterId, Vec<Hop>> {
    let mut by_cluster: BTreeMap<ClusterId, Vec<Hop>> = BTreeMap::new();
    for hop in &plan.hops {
        by_cluster
            .entry(cluster_of(hop, local).clone())
            .or_default()
            .push(hop.clone());
    }
    by_cluster
}

/// The cluster a hop is in (a local endpoint is in this one).
fn cluster_of<'a>(hop: &'a Hop, local: &'a ClusterId) -> &'a ClusterId {
    match hop {
        Hop::Local(_) => local,
        Hop::Remote { cluster, .. } => cluster,
    }
}

/// Clusters nearest first: this one, then by measured round trip, unmeasured last, ties
/// by name.
fn nearest_first<'a>(
    clusters: impl Iterator<Item = &'a ClusterId>,
    call: &CallFacts<'_>,
) -> Vec<ClusterId> {
    let mut clusters: Vec<&ClusterId> = clusters.collect();
    clusters.sort_by_key(|c| {
        let rank = match (*c == call.local, call.rtt.get(*c)) {
            (true, _) => (0, Duration::ZERO),
            (false, Some(rtt)) => (1, *rtt),
            (false, None) => (2, Duration::ZERO),
        };
        (rank, (*c).clone())
    });
    clusters.into_iter().cloned().collect()
}

fn failover(plan: &Plan, call: &CallFacts<'_>) -> Decision {
    // Every hop in one cluster (local endpoints only, or one exporting peer: most calls):
    // one group, in plan order, with nothing to sort.
    let one_cluster = plan.hops.first().is_some_and(|first| {
        let first = cluster_of(first, call.local);
        plan.hops
            .iter()
            .all(|hop| cluster_of(hop, call.local) == first)
    });
    if one_cluster {
        return Decision {
            groups: vec![plan.hops.clone()],
            reason: Reason::Failover,
        };
    }
    let mut by_cluster = group_by_cluster(plan, call.local);
    let order = nearest_first(by_cluster.keys(), call);
    Decision {
        groups: order.iter().filter_map(|c| by_cluster.remove(c)).collect(),
        reason: Reason::Failover,
    }
}

/// One weighted cluster drawn by `call.roll` among those with hops and a weight above 0,
/// then the other weighted clusters nearest first; `None` when no weighted cluster has hops.
fn weighted(
    mut by_cluster: BTreeMap<ClusterId, Vec<Hop>>,
    weights: &BTreeMap<ClusterId, u32>,
    call: &CallFacts<'_>,
) -> Option<Decision> {
    by_cluster.retain(|c, _| weights.contains_key(c));
    let live: Vec<(&ClusterId, u32)> = weights
        .iter()
        .filter(|(c, w)| **w > 0 && by_cluster.contains_key(*c))
        .map(|(c, w)| (c, *w))
        .collect();
    let total: u64 = live.iter().map(|(_, w)| u64::from(*w)).sum();
    let mut groups = Vec::with_capacity(by_cluster.len());
    if total > 0 {
        let mut point = u64::from(call.roll) % total;
        let (drawn, _) = live
            .iter()
            .find(|(_, w)| {
                let inside = point < u64::from(*w);
                point = point.saturating_sub(u64::from(*w));
                inside
            })
            .copied()?;
        let drawn = drawn.clone();
        groups.extend(by_cluster.remove(&drawn));
    }
    let rest = nearest_first(by_cluster.keys(), call);
    groups.extend(rest.iter().filter_map(|c| by_cluster.remove(c)));
    (!groups.is_empty()).then_some(Decision {
        groups,
        reason: Reason::Weighted,
    })
}
