//! The mesh snapshot: everything a gateway, node proxy or DNS server needs to decide, in one
//! immutable value the control plane publishes.
//!
//! [`build_snapshot`] merges local services, imports from linked peers, links, gateways and
//! VIPs into a [`MeshSnapshot`]; [`endpoint_keys`] says which endpoints of headless services
//! need a VIP. This module must not allocate VIPs, talk to peers or keep state between
//! builds: every input is passed in and the output is a plain value.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::limits::LimitExceeded;
use crate::model::{
    ClusterId, EndpointAddr, Label, LocalService, PortName, ServiceName, ServicePort, TrustDomain,
};
use crate::model::{ExportedEndpoint, ExportedService, TrafficPolicy};
use crate::resolve::{resolve, Conflict, Resolved};

/// Names one endpoint of a headless service in the mesh: service, cluster, hostname.
pub type EndpointKey = (ServiceName, ClusterId, Label);

/// The state of the mesh as seen from one cluster, at one version.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MeshSnapshot {
    /// Increases with every publication.
    pub version: u64,
    /// This cluster.
    pub cluster: ClusterId,
    /// This mesh's trust domain.
    pub trust_domain: TrustDomain,
    /// Every known service, sorted by name.
    pub services: Vec<ServiceRecord>,
    /// Every configured link, sorted by peer.
    pub links: Vec<LinkRecord>,
    /// This cluster's live gateways.
    pub gateways: Vec<SocketAddr>,
    /// The traffic policies set in this cluster, sorted by service; a service without one
    /// follows the default (failover).
    #[serde(default)]
    pub policies: Vec<TrafficPolicy>,
}

/// One service: its VIP and ports, its local endpoints and which peers export it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    /// The service.
    pub name: ServiceName,
    /// Its mesh VIP in this cluster.
    pub vip: IpAddr,
    /// Its ports (the local spec's when it is local, else the defining export's and the
    /// agreeing exports' that clash with none of them).
    pub ports: Vec<ServicePort>,
    /// Whether this cluster exports its local endpoints to peers.
    pub exported: bool,
    /// Local endpoints; empty when the service is only imported.
    pub local: Vec<EndpointState>,
    /// One entry per peer cluster exporting it, sorted by cluster.
    pub remote: Vec<RemoteState>,
    /// Whether the service is headless: each endpoint has its own VIP (in `endpoints`).
    #[serde(default)]
    pub headless: bool,
    /// For a headless service: its local endpoints and every linked peer's exported ones,
    /// each with its own VIP, sorted by (cluster, hostname). Empty otherwise.
    #[serde(default)]
    pub endpoints: Vec<EndpointRecord>,
    /// When this cluster exported it (unix milliseconds; 0 when not exported here).
    #[serde(default)]
    pub exported_at_ms: u64,
    /// Linked peers whose exports of this name conflict with its definition and were not
    /// merged, sorted by cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

/// One endpoint of a headless service, anywhere in the mesh, with its own VIP here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// The cluster it runs in (this cluster for local endpoints).
    pub cluster: ClusterId,
    /// Its hostname (given, or derived from its IP), unique within (service, cluster).
    pub hostname: Label,
    /// Its VIP in this cluster.
    pub vip: IpAddr,
    /// Whether traffic may go to it.
    pub healthy: bool,
}

/// A local endpoint and whether it passes health checks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EndpointState {
    /// Where it listens.
    pub addr: EndpointAddr,
    /// Whether traffic may go to it.
    pub healthy: bool,
}

/// A peer cluster's export of a service: healthy endpoint counts per port name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RemoteState {
    /// The exporting cluster.
    pub cluster: ClusterId,
    /// Healthy endpoints per port name.
    pub healthy: BTreeMap<PortName, u32>,
}

/// A configured link to a peer cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    /// The peer.
    pub peer: ClusterId,
    /// The peer's gateways.
    pub gateways: Vec<SocketAddr>,
    /// Whether a link connection is up right now.
    pub connected: bool,
    /// When the link was made (unix seconds): no export from the peer counts as older.
    #[serde(default)]
    pub created_at_unix: u64,
    /// The bounds the peer's last messages went over (empty when within every bound).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limited: Vec<LimitExceeded>,
}

impl MeshSnapshot {
    /// The traffic policy set for `name`, if any.
    pub fn policy(&self, name: &ServiceName) -> Option<&TrafficPolicy> {
        self.policies
            .binary_search_by(|p| p.service.cmp(name))
            .ok()
            .map(|i| &self.policies[i])
    }

