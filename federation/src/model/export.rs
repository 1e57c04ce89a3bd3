//! What a cluster exports to its linked peers: one record per exported service.
//!
//! These are domain values: [`crate::wire`] encodes them on the link, the import store keeps
//! them, the snapshot resolves them. This module must not trust them: a peer sends them, and
//! [`crate::limits`] bounds them before anything else reads them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Label, PortName, ServiceName, ServicePort};

/// One service a cluster exports to a peer, with its healthy endpoint count per port.
///
/// `headless` and `endpoints` are newer than the rest: they are left out when unused and
/// default when absent, so peers that predate them keep decoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExportedService {
    /// The service.
    pub name: ServiceName,
    /// Its ports.
    pub ports: Vec<ServicePort>,
    /// Healthy endpoints per port name.
    pub healthy: BTreeMap<PortName, u32>,
    /// Whether the service is headless (each endpoint has its own name and VIP).
    #[serde(default, skip_serializing_if = "is_false")]
    pub headless: bool,
    /// The endpoints of a headless service by hostname, sorted; empty otherwise. No
    /// addresses cross the link: a caller names the endpoint and the gateway resolves it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<ExportedEndpoint>,
    /// When the exporting cluster exported the service, in unix milliseconds (0 from peers
    /// that predate the field). The oldest export defines a service when exports conflict; an
    /// importer never takes it as older than its link to the exporter.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub exported_at_ms: u64,
}

/// One endpoint of an exported headless service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExportedEndpoint {
    /// The endpoint's hostname (given, or derived from its IP).
    pub hostname: Label,
    /// Whether it passes health checks.
    pub healthy: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}
