//! Service ports, endpoints and service specs.
//!
//! Pure parsing and cross-field checks; no I/O, no state.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{shorten, InvalidName, Label, PortName, ServiceName};

/// The application protocol a port speaks; decides how the proxy may treat its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Opaque TCP (the default).
    Tcp,
    /// HTTP/1.1 or HTTP/2.
    Http,
    /// gRPC over HTTP/2.
    Grpc,
    /// UDP datagrams.
    Udp,
}

impl Protocol {
    /// The lowercase name used in config and on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = InvalidPort;
    fn from_str(s: &str) -> Result<Self, InvalidPort> {
        match s {
            "tcp" => Ok(Protocol::Tcp),
            "http" => Ok(Protocol::Http),
            "grpc" => Ok(Protocol::Grpc),
            "udp" => Ok(Protocol::Udp),
            _ => Err(InvalidPort::Protocol { value: shorten(s) }),
        }
    }
}

/// A service port spec that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPort {
    /// The text was not `<name>=<port>[:<target>][/<protocol>]`.
    #[error(
        "port {value:?} must be written <name>=<port>[:<target-port>][/<protocol>], \
         for example http=80:8080/http or db=5432"
    )]
    Shape {
        /// The (shortened) offending input.
        value: String,
    },
    /// The port name was invalid.
    #[error("invalid port: {0}")]
    Name(#[from] InvalidName),
    /// A port number was not in 1..=65535.
    #[error("{what} {value:?} is not a port number; use a number from 1 to 65535")]
    Number {
        /// `port` or `target port`.
        what: &'static str,
        /// The (shortened) offending input.
        value: String,
    },
    /// The protocol was not one Ferry knows.
    #[error("protocol {value:?} is not supported; use tcp, http, grpc or udp")]
    Protocol {
        /// The (shortened) offending input.
        value: String,
    },
}

/// One port of a service: `http=80:8080/http` means clients dial 80, endpoints listen on 8080.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServicePort {
    /// The port's name, stable across clusters (remote routing matches on it).
    pub name: PortName,
    /// The port clients dial on the service VIP.
    pub port: u16,
    /// The port the endpoints listen on.
    pub target_port: u16,
    /// What the port speaks.
    pub protocol: Protocol,
}

fn parse_port_number(what: &'static str, s: &str) -> Result<u16, InvalidPort> {
    let bad = || InvalidPort::Number {
        what,
        value: shorten(s),
    };
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(n) => Ok(n),
    }
}

impl FromStr for ServicePort {
    type Err = InvalidPort;
    fn from_str(s: &str) -> Result<Self, InvalidPort> {
        let (name, rest) = s
            .split_once('=')
            .ok_or_else(|| InvalidPort::Shape { value: shorten(s) })?;
        let name = PortName::new(name)?;
        let (ports, protocol) = match rest.split_once('/') {
            Some((ports, proto)) => (ports, proto.parse()?),
            None => (rest, Protocol::Tcp),
        };
        let (port, target_port) = match ports.split_once(':') {
            Some((p, t)) => (
                parse_port_number("port", p)?,
                parse_port_number("target port", t)?,
            ),
            None => {
                let p = parse_port_number("port", ports)?;
                (p, p)
            }
        };
        Ok(ServicePort {
            name,
            port,
            target_port,
            protocol,
        })
    }
}

impl fmt::Display for ServicePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port == self.target_port {
            write!(f, "{}={}/{}", self.name, self.port, self.protocol)
        } else {
            write!(
                f,
                "{}={}:{}/{}",
                self.name, self.port, self.target_port, self.protocol
            )
        }
    }
}

impl TryFrom<String> for ServicePort {
    type Error = InvalidPort;
    fn try_from(s: String) -> Result<Self, InvalidPort> {
        s.parse()
    }
}

impl From<ServicePort> for String {
    fn from(v: ServicePort) -> String {
        v.to_string()
    }
}

/// An endpoint address that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEndpoint {
    /// Not an IP address with an optional port (and optional hostname).
    #[error(
        "endpoint {value:?} is not an IP address with an optional port; \
         write it like 10.0.0.5, 10.0.0.5:8080, fd00::5 or [fd00::5]:8080, \
         optionally named: kafka-0=10.0.0.5:9092"
    )]
    Syntax {
        /// The (shortened) offending input.
        value: String,
    },
    /// The part before `=` was not a valid hostname.
    #[error(
        "endpoint {value:?} has an invalid hostname: {reason}; \
         write it as <hostname>=<ip>[:<port>], for example kafka-0=10.0.0.5:9092"
    )]
    Hostname {
        /// The (shortened) offending input.
        value: String,
        /// Why the hostname was refused.
        reason: InvalidName,
    },
    /// The port was 0.
    #[error("endpoint {value:?} has port 0; leave the port out or use 1 to 65535")]
    ZeroPort {
        /// The (shortened) offending input.
        value: String,
    },
}