    /// The service called `name`.
    pub fn service(&self, name: &ServiceName) -> Option<&ServiceRecord> {
        self.services
            .binary_search_by(|s| s.name.cmp(name))
            .ok()
            .map(|i| &self.services[i])
    }

    /// The service whose VIP is `vip`.
    pub fn by_vip(&self, vip: IpAddr) -> Option<&ServiceRecord> {
        self.services.iter().find(|s| s.vip == vip)
    }

    /// The headless service and endpoint whose endpoint VIP is `vip`.
    pub fn by_endpoint_vip(&self, vip: IpAddr) -> Option<(&ServiceRecord, &EndpointRecord)> {
        self.services
            .iter()
            .filter(|s| s.headless)
            .find_map(|s| s.endpoints.iter().find(|e| e.vip == vip).map(|e| (s, e)))
    }

    /// The link to `peer`.
    pub fn link(&self, peer: &ClusterId) -> Option<&LinkRecord> {
        self.links.iter().find(|l| &l.peer == peer)
    }

    /// The exports this cluster sends to peers: exported local services with their healthy
    /// endpoint count per port (every endpoint serves every port), and for headless services
    /// every local endpoint's hostname and health, sorted by hostname.
    pub fn local_exports(&self) -> Vec<ExportedService> {
        self.services
            .iter()
            .filter(|s| s.exported)
            .map(|s| {
                let healthy = s.local.iter().filter(|e| e.healthy).count() as u32;
                let mut endpoints: Vec<ExportedEndpoint> = if s.headless {
                    s.local
                        .iter()
                        .map(|e| ExportedEndpoint {
                            hostname: e.addr.hostname_or_default(),
                            healthy: e.healthy,
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                endpoints.sort();
                ExportedService {
                    name: s.name.clone(),
                    ports: s.ports.clone(),
                    healthy: s.ports.iter().map(|p| (p.name.clone(), healthy)).collect(),
                    headless: s.headless,
                    endpoints,
                    exported_at_ms: s.exported_at_ms,
                }
            })
            .collect()
    }
}

/// Everything [`build_snapshot`] merges.
#[derive(Clone, Copy, Debug)]
pub struct SnapshotInputs<'a> {
    /// This cluster.
    pub cluster: &'a ClusterId,
    /// The mesh trust domain.
    pub trust_domain: &'a TrustDomain,
    /// Local services.
    pub local: &'a [LocalService],
    /// Imports per peer (only peers present in `links` are used).
    pub imports: &'a BTreeMap<ClusterId, Vec<ExportedService>>,
    /// Configured links.
    pub links: &'a [LinkRecord],
    /// This cluster's live gateways.
    pub gateways: &'a [SocketAddr],
    /// VIPs allocated so far; services without one are left out.
    pub vips: &'a BTreeMap<ServiceName, IpAddr>,
    /// Endpoint VIPs allocated so far (see [`endpoint_keys`]); endpoints without one are
    /// left out of [`ServiceRecord::endpoints`].
    pub endpoint_vips: &'a BTreeMap<EndpointKey, IpAddr>,
}

/// Merges local services and imports from linked peers into a snapshot.
///
/// Imports from peers without a link (and from this cluster itself) are dropped. Who defines
/// a name (its ports, whether it is headless) and whose exports join it follows
/// [`crate::resolve::resolve`]: the local definition first, else the oldest export; exports
/// that conflict are listed in [`ServiceRecord::conflicts`] and contribute nothing else.
/// A service with no VIP in `vips` is skipped: the control plane allocates VIPs first.
///
/// A headless service lists the endpoints [`endpoint_keys`] names that have a VIP in
/// `endpoint_vips`.
pub fn build_snapshot(version: u64, inputs: &SnapshotInputs<'_>) -> MeshSnapshot {
    let linked = linked_peers(inputs.cluster, inputs.links);
    let resolved = resolve(inputs.local, inputs.imports, &linked);
    build_snapshot_resolved(version, inputs, &resolved)
}

/// [`build_snapshot`] for a caller that already resolved the inputs (the control plane
/// resolves once per republish, for VIP allocation and the snapshot alike). `resolved` must
/// be `resolve` of these same inputs.
pub fn build_snapshot_resolved(
    version: u64,
    inputs: &SnapshotInputs<'_>,
    resolved: &BTreeMap<&ServiceName, Resolved<'_>>,
) -> MeshSnapshot {
    let mut records: BTreeMap<ServiceName, ServiceRecord> = BTreeMap::new();
    for (name, r) in resolved {
        let Some(vip) = inputs.vips.get(*name) else {
            continue;
        };
        let local = r.local();
        let endpoints = local
            .map(|svc| {
                svc.spec
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, addr)| EndpointState {
                        addr: addr.clone(),
                        healthy: svc.health.get(i).copied().unwrap_or(false),
                    })
                    .collect()
            })
            .unwrap_or_default();
        records.insert(
            (*name).clone(),
            ServiceRecord {
                name: (*name).clone(),
                vip: *vip,
                ports: r.ports.clone(),
                exported: local.is_some_and(|s| s.exported),
                exported_at_ms: local.filter(|s| s.exported).map_or(0, |s| s.exported_at_ms),
                local: endpoints,
                remote: r
                    .members
                    .iter()
                    .map(|(peer, export)| RemoteState {
                        cluster: (*peer).clone(),
                        healthy: export.healthy.clone(),
                    })
                    .collect(),
                headless: r.headless,
                endpoints: Vec::new(),
                conflicts: r.conflicts.clone(),
            },
        );
    }

