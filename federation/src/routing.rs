//! The node proxy's routing decision: for a connection to a service VIP (or the VIP of one
//! endpoint of a headless service) and port, which hops to try, in order.
//!
//! [`plan`] is a pure function of the snapshot; it decides before anything connects. It must
//! not dial, resolve names or remember earlier choices: spreading load comes from the caller's
//! `pick`.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::model::{ClusterId, Label, PortName, ServiceName, ServicePort};
use crate::policy::rotate;
use crate::snapshot::{EndpointRecord, MeshSnapshot, ServiceRecord};

/// Where a client connection was headed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// The service VIP or an endpoint VIP.
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
        /// The one endpoint (of a headless service) to reach, for a connection to an
        /// endpoint VIP; `None` lets the peer pick.
        endpoint: Option<Label>,
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
    /// For a connection to an endpoint VIP, the one endpoint it reaches (its only hop):
    /// no traffic policy moves it elsewhere.
    pub endpoint: Option<Label>,
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
    /// The endpoint behind an endpoint VIP is unhealthy, or its cluster has no gateway.
    #[error(
        "endpoint {hostname} of service {service} in cluster {cluster} is not healthy or not \
         reachable; use the service's own name to reach any healthy endpoint"
    )]
    EndpointUnavailable {
        /// The service.
        service: ServiceName,
        /// The endpoint's cluster.
        cluster: ClusterId,
        /// The endpoint's hostname.
        hostname: Label,
    },
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hop::Local(addr) => write!(f, "local {addr}"),
            Hop::Remote {
                cluster,
                port,
                endpoint: None,
                ..
            } => write!(f, "cluster {cluster} port {port}"),
            Hop::Remote {
                cluster,
                port,
                endpoint: Some(e),
                ..
            } => write!(f, "cluster {cluster} endpoint {e} port {port}"),
        }
    }
}

/// Plans a connection to `target`: healthy local endpoints first (rotated by `pick`), then
/// peer clusters with healthy endpoints for the port's name and at least one gateway (rotated
/// by `pick`, each gateway list rotated by `pick` too). Unhealthy endpoints are never tried.
///
/// A target on an endpoint VIP gets exactly one hop: the local endpoint, or its cluster's
/// gateways with the endpoint named; an unhealthy endpoint has no route.
pub fn plan(snapshot: &MeshSnapshot, target: &Target, pick: u64) -> Result<Plan, NoRoute> {
    let Some(service) = snapshot.by_vip(target.vip) else {
        return match snapshot.by_endpoint_vip(target.vip) {
            Some((service, endpoint)) => plan_endpoint(snapshot, service, endpoint, target, pick),
            None => Err(NoRoute::UnknownVip(target.vip)),
        };
    };
    let port = service_port(service, target)?;

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
                endpoint: None,
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
        endpoint: None,
    })
}

fn service_port<'a>(
    service: &'a ServiceRecord,
    target: &Target,
) -> Result<&'a ServicePort, NoRoute> {
    service
        .ports
        .iter()
        .find(|p| p.port == target.port)
        .ok_or_else(|| NoRoute::UnknownPort {
            service: service.name.clone(),
            port: target.port,
        })
}

/// The one hop to an endpoint of a headless service.
fn plan_endpoint(
    snapshot: &MeshSnapshot,
    service: &ServiceRecord,
    endpoint: &EndpointRecord,
    target: &Target,
    pick: u64,
) -> Result<Plan, NoRoute> {
    let port = service_port(service, target)?;
    let unavailable = || NoRoute::EndpointUnavailable {
        service: service.name.clone(),
        cluster: endpoint.cluster.clone(),
        hostname: endpoint.hostname.clone(),
    };
    if !endpoint.healthy {
        return Err(unavailable());
    }
    let hop = if endpoint.cluster == snapshot.cluster {
        let local = service
            .local
            .iter()
            .find(|e| e.addr.hostname_or_default() == endpoint.hostname)
            .filter(|e| e.healthy)
            .ok_or_else(unavailable)?;
        Hop::Local(local.addr.target(port))
    } else {
        let link = snapshot
            .link(&endpoint.cluster)
            .filter(|l| !l.gateways.is_empty())
            .ok_or_else(unavailable)?;
        let mut gateways = link.gateways.clone();
        rotate(&mut gateways, pick);
        Hop::Remote {
            cluster: endpoint.cluster.clone(),
            port: port.name.clone(),
            gateways,
            endpoint: Some(endpoint.hostname.clone()),
        }
    };
    Ok(Plan {
        service: service.name.clone(),
        port: port.clone(),
        hops: vec![hop],
        endpoint: Some(endpoint.hostname.clone()),
    })
}

#[cfg(test)]
mod tests;