/// Where an endpoint of a service listens. Without a port, the service port's target is used.
///
/// Written `ip`, `ip:port`, `[ip6]:port`, or with a hostname in front: `kafka-0=10.0.0.5:9092`.
/// The hostname names the endpoint of a headless service in DNS
/// (`<hostname>.<cluster>.<svc>.<ns>.svc.clusterset.local`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointAddr {
    /// The endpoint's IP.
    pub ip: IpAddr,
    /// An explicit port overriding the service port's `target_port`.
    pub port: Option<u16>,
    /// The endpoint's hostname, if it has one (see [`EndpointAddr::hostname_or_default`]).
    pub hostname: Option<Label>,
}

impl EndpointAddr {
    /// The socket address to dial for `service_port`.
    pub fn target(&self, service_port: &ServicePort) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(service_port.target_port))
    }

    /// The endpoint's hostname, or, without one, its IP written with dashes the way
    /// Kubernetes names unnamed endpoints: `10.0.0.5` is `10-0-0-5`, `fd00::5` is `fd00--5`
    /// (a `0` is added where an IPv6 name would start or end with `-`, as in `0--1` for `::1`).
    pub fn hostname_or_default(&self) -> Label {
        match &self.hostname {
            Some(h) => h.clone(),
            None => default_hostname(self.ip),
        }
    }
}

fn default_hostname(ip: IpAddr) -> Label {
    let mut name: String = ip
        .to_string()
        .chars()
        .map(|c| if c == '.' || c == ':' { '-' } else { c })
        .collect();
    if name.starts_with('-') {
        name.insert(0, '0');
    }
    if name.ends_with('-') {
        name.push('0');
    }
    // An IP printed this way is at most 47 characters of lowercase hex digits and '-' that
    // neither starts nor ends with '-': always a valid label.
    Label::new(name).expect("a dashed IP address is a valid DNS label")
}

impl FromStr for EndpointAddr {
    type Err = InvalidEndpoint;
    fn from_str(s: &str) -> Result<Self, InvalidEndpoint> {
        let (hostname, addr) = match s.split_once('=') {
            Some((host, addr)) => {
                let host = Label::new(host).map_err(|reason| InvalidEndpoint::Hostname {
                    value: shorten(s),
                    reason,
                })?;
                (Some(host), addr)
            }
            None => (None, s),
        };
        if let Ok(ip) = addr.parse::<IpAddr>() {
            return Ok(EndpointAddr {
                ip,
                port: None,
                hostname,
            });
        }
        match addr.parse::<SocketAddr>() {
            Ok(sa) if sa.port() == 0 => Err(InvalidEndpoint::ZeroPort { value: shorten(s) }),
            Ok(sa) => Ok(EndpointAddr {
                ip: sa.ip(),
                port: Some(sa.port()),
                hostname,
            }),
            Err(_) => Err(InvalidEndpoint::Syntax { value: shorten(s) }),
        }
    }
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(h) = &self.hostname {
            write!(f, "{h}=")?;
        }
        match self.port {
            None => write!(f, "{}", self.ip),
            Some(p) => write!(f, "{}", SocketAddr::new(self.ip, p)),
        }
    }
}

impl TryFrom<String> for EndpointAddr {
    type Error = InvalidEndpoint;
    fn try_from(s: String) -> Result<Self, InvalidEndpoint> {
        s.parse()
    }
}

impl From<EndpointAddr> for String {
    fn from(v: EndpointAddr) -> String {
        v.to_string()
    }
}

/// A service spec whose parts do not fit together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidService {
    /// No ports were given.
    #[error("service {service} has no ports; give it at least one, for example http=80:8080/http")]
    NoPorts {
        /// The service.
        service: ServiceName,
    },
    /// Two ports share a name.
    #[error("service {service} has two ports named {name}; give each port its own name")]
    DuplicatePortName {
        /// The service.
        service: ServiceName,
        /// The repeated name.
        name: PortName,
    },
    /// Two ports share a number.
    #[error("service {service} uses port {port} twice; give each port its own number")]
    DuplicatePortNumber {
        /// The service.
        service: ServiceName,
        /// The repeated number.
        port: u16,
    },
    /// An endpoint names a port although the service has several ports.
    #[error(
        "endpoint {endpoint} of service {service} has an explicit port, which is only allowed \
         when the service has exactly one port; drop the endpoint's port and set target ports"
    )]
    EndpointPortAmbiguous {
        /// The service.
        service: ServiceName,
        /// The endpoint with a port.
        endpoint: EndpointAddr,
    },
    /// The same endpoint address is listed twice.
    #[error("service {service} lists endpoint {endpoint} twice; list each endpoint once")]
    DuplicateEndpoint {
        /// The service.
        service: ServiceName,
        /// The repeated endpoint.
        endpoint: EndpointAddr,
    },
    /// Two endpoints of a headless service have the same hostname (given or default).
    #[error(
        "headless service {service} has two endpoints named {hostname}; each endpoint of a \
         headless service needs its own hostname, write them as <hostname>=<ip>[:<port>]"
    )]
    DuplicateHostname {
        /// The service.
        service: ServiceName,
        /// The repeated hostname.
        hostname: Label,
    },
}

