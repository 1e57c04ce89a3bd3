//! Why a gateway refuses a tunnel: the closed set of refusals, their wire codes and the
//! words an operator reads. Pure data; [`crate::policy::admit`] decides which one applies.

use std::fmt;

/// Why a gateway refused a tunnel. Sent to the caller as a one-byte code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The caller is not a gateway or node of a linked peer cluster.
    UnknownPeer,
    /// The service does not exist here or is not exported (deliberately the same answer).
    NotExported,
    /// The service has no port of that name.
    UnknownPort,
    /// The service has no healthy endpoint for the port.
    NoEndpoints,
    /// The tunnel crossed more than `MAX_HOPS` gateways.
    TooManyHops,
    /// The tunnel header could not be decoded.
    BadHeader,
    /// The caller asked for a different cluster than this one.
    WrongCluster,
    /// The header named an endpoint the (exported) service does not have here, or the
    /// service is not headless.
    UnknownEndpoint,
    /// The header named an endpoint that is not healthy.
    EndpointUnhealthy,
}

impl Refusal {
    /// Every refusal, in wire-code order.
    pub const ALL: [Refusal; 9] = ALL;
}

const ALL: [Refusal; 9] = [
    Refusal::UnknownPeer,
    Refusal::NotExported,
    Refusal::UnknownPort,
    Refusal::NoEndpoints,
    Refusal::TooManyHops,
    Refusal::BadHeader,
    Refusal::WrongCluster,
    Refusal::UnknownEndpoint,
    Refusal::EndpointUnhealthy,
];

impl Refusal {
    /// A stable snake_case name for metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::UnknownPeer => "unknown_peer",
            Refusal::NotExported => "not_exported",
            Refusal::UnknownPort => "unknown_port",
            Refusal::NoEndpoints => "no_endpoints",
            Refusal::TooManyHops => "too_many_hops",
            Refusal::BadHeader => "bad_header",
            Refusal::WrongCluster => "wrong_cluster",
            Refusal::UnknownEndpoint => "unknown_endpoint",
            Refusal::EndpointUnhealthy => "endpoint_unhealthy",
        }
    }

    /// The wire code (1..=9; 0 is never a refusal). Only callers that name an endpoint
    /// (and so know codes 8 and 9) are ever sent 8 or 9.
    pub fn code(&self) -> u8 {
        match self {
            Refusal::UnknownPeer => 1,
            Refusal::NotExported => 2,
            Refusal::UnknownPort => 3,
            Refusal::NoEndpoints => 4,
            Refusal::TooManyHops => 5,
            Refusal::BadHeader => 6,
            Refusal::WrongCluster => 7,
            Refusal::UnknownEndpoint => 8,
            Refusal::EndpointUnhealthy => 9,
        }
    }

    /// The refusal with wire code `code`.
    pub fn from_code(code: u8) -> Option<Refusal> {
        ALL.into_iter().find(|r| r.code() == code)
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::UnknownPeer => {
                "the calling cluster is not linked to the serving cluster; link them with `ferry link`"
            }
            Refusal::NotExported => {
                "the service is not exported by the serving cluster; export it there"
            }
            Refusal::UnknownPort => "the service has no port of that name in the serving cluster",
            Refusal::NoEndpoints => "the service has no healthy endpoints in the serving cluster",
            Refusal::TooManyHops => "the tunnel crossed too many gateways; check for a routing loop",
            Refusal::BadHeader => "the tunnel header was malformed; check both sides run compatible Ferry versions",
            Refusal::WrongCluster => "the tunnel was meant for another cluster; check the caller's routing",
            Refusal::UnknownEndpoint => {
                "the serving cluster's service has no endpoint of that hostname, or is not headless; check the endpoint's DNS name"
            }
            Refusal::EndpointUnhealthy => {
                "the named endpoint is not healthy in the serving cluster; retry later or use the service name"
            }
        })
    }
}
