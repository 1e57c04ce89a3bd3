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

use crate::model::{
    ClusterId, EndpointAddr, Label, PortName, ServiceName, ServicePort, ServiceSpec, TrustDomain,
};
use crate::wire::{ExportedEndpoint, ExportedService};

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
}

/// One service: its VIP and ports, its local endpoints and which peers export it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ServiceRecord {
    /// The service.
    pub name: ServiceName,
    /// Its mesh VIP in this cluster.
    pub vip: IpAddr,
    /// Its ports (the local spec's when it is local, else the union of the peers').
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
}

impl MeshSnapshot {
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
                }
            })
            .collect()
    }
}

/// A local service as the control plane knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalService {
    /// Its spec.
    pub spec: ServiceSpec,
    /// Whether it is exported to linked peers.
    pub exported: bool,
    /// Health per entry of `spec.endpoints`; a missing entry counts as unhealthy.
    pub health: Vec<bool>,
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
/// Imports from peers without a link (and from this cluster itself) are dropped. An
/// import-only service's ports are the union by port name of its exporters' ports (the first
/// exporter in cluster order wins a name; a port whose number is already taken is left out).
/// A service with no VIP in `vips` is skipped: the control plane allocates VIPs first.
///
/// A local service is headless if its spec says so; an import-only one if any linked exporter
/// says so. A headless service lists the endpoints [`endpoint_keys`] names that have a VIP in
/// `endpoint_vips`.
pub fn build_snapshot(version: u64, inputs: &SnapshotInputs<'_>) -> MeshSnapshot {
    let linked = linked_peers(inputs.cluster, inputs.links);
    let mut records: BTreeMap<ServiceName, ServiceRecord> = BTreeMap::new();

    for svc in inputs.local {
        let name = &svc.spec.name;
        let Some(vip) = inputs.vips.get(name) else {
            continue;
        };
        if records.contains_key(name) {
            continue; // the first definition of a name wins
        }
        let local = svc
            .spec
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, addr)| EndpointState {
                addr: addr.clone(),
                healthy: svc.health.get(i).copied().unwrap_or(false),
            })
            .collect();
        records.insert(
            name.clone(),
            ServiceRecord {
                name: name.clone(),
                vip: *vip,
                ports: svc.spec.ports.clone(),
                exported: svc.exported,
                local,
                remote: Vec::new(),
                headless: svc.spec.headless,
                endpoints: Vec::new(),
            },
        );
    }

    // BTreeMap iteration gives cluster order, so `remote` ends up sorted by cluster.
    for (peer, export) in linked_imports(inputs.imports, &linked) {
        let Some(vip) = inputs.vips.get(&export.name) else {
            continue;
        };
        let record = records
            .entry(export.name.clone())
            .or_insert_with(|| ServiceRecord {
                name: export.name.clone(),
                vip: *vip,
                ports: Vec::new(),
                exported: false,
                local: Vec::new(),
                remote: Vec::new(),
                headless: false,
                endpoints: Vec::new(),
            });
        if !is_local(inputs.local, &export.name) {
            for port in &export.ports {
                let clash = record
                    .ports
                    .iter()
                    .any(|p| p.name == port.name || p.port == port.port);
                if !clash {
                    record.ports.push(port.clone());
                }
            }
            record.headless |= export.headless;
        }
        record.remote.push(RemoteState {
            cluster: peer.clone(),
            healthy: export.healthy.clone(),
        });
    }

    // Key order is (service, cluster, hostname), so each list ends up sorted.
    let endpoints = headless_endpoints(inputs.cluster, inputs.local, inputs.imports, &linked);
    for (key, healthy) in endpoints {
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
    }
}

/// The endpoints of headless services a snapshot built from these inputs shows, once each
/// has a VIP: every endpoint of a local headless service (keyed by this `cluster`), and every
/// endpoint a linked peer exports for a headless service that is not a non-headless local
/// one. The control plane allocates a VIP for each key before [`build_snapshot`].
pub fn endpoint_keys(
    cluster: &ClusterId,
    local: &[LocalService],
    imports: &BTreeMap<ClusterId, Vec<ExportedService>>,
    links: &[LinkRecord],
) -> BTreeSet<EndpointKey> {
    let linked = linked_peers(cluster, links);
    headless_endpoints(cluster, local, imports, &linked)
        .into_keys()
        .collect()
}

/// Every endpoint of a headless service with its health, as [`endpoint_keys`] describes.
fn headless_endpoints(
    cluster: &ClusterId,
    local: &[LocalService],
    imports: &BTreeMap<ClusterId, Vec<ExportedService>>,
    linked: &BTreeSet<&ClusterId>,
) -> BTreeMap<EndpointKey, bool> {
    let mut out = BTreeMap::new();
    let mut local_headless: BTreeMap<&ServiceName, bool> = BTreeMap::new();
    for svc in local {
        if local_headless.contains_key(&svc.spec.name) {
            continue; // the first definition of a name wins
        }
        local_headless.insert(&svc.spec.name, svc.spec.headless);
        if !svc.spec.headless {
            continue;
        }
        for (i, addr) in svc.spec.endpoints.iter().enumerate() {
            let key = (
                svc.spec.name.clone(),
                cluster.clone(),
                addr.hostname_or_default(),
            );
            out.entry(key)
                .or_insert_with(|| svc.health.get(i).copied().unwrap_or(false));
        }
    }
    for (peer, export) in linked_imports(imports, linked) {
        if !export.headless || local_headless.get(&export.name) == Some(&false) {
            continue;
        }
        for e in &export.endpoints {
            let key = (export.name.clone(), peer.clone(), e.hostname.clone());
            out.entry(key).or_insert(e.healthy);
        }
    }
    out
}

/// The peers imports are taken from: linked, and not this cluster.
fn linked_peers<'a>(cluster: &ClusterId, links: &'a [LinkRecord]) -> BTreeSet<&'a ClusterId> {
    links
        .iter()
        .map(|l| &l.peer)
        .filter(|p| *p != cluster)
        .collect()
}

/// Each linked peer's exports in cluster order, the first export of a name per peer only.
fn linked_imports<'a>(
    imports: &'a BTreeMap<ClusterId, Vec<ExportedService>>,
    linked: &'a BTreeSet<&ClusterId>,
) -> impl Iterator<Item = (&'a ClusterId, &'a ExportedService)> + 'a {
    imports
        .iter()
        .filter(|(peer, _)| linked.contains(peer))
        .flat_map(|(peer, services)| {
            let mut seen = BTreeSet::new();
            services
                .iter()
                .filter(move |s| seen.insert(&s.name))
                .map(move |s| (peer, s))
        })
}

fn is_local(local: &[LocalService], name: &ServiceName) -> bool {
    local.iter().any(|s| &s.spec.name == name)
}

#[cfg(test)]
mod tests;
