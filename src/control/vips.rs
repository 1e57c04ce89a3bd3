//! VIP allocation: one stable VIP per service and one per endpoint of a headless service,
//! all from `control.vip_range`, all persisted in the store.
//!
//! Addresses are promises: a client may hold a VIP (from DNS, in a connection pool) long
//! after the name behind it went away. So a VIP whose name is no longer wanted is not freed
//! at once: it is *quarantined* for `federation.vip_quarantine` (default 10 minutes, longer
//! than any DNS TTL Ferry hands out and than common client caches). During quarantine it is
//! never given to another name; if its own name comes back, it gets the same VIP. Only
//! after the quarantine does the address return to the pool.
//!
//! [`plan`] is the pure rule, over a copy of the table; the store applies its writes in one
//! transaction per republish. This module must not decide routing or visibility: which
//! names exist comes from `ferry_federation::resolve` and `endpoint_keys`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ferry_federation::{EndpointKey, ServiceName};
use serde::{Deserialize, Serialize};

use crate::config::VipRange;

/// One row of the VIP table: the address, and since when it is quarantined (unix seconds),
/// if its name is gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VipEntry {
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_at: Option<u64>,
}

/// What one republish does to the table.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct VipPlan {
    /// The VIP of every wanted key that has one.
    pub assigned: BTreeMap<String, IpAddr>,
    /// Rows to write (`None`: delete).
    pub writes: BTreeMap<String, Option<VipEntry>>,
    /// Wanted keys left without a VIP: the range is full.
    pub exhausted: Vec<String>,
}

/// Decides every wanted key's VIP at `now` (unix seconds): keeps the ones it has (ending their
/// quarantine if they were released), quarantines rows whose key is no longer wanted, frees
/// rows whose quarantine is over, and gives new keys the lowest addresses no row holds.
pub fn plan(
    table: &BTreeMap<String, VipEntry>,
    wanted: &BTreeSet<String>,
    now: u64,
    quarantine_secs: u64,
    range: VipRange,
) -> VipPlan {
    let mut out = VipPlan::default();
    let mut held: BTreeSet<IpAddr> = BTreeSet::new();
    for (key, entry) in table {
        if wanted.contains(key) {
            if range.contains(entry.ip) && !held.contains(&entry.ip) {
                held.insert(entry.ip);
                out.assigned.insert(key.clone(), entry.ip);
                if entry.released_at.is_some() {
                    out.writes.insert(
                        key.clone(),
                        Some(VipEntry {
                            ip: entry.ip,
                            released_at: None,
                        }),
                    );
                }
            }
            // Out of the range (the range changed) or a duplicate row: allocated anew below;
            // the old row is overwritten then.
            continue;
        }
        match entry.released_at {
            None => {
                held.insert(entry.ip);
                out.writes.insert(
                    key.clone(),
                    Some(VipEntry {
                        ip: entry.ip,
                        released_at: Some(now),
                    }),
                );
            }
            Some(at) if now < at.saturating_add(quarantine_secs) => {
                held.insert(entry.ip);
            }
            Some(_) => {
                out.writes.insert(key.clone(), None);
            }
        }
    }
    let mut free = (0..range.size())
        .filter_map(|i| range.nth(i))
        .map(IpAddr::V4)
        .filter(|ip| !held.contains(ip));
    for key in wanted {
        if out.assigned.contains_key(key) {
            continue;
        }
        match free.next() {
            Some(ip) => {
                out.assigned.insert(key.clone(), ip);
                out.writes.insert(
                    key.clone(),
                    Some(VipEntry {
                        ip,
                        released_at: None,
                    }),
                );
            }
            None => out.exhausted.push(key.clone()),
        }
    }
    out
}

/// The table key of a service VIP: the service's name.
pub fn service_key(name: &ServiceName) -> String {
    name.to_string()
}

/// The table key of an endpoint: `<service>/<cluster>/<hostname>`. It never parses as a
/// service name, so endpoint and service VIPs share one table (and so one address pool)
/// without being mistaken for each other.
pub fn endpoint_key((service, cluster, hostname): &EndpointKey) -> String {
    format!("{service}/{cluster}/{hostname}")
}

/// The endpoint a table key names, if it is an endpoint key.
pub fn parse_endpoint_key(s: &str) -> Option<EndpointKey> {
    let mut parts = s.split('/');
    let key = (
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
        parts.next()?.parse().ok()?,
    );
    parts.next().is_none().then_some(key)
}

/// Splits assigned VIPs into service VIPs and endpoint VIPs.
pub fn split(
    assigned: &BTreeMap<String, IpAddr>,
) -> (BTreeMap<ServiceName, IpAddr>, BTreeMap<EndpointKey, IpAddr>) {
    let mut services = BTreeMap::new();
    let mut endpoints = BTreeMap::new();
    for (key, ip) in assigned {
        if let Some(ek) = parse_endpoint_key(key) {
            endpoints.insert(ek, *ip);
        } else if let Ok(name) = key.parse() {
            services.insert(name, *ip);
        }
    }
    (services, endpoints)
}

#[cfg(test)]
mod tests;
