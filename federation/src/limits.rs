//! Bounds on what one linked peer may make this cluster hold: services, ports, endpoints,
//! gateway addresses and message rate.
//!
//! A linked peer is untrusted input. Everything it sends passes through here before the
//! link state machine keeps it: what is over a bound is refused (never truncated into a
//! different meaning), and the refusal is reported as a [`LimitExceeded`] so the link can
//! show it and a counter can move. This module must not do I/O or read the clock.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::model::{ExportedService, ServiceName};

/// How much one peer may make us hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImportLimits {
    /// Imported services per link.
    pub services: usize,
    /// Ports per imported service.
    pub ports: usize,
    /// Endpoints per imported headless service.
    pub endpoints: usize,
    /// Gateway addresses a peer may announce.
    pub gateways: usize,
    /// Link messages per second a peer may send, sustained.
    pub frames_per_second: u32,
    /// Link messages a peer may send in a burst above the sustained rate.
    pub frame_burst: u32,
    /// Whether loopback and link-local gateway addresses are accepted (the loopback demo
    /// and tests need them; a real mesh never does).
    pub allow_loopback: bool,
}

impl ImportLimits {
    /// The defaults: 5000 services, 64 ports per service, 1000 endpoints per headless
    /// service, 16 gateways, 50 messages a second with bursts of 200, no loopback gateways.
    pub const DEFAULT: ImportLimits = ImportLimits {
        services: 5000,
        ports: 64,
        endpoints: 1000,
        gateways: 16,
        frames_per_second: 50,
        frame_burst: 200,
        allow_loopback: false,
    };
}

impl Default for ImportLimits {
    fn default() -> Self {
        ImportLimits::DEFAULT
    }
}

/// One bound a peer went over; what was over it was refused.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case", tag = "limit")]
pub enum LimitExceeded {
    /// More services than the link may import: the newest names past the bound were refused.
    Services {
        /// The bound.
        max: usize,
        /// How many the peer exported.
        offered: usize,
    },
    /// A service had more ports than allowed, or two ports with one name or number: the
    /// service was refused.
    Ports {
        /// The service.
        service: ServiceName,
        /// The bound.
        max: usize,
    },
    /// A headless service had more endpoints than allowed, or one hostname twice: the
    /// service was refused.
    Endpoints {
        /// The service.
        service: ServiceName,
        /// The bound.
        max: usize,
    },
    /// More gateway addresses than allowed: the ones past the bound were ignored.
    Gateways {
        /// The bound.
        max: usize,
        /// How many usable addresses the peer announced.
        offered: usize,
    },
    /// A gateway address that is not a unicast address we may dial was ignored.
    GatewayAddress {
        /// The address.
        addr: SocketAddr,
    },
    /// The peer sent messages faster than allowed: the excess was dropped.
    FrameRate {
        /// The sustained bound.
        per_second: u32,
    },
    /// The peer asked for a full snapshot while one was still queued for it: dropped.
    Resync,
}

impl LimitExceeded {
    /// A stable snake_case name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            LimitExceeded::Services { .. } => "services",
            LimitExceeded::Ports { .. } => "ports",
            LimitExceeded::Endpoints { .. } => "endpoints",
            LimitExceeded::Gateways { .. } => "gateways",
            LimitExceeded::GatewayAddress { .. } => "gateway_address",
            LimitExceeded::FrameRate { .. } => "frame_rate",
            LimitExceeded::Resync => "resync",
        }
    }
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LimitExceeded::Services { max, offered } => write!(
                f,
                "peer exports {offered} services, over the limit of {max}; {} refused",
                offered - max
            ),
            LimitExceeded::Ports { service, max } => write!(
                f,
                "{service} refused: more than {max} ports, or a port name or number twice"
            ),
            LimitExceeded::Endpoints { service, max } => write!(
                f,
                "{service} refused: more than {max} endpoints, or a hostname twice"
            ),
            LimitExceeded::Gateways { max, offered } => write!(
                f,
                "peer announced {offered} gateways, over the limit of {max}; the rest ignored"
            ),
            LimitExceeded::GatewayAddress { addr } => write!(
                f,
                "gateway address {addr} ignored: not a unicast address this cluster may dial"
            ),
            LimitExceeded::FrameRate { per_second } => write!(
                f,
                "peer sent more than {per_second} messages per second; the excess was dropped"
            ),
            LimitExceeded::Resync => f.write_str(
                "peer asked for snapshots faster than it read them; extra requests dropped",
            ),
        }
    }
}

