//! Gateway admission: may this peer's tunnel reach this service, and at which endpoints?
//!
//! [`admit`] is a pure function of the snapshot, the caller's verified identity and the tunnel
//! header. It must not do I/O or look at anything but its arguments, and its refusals must not
//! leak which services exist but are not exported.

use std::net::SocketAddr;

pub use crate::model::Refusal;
use crate::model::ServicePort;
use crate::snapshot::{MeshSnapshot, ServiceRecord};
use crate::spiffe::Identity;
use crate::wire::{TunnelHeader, MAX_HOPS};

/// Decides whether `caller` may open a tunnel described by `header`, returning the healthy
/// local endpoints for the port, rotated by `pick` so successive calls spread the load.
///
/// Checks, in order: the caller is a gateway or node of a linked peer (not this cluster, not a
/// CA), the header names this cluster if it names one, the hop count, the service exists and
/// is exported, the port exists, and at least one endpoint is healthy.
///
/// When the header names an endpoint, the answer is that one endpoint's address: the service
/// must be headless and have a local endpoint of that hostname (else `UnknownEndpoint`), and
/// it must be healthy (else `EndpointUnhealthy`).
pub fn admit(
    snapshot: &MeshSnapshot,
    caller: &Identity,
    header: &TunnelHeader,
    pick: u64,
) -> Result<Vec<SocketAddr>, Refusal> {
    let (service, port) = access(snapshot, caller, header)?;
    if let Some(hostname) = &header.endpoint {
        let endpoint = service
            .local
            .iter()
            .find(|e| &e.addr.hostname_or_default() == hostname)
            .ok_or(Refusal::UnknownEndpoint)?;
        if !endpoint.healthy {
            return Err(Refusal::EndpointUnhealthy);
        }
        return Ok(vec![endpoint.addr.target(port)]);
    }
    let mut addrs: Vec<SocketAddr> = service
        .local
        .iter()
        .filter(|e| e.healthy)
        .map(|e| e.addr.target(port))
        .collect();
    if addrs.is_empty() {
        return Err(Refusal::NoEndpoints);
    }
    rotate(&mut addrs, pick);
    Ok(addrs)
}

/// Whether a stream [`admit`] let in must now be cut: the caller's cluster is no longer
/// linked, or the service is no longer exported, or lost the port or the named endpoint.
/// Health is not checked: an endpoint that fails a probe keeps its open connections.
pub fn revoked(
    snapshot: &MeshSnapshot,
    caller: &Identity,
    header: &TunnelHeader,
) -> Option<Refusal> {
    let (service, _) = match access(snapshot, caller, header) {
        Ok(found) => found,
        Err(r) => return Some(r),
    };
    let hostname = header.endpoint.as_ref()?;
    let present = service
        .local
        .iter()
        .any(|e| &e.addr.hostname_or_default() == hostname);
    (!present).then_some(Refusal::UnknownEndpoint)
}

/// The checks every stream passes, in order: a linked peer's gateway or node, this cluster if
/// the header names one, the hop count, an exported service, the port, and a headless service
/// when an endpoint is named. Returns the service and the port.
fn access<'a>(
    snapshot: &'a MeshSnapshot,
    caller: &Identity,
    header: &TunnelHeader,
) -> Result<(&'a ServiceRecord, &'a ServicePort), Refusal> {
    let peer = match caller {
        Identity::Gateway { cluster } | Identity::Node { cluster, .. } => cluster,
        Identity::ClusterCa { .. } => return Err(Refusal::UnknownPeer),
    };
    if *peer == snapshot.cluster || snapshot.link(peer).is_none() {
        return Err(Refusal::UnknownPeer);
    }
    if header
        .cluster
        .as_ref()
        .is_some_and(|c| *c != snapshot.cluster)
    {
        return Err(Refusal::WrongCluster);
    }
    if header.hops > MAX_HOPS {
        return Err(Refusal::TooManyHops);
    }
    let service = snapshot
        .service(&header.service)
        .filter(|s| s.exported)
        .ok_or(Refusal::NotExported)?;
    let port = service
        .ports
        .iter()
        .find(|p| p.name == header.port)
        .ok_or(Refusal::UnknownPort)?;
    if header.endpoint.is_some() && !service.headless {
        return Err(Refusal::UnknownEndpoint);
    }
    Ok((service, port))
}

/// Rotates `items` left by `pick` modulo its length.
pub(crate) fn rotate<T>(items: &mut [T], pick: u64) {
    if !items.is_empty() {
        let n = (pick % items.len() as u64) as usize;
        items.rotate_left(n);
    }
}

#[cfg(test)]
mod tests;