    // Key order is (service, cluster, hostname), so each list ends up sorted.
    for (key, healthy) in headless_endpoints(inputs.cluster, resolved) {
        let Some(vip) = inputs.endpoint_vips.get(&key) else {
            continue;
        };
        let (service, cluster, hostname) = key;
        if let Some(record) = records.get_mut(&service).filter(|r| r.headless) {
            record.endpoints.push(EndpointRecord {
                cluster,
                hostname,
                vip: *vip,
                healthy,
            });
        }
    }

    let mut links = inputs.links.to_vec();
    links.sort_by(|a, b| a.peer.cmp(&b.peer));
    MeshSnapshot {
        version,
        cluster: inputs.cluster.clone(),
        trust_domain: inputs.trust_domain.clone(),
        services: records.into_values().collect(),
        links,
        gateways: inputs.gateways.to_vec(),
        policies: Vec::new(),
    }
}

/// The endpoints of headless services a snapshot built from these inputs shows, once each
/// has a VIP: every endpoint of a local headless service (keyed by this `cluster`), and every
/// endpoint of a headless service exported by a linked peer whose export agrees with the
/// service's definition. The control plane allocates a VIP for each key before
/// [`build_snapshot`].
pub fn endpoint_keys(
    cluster: &ClusterId,
    local: &[LocalService],
    imports: &BTreeMap<ClusterId, Vec<ExportedService>>,
    links: &[LinkRecord],
) -> BTreeSet<EndpointKey> {
    let linked = linked_peers(cluster, links);
    let resolved = resolve(local, imports, &linked);
    resolved_endpoint_keys(cluster, &resolved)
}

/// [`endpoint_keys`] of inputs already resolved.
pub fn resolved_endpoint_keys(
    cluster: &ClusterId,
    resolved: &BTreeMap<&ServiceName, Resolved<'_>>,
) -> BTreeSet<EndpointKey> {
    headless_endpoints(cluster, resolved).into_keys().collect()
}

/// Linked peers (never this cluster) with when each link was made.
pub fn linked_peers<'a>(
    cluster: &ClusterId,
    links: &'a [LinkRecord],
) -> BTreeMap<&'a ClusterId, u64> {
    links
        .iter()
        .filter(|l| &l.peer != cluster)
        .map(|l| (&l.peer, l.created_at_unix))
        .collect()
}

/// Every endpoint of a headless service with its health, as [`endpoint_keys`] describes.
fn headless_endpoints(
    cluster: &ClusterId,
    resolved: &BTreeMap<&ServiceName, Resolved<'_>>,
) -> BTreeMap<EndpointKey, bool> {
    let mut out = BTreeMap::new();
    for (name, r) in resolved.iter().filter(|(_, r)| r.headless) {
        if let Some(svc) = r.local() {
            for (i, addr) in svc.spec.endpoints.iter().enumerate() {
                let key = ((*name).clone(), cluster.clone(), addr.hostname_or_default());
                out.entry(key)
                    .or_insert_with(|| svc.health.get(i).copied().unwrap_or(false));
            }
        }
        for (peer, export) in &r.members {
            for e in &export.endpoints {
                let key = ((*name).clone(), (*peer).clone(), e.hostname.clone());
                out.entry(key).or_insert(e.healthy);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
