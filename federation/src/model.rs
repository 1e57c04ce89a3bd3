//! Validated domain types: cluster, node and service names, ports, endpoints, service specs
//! and traffic policies.
//!
//! Everything that arrives as text (config, CLI, wire) becomes one of these types at the edge,
//! so the rest of Ferry never re-checks a name. This module must not do I/O or hold any state;
//! it only parses, validates and prints.

mod export;
mod names;
mod refusal;
mod service;
pub mod traffic;

pub use export::{ExportedEndpoint, ExportedService};
pub use refusal::Refusal;

pub use traffic::{HeaderRoute, InvalidPolicy, PolicyEdit, RetryOn, Split, TrafficPolicy};

pub use names::{ClusterId, InvalidName, Label, NodeName, PortName, ServiceName, TrustDomain};
pub use service::{
    EndpointAddr, InvalidEndpoint, InvalidPort, InvalidService, LocalService, Protocol,
    ServicePort, ServiceSpec,
};

/// Shortens user input before it is quoted in an error message, so a megabyte of garbage
/// does not end up in a log line.
pub(crate) fn shorten(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests;
