//! What a service name means in this cluster, when its local definition and its linked
//! peers' exports disagree: the MCS conflict rule (KEP-1645, "Constraints and Conflict
//! Resolution").
//!
//! The local definition wins over any import; among imports the oldest export defines the
//! service (its age is the exporter's `exported_at_ms`, never older than this cluster's link
//! to that exporter, ties broken by cluster name). An export that disagrees with the definition
//! (headless or not, a port's number or protocol) is not merged: its cluster is listed as
//! conflicting and none of its endpoints are used. So no peer can turn a service headless,
//! add endpoint names to a non-headless one, or move a port other clusters already use.
//!
//! This module must not allocate VIPs or look at health: it only decides who defines a name
//! and whose exports join it. [`crate::snapshot`] and the control plane's VIP allocation both
//! read its answer, so they can never disagree.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{ClusterId, ExportedService, LocalService, PortName, ServiceName, ServicePort};

/// Why a peer's export of a service was not merged into it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ConflictReason {
    /// The export says headless where the definition does not, or the other way round.
    Headless {
        /// What the conflicting export said.
        exported: bool,
    },
    /// A port of the export has the same name as a defined port but another number or
    /// protocol, or the same number under another name.
    Port {
        /// The export's port name.
        port: PortName,
    },
}

/// One peer whose export of a service conflicts with the service's definition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The exporting cluster.
    pub cluster: ClusterId,
    /// What disagreed (the first difference found).
    pub reason: ConflictReason,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            ConflictReason::Headless { exported: true } => {
                write!(f, "{} exports it as headless", self.cluster)
            }
            ConflictReason::Headless { exported: false } => {
                write!(f, "{} exports it as not headless", self.cluster)
            }
            ConflictReason::Port { port } => {
                write!(f, "{} exports port {port} differently", self.cluster)
            }
        }
    }
}

/// Where a service's definition comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DefinedBy<'a> {
    /// This cluster's own service.
    Local(&'a LocalService),
    /// The oldest agreeing export, from this peer.
    Peer(&'a ClusterId),
}

/// One service name as this cluster resolves it.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    /// Who defines it.
    pub defined_by: DefinedBy<'a>,
    /// Its ports: the local spec's, or for an import-only service the defining export's
    /// plus the agreeing exports' ports that clash with none of them, oldest first.
    pub ports: Vec<ServicePort>,
    /// Whether it is headless, as its definition says.
    pub headless: bool,
    /// The linked peers whose exports agree, sorted by cluster.
    pub members: Vec<(&'a ClusterId, &'a ExportedService)>,
    /// The linked peers whose exports conflict, sorted by cluster.
    pub conflicts: Vec<Conflict>,
}

impl Resolved<'_> {
    /// The local definition, if the service is this cluster's.
    pub fn local(&self) -> Option<&LocalService> {
        match self.defined_by {
            DefinedBy::Local(svc) => Some(svc),
            DefinedBy::Peer(_) => None,
        }
    }
}

/// Resolves every local service and every service a linked peer exports. `linked` maps each
/// linked peer (never this cluster) to when its link was made, in unix seconds. Imports from
/// peers not in `linked` are ignored; the first local definition of a name wins over later
/// ones; each peer's first export of a name is the one that counts.
pub fn resolve<'a>(
    local: &'a [LocalService],
    imports: &'a BTreeMap<ClusterId, Vec<ExportedService>>,
    linked: &BTreeMap<&ClusterId, u64>,
) -> BTreeMap<&'a ServiceName, Resolved<'a>> {
    let mut locals: BTreeMap<&ServiceName, &LocalService> = BTreeMap::new();
    for svc in local {
        locals.entry(&svc.spec.name).or_insert(svc);
    }
    // Per name, every linked peer's export with its age, to be sorted oldest first.
    let mut exports: BTreeMap<&ServiceName, Vec<(u64, &ClusterId, &ExportedService)>> =
        BTreeMap::new();
    for (peer, services) in imports {
        let Some(&linked_at) = linked.get(peer) else {
            continue;
        };
        let mut seen = std::collections::BTreeSet::new();
        for export in services.iter().filter(|s| seen.insert(&s.name)) {
            let age = export.exported_at_ms.max(linked_at.saturating_mul(1000));
            exports
                .entry(&export.name)
                .or_default()
                .push((age, peer, export));
        }
    }

    for candidates in exports.values_mut() {
        candidates.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
    }

    let mut out = BTreeMap::new();
    for (name, svc) in &locals {
        let candidates = exports.remove(name).unwrap_or_default();
        let def = Resolved {
            defined_by: DefinedBy::Local(svc),
            ports: svc.spec.ports.clone(),
            headless: svc.spec.headless,
            members: Vec::new(),
            conflicts: Vec::new(),
        };
        out.insert(*name, admit_exports(def, candidates, false));
    }
    for (name, candidates) in exports {
        let (_, first_peer, first) = candidates[0];
        let def = Resolved {
            defined_by: DefinedBy::Peer(first_peer),
            ports: Vec::new(),
            headless: first.headless,
            members: Vec::new(),
            conflicts: Vec::new(),
        };
        out.insert(name, admit_exports(def, candidates, true));
    }
    out
}

/// Merges the agreeing exports (`candidates`, oldest first) into `def` and lists the others
/// as conflicts.
fn admit_exports<'a>(
    mut def: Resolved<'a>,
    candidates: Vec<(u64, &'a ClusterId, &'a ExportedService)>,
    union_ports: bool,
) -> Resolved<'a> {
    for (_, peer, export) in candidates {
        match conflict(&def, export) {
            Some(reason) => def.conflicts.push(Conflict {
                cluster: peer.clone(),
                reason,
            }),
            None => {
                if union_ports {
                    for port in &export.ports {
                        if !def.ports.iter().any(|p| p.name == port.name) {
                            def.ports.push(port.clone());
                        }
                    }
                }
                def.members.push((peer, export));
            }
        }
    }
    def.members.sort_by(|a, b| a.0.cmp(b.0));
    def.conflicts.sort();
    def
}

/// The first way `export` disagrees with the definition so far, if any.
fn conflict(def: &Resolved<'_>, export: &ExportedService) -> Option<ConflictReason> {
    if export.headless != def.headless {
        return Some(ConflictReason::Headless {
            exported: export.headless,
        });
    }
    export
        .ports
        .iter()
        .find(|port| {
            def.ports.iter().any(|p| {
                let same_name = p.name == port.name;
                let same_number = p.port == port.port;
                same_name != same_number || (same_name && p.protocol != port.protocol)
            })
        })
        .map(|port| ConflictReason::Port {
            port: port.name.clone(),
        })
}

#[cfg(test)]
mod tests;
