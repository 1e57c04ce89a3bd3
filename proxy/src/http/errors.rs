//! Errors the proxy makes itself, as real responses: each has a kind, a `ferry-error`
//! reason (a fixed set: metrics and logs use it too), whether another attempt may help,
//! and its answer: 503 / 504 on HTTP ports, a trailers-only gRPC status on gRPC ports.

use http::{Response, StatusCode};

use super::Body;

/// Why the proxy answered a request itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// No service or port behind the address.
    NoRoute,
    /// The service's policy allows no cluster with a healthy endpoint.
    NoAllowedEndpoint,
    /// No healthy endpoint anywhere.
    NoHealthyEndpoint,
    /// Every candidate failed to connect or answer.
    Unreachable,
    /// Every candidate is at its in-flight limit.
    CircuitOpen,
    /// The request took longer than the service's timeout.
    Timeout,
    /// The upstream connection failed after the request was sent, and it could not be
    /// retried.
    Upstream,
}

impl ProxyError {
    /// The `ferry-error` value and metrics label.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            ProxyError::NoRoute => "no_route",
            ProxyError::NoAllowedEndpoint => "no_allowed_endpoint",
            ProxyError::NoHealthyEndpoint => "no_healthy_endpoint",
            ProxyError::Unreachable => "unreachable",
            ProxyError::CircuitOpen => "circuit_open",
            ProxyError::Timeout => "timeout",
            ProxyError::Upstream => "upstream_reset",
        }
    }

    fn http_status(self) -> StatusCode {
        match self {
            ProxyError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Upstream => StatusCode::BAD_GATEWAY,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The gRPC status code: `DEADLINE_EXCEEDED` for a timeout, `UNAVAILABLE` otherwise
    /// (the call did not reach a server, or its connection failed).
    pub(crate) fn grpc_status(self) -> u32 {
        match self {
            ProxyError::Timeout => 4,
            _ => 14,
        }
    }

    /// The answer on an HTTP port (`grpc == false`) or a gRPC port.
    pub(crate) fn response(self, grpc: bool) -> Response<Body> {
        let message = match self {
            ProxyError::NoRoute => "no mesh service at this address",
            ProxyError::NoAllowedEndpoint => {
                "no healthy endpoint where the service's policy allows"
            }
            ProxyError::NoHealthyEndpoint => "no healthy endpoint of the service in any cluster",
            ProxyError::Unreachable => "no endpoint of the service answered",
            ProxyError::CircuitOpen => "every endpoint of the service is at its in-flight limit",
            ProxyError::Timeout => "the request took longer than the service's timeout",
            ProxyError::Upstream => "the connection to the service failed during the request",
        };
        let grpc_status = grpc.then(|| self.grpc_status());
        ferry_gateway::http::error_response(self.reason(), message, self.http_status(), grpc_status)
    }
}