/// A local service: its name, ports and endpoints, checked to fit together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawServiceSpec")]
pub struct ServiceSpec {
    /// The service's name.
    pub name: ServiceName,
    /// Its ports (at least one; names and numbers unique).
    pub ports: Vec<ServicePort>,
    /// Its endpoints (addresses unique; for a headless service, hostnames unique too).
    pub endpoints: Vec<EndpointAddr>,
    /// Whether every endpoint gets its own VIP and DNS name (MCS headless service).
    pub headless: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceSpec {
    name: ServiceName,
    ports: Vec<ServicePort>,
    #[serde(default)]
    endpoints: Vec<EndpointAddr>,
    #[serde(default)]
    headless: bool,
}

impl TryFrom<RawServiceSpec> for ServiceSpec {
    type Error = InvalidService;
    fn try_from(raw: RawServiceSpec) -> Result<Self, InvalidService> {
        ServiceSpec::with_headless(raw.name, raw.ports, raw.endpoints, raw.headless)
    }
}

impl ServiceSpec {
    /// A service that is not headless; see [`ServiceSpec::with_headless`] for the checks.
    pub fn new(
        name: ServiceName,
        ports: Vec<ServicePort>,
        endpoints: Vec<EndpointAddr>,
    ) -> Result<Self, InvalidService> {
        Self::with_headless(name, ports, endpoints, false)
    }

    /// Checks that the parts fit together: at least one port, port names and numbers unique,
    /// endpoint ports only for single-port services, endpoint addresses unique, and for a
    /// `headless` service endpoint hostnames (given or default) unique.
    pub fn with_headless(
        name: ServiceName,
        ports: Vec<ServicePort>,
        endpoints: Vec<EndpointAddr>,
        headless: bool,
    ) -> Result<Self, InvalidService> {
        if ports.is_empty() {
            return Err(InvalidService::NoPorts { service: name });
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        for p in &ports {
            if !names.insert(&p.name) {
                return Err(InvalidService::DuplicatePortName {
                    service: name,
                    name: p.name.clone(),
                });
            }
            if !numbers.insert(p.port) {
                return Err(InvalidService::DuplicatePortNumber {
                    service: name,
                    port: p.port,
                });
            }
        }
        let mut seen = BTreeSet::new();
        let mut hostnames = BTreeSet::new();
        for e in &endpoints {
            if e.port.is_some() && ports.len() != 1 {
                return Err(InvalidService::EndpointPortAmbiguous {
                    service: name,
                    endpoint: e.clone(),
                });
            }
            // Unique by address: a hostname does not make a second entry for one socket.
            if !seen.insert((e.ip, e.port)) {
                return Err(InvalidService::DuplicateEndpoint {
                    service: name,
                    endpoint: e.clone(),
                });
            }
            if headless && !hostnames.insert(e.hostname_or_default()) {
                return Err(InvalidService::DuplicateHostname {
                    service: name,
                    hostname: e.hostname_or_default(),
                });
            }
        }
        Ok(ServiceSpec {
            name,
            ports,
            endpoints,
            headless,
        })
    }

    /// The port clients dial as `port` on the VIP.
    pub fn port_by_number(&self, port: u16) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.port == port)
    }

    /// The port called `name`.
    pub fn port_by_name(&self, name: &PortName) -> Option<&ServicePort> {
        self.ports.iter().find(|p| &p.name == name)
    }

    /// The endpoint whose hostname (given or default) is `hostname`.
    pub fn endpoint_by_hostname(&self, hostname: &Label) -> Option<&EndpointAddr> {
        self.endpoints
            .iter()
            .find(|e| &e.hostname_or_default() == hostname)
    }
}

/// A local service as the control plane knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalService {
    /// Its spec.
    pub spec: ServiceSpec,
    /// Whether it is exported to linked peers.
    pub exported: bool,
    /// When it was exported (unix milliseconds), sent to peers so the oldest export wins.
    pub exported_at_ms: u64,
    /// Health per entry of `spec.endpoints`; a missing entry counts as unhealthy.
    pub health: Vec<bool>,
}
