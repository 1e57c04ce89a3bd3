//! The node proxy's routing decision: for a connection to a service VIP and port, which hops
//! to try, in order.
//!
//! [`plan`] is a pure function of the snapshot; it decides before anything connects. It must
//! not dial, resolve names or remember earlier choices: spreading load comes from the caller's
//! `pick`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::model::{ClusterId, PortName, ServiceName, ServicePort};
use crate::policy::rotate;
use crate::snapshot::MeshSnapshot;

/// Where a client connection was headed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The service VIP.
    pub vip: IpAddr,
    /// The port dialled on the VIP.
    pub port: u16,
}

/// One way to reach the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hop {
    /// A healthy local endpoint, dialled directly.
    Local(SocketAddr),
    /// A peer cluster, reached through one of its gateways (try them in order).
    Remote {
        /// The peer.
        cluster: ClusterId,
        /// The port name to put in the tunnel header.
        port: PortName,
        /// The peer's gateways.
        gateways: Vec<SocketAddr>,
    },
}

/// The hops to try for one connection, best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The service behind the VIP.
    pub service: ServiceName,
    /// The port dialled.
    pub port: ServicePort,
    /// Hops in the order to try them; never empty.
    pub hops: Vec<Hop>,
}

/// Why there is no route.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoRoute {
    /// No service has this VIP.
    #[error("no mesh service has VIP {0}; check the name resolved to a current VIP")]
    UnknownVip(IpAddr),
    /// The service has no such port.
    #[error("service {service} has no port {port}; use one of the ports the service declares")]
    UnknownPort {
        /// The service.
        service: ServiceName,
        /// The port dialled.
        port: u16,
    },
    /// Neither local endpoints nor any reachable peer are healthy.
    #[error("service {0} has no healthy endpoints here or in any reachable linked cluster")]
    NoHealthyEndpoints(ServiceName),
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Local(addr) => write!(f, "local {addr}"),
            Hop::Remote { cluster, port, .. } => write!(f, "cluster {cluster} port {port}"),
        }
    }
}

/// Plans a connection to `target`: healthy local endpoints first (rotated by `pick`), then
/// peer clusters with healthy endpoints for the port's name and at least one gateway (rotated
/// by `pick`, each gateway list rotated by `pick` too). Unhealthy endpoints are never tried.
pub fn plan(snapshot: &MeshSnapshot, target: &Target, pick: u64) -> Result<Plan, NoRoute> {
    let service = snapshot
        .by_vip(target.vip)
        .ok_or(NoRoute::UnknownVip(target.vip))?;
    let port = service
        .ports
        .iter()
        .find(|p| p.port == target.port)
        .ok_or_else(|| NoRoute::UnknownPort {
            service: service.name.clone(),
            port: target.port,
        })?;

    let mut local: Vec<Hop> = service
        .local
        .iter()
        .filter(|e| e.healthy)
        .map(|e| Hop::Local(e.addr.target(port)))
        .collect();
    rotate(&mut local, pick);

    let mut remote: Vec<Hop> = service
        .remote
        .iter()
        .filter(|r| r.cluster != snapshot.cluster)
        .filter(|r| r.healthy.get(&port.name).copied().unwrap_or(0) > 0)
        .filter_map(|r| {
            let link = snapshot.link(&r.cluster)?;
            if link.gateways.is_empty() {
                return None;
            }
            let mut gateways = link.gateways.clone();
            rotate(&mut gateways, pick);
            Some(Hop::Remote {
                cluster: r.cluster.clone(),
                port: port.name.clone(),
                gateways,
            })
        })
        .collect();
    rotate(&mut remote, pick);

    local.append(&mut remote);
    if local.is_empty() {
        return Err(NoRoute::NoHealthyEndpoints(service.name.clone()));
    }
    Ok(Plan {
        service: service.name.clone(),
        port: port.clone(),
        hops: local,
    })
}

#[cfg(test)]
mod tests;