/// Keeps what a peer exports within `limits`: services with too many (or duplicate) ports or
/// endpoints are refused whole; past the service bound, names already in `previous` are kept
/// first, then the rest in name order, so a peer cannot push out what it exported before.
/// Health counts for ports the service does not have are dropped. `offered` must be sorted
/// by name with one entry per name; so is the answer.
pub fn bound_exports(
    previous: &[ExportedService],
    offered: Vec<ExportedService>,
    limits: &ImportLimits,
) -> (Vec<ExportedService>, Vec<LimitExceeded>) {
    let mut exceeded = Vec::new();
    let mut valid = Vec::with_capacity(offered.len().min(limits.services));
    for svc in offered {
        match check_export(svc, limits) {
            Ok(svc) => valid.push(svc),
            Err(limit) => exceeded.push(limit),
        }
    }
    if valid.len() > limits.services {
        let offered = valid.len();
        let before: BTreeSet<&ServiceName> = previous.iter().map(|s| &s.name).collect();
        let mut keep: BTreeSet<ServiceName> = valid
            .iter()
            .filter(|s| before.contains(&s.name))
            .take(limits.services)
            .map(|s| s.name.clone())
            .collect();
        for s in &valid {
            if keep.len() >= limits.services {
                break;
            }
            keep.insert(s.name.clone());
        }
        valid.retain(|s| keep.contains(&s.name));
        exceeded.push(LimitExceeded::Services {
            max: limits.services,
            offered,
        });
    }
    (valid, exceeded)
}

/// Checks one exported service against the per-service bounds (ports, endpoints, distinct
/// port names, numbers and hostnames) and drops healthy counts of ports it does not have.
pub fn check_export(
    mut svc: ExportedService,
    limits: &ImportLimits,
) -> Result<ExportedService, LimitExceeded> {
    if svc.ports.len() > limits.ports || !distinct_ports(&svc) {
        return Err(LimitExceeded::Ports {
            service: svc.name,
            max: limits.ports,
        });
    }
    let hostnames: BTreeSet<_> = svc.endpoints.iter().map(|e| &e.hostname).collect();
    if svc.endpoints.len() > limits.endpoints || hostnames.len() != svc.endpoints.len() {
        return Err(LimitExceeded::Endpoints {
            service: svc.name,
            max: limits.endpoints,
        });
    }
    let ports: BTreeSet<_> = svc.ports.iter().map(|p| &p.name).collect();
    svc.healthy.retain(|name, _| ports.contains(name));
    Ok(svc)
}

fn distinct_ports(svc: &ExportedService) -> bool {
    let names: BTreeSet<_> = svc.ports.iter().map(|p| &p.name).collect();
    let numbers: BTreeSet<_> = svc.ports.iter().map(|p| p.port).collect();
    names.len() == svc.ports.len() && numbers.len() == svc.ports.len()
}

/// The gateway addresses of `offered` this cluster may dial, de-duplicated, in the order
/// given, at most `limits.gateways`: unicast, a non-zero port, and not loopback or
/// link-local unless `limits.allow_loopback`. Everything left out is reported.
pub fn check_gateways(
    offered: &[SocketAddr],
    limits: &ImportLimits,
) -> (Vec<SocketAddr>, Vec<LimitExceeded>) {
    let mut exceeded = Vec::new();
    let mut seen = BTreeSet::new();
    let mut usable = Vec::new();
    for addr in offered {
        if !dialable(addr, limits.allow_loopback) {
            if exceeded.len() < limits.gateways {
                exceeded.push(LimitExceeded::GatewayAddress { addr: *addr });
            }
            continue;
        }
        if seen.insert(*addr) {
            usable.push(*addr);
        }
    }
    if usable.len() > limits.gateways {
        exceeded.push(LimitExceeded::Gateways {
            max: limits.gateways,
            offered: usable.len(),
        });
        usable.truncate(limits.gateways);
    }
    (usable, exceeded)
}

fn dialable(addr: &SocketAddr, allow_loopback: bool) -> bool {
    if addr.port() == 0 {
        return false;
    }
    let ip = match addr.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    let local_only = match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.is_unicast_link_local(),
    };
    let unicast = match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    unicast && (allow_loopback || !local_only)
}

/// A token bucket over link messages, in the peer's favour: it starts full.
#[derive(Clone, Copy, Debug)]
pub struct FrameBudget {
    tokens: f64,
    last: Option<std::time::Instant>,
}

impl FrameBudget {
    /// A full bucket.
    pub fn new(limits: &ImportLimits) -> Self {
        FrameBudget {
            tokens: f64::from(limits.frame_burst),
            last: None,
        }
    }

    /// Takes one message's token at `now`; false when the peer is over the rate.
    pub fn take(&mut self, now: std::time::Instant, limits: &ImportLimits) -> bool {
        if let Some(last) = self.last {
            let refill = now.saturating_duration_since(last).as_secs_f64()
                * f64::from(limits.frames_per_second);
            self.tokens = (self.tokens + refill).min(f64::from(limits.frame_burst));
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests;
