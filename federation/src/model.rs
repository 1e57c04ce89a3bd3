//! Validated domain types: cluster, node and service names, ports, endpoints and service specs.
//!
//! Everything that arrives as text (config, CLI, wire) becomes one of these types at the edge,
//! so the rest of Ferry never re-checks a name. This module must not do I/O or hold any state;
//! it only parses, validates and prints.

use std::borrow::Borrow;
use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

const LABEL_RULE: &str =
    "use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'";
const PORT_NAME_RULE: &str =
    "use 1 to 15 characters of a-z, 0-9 and '-', starting with a letter and not ending with '-'";
const TRUST_DOMAIN_RULE: &str =
    "use 1 to 255 characters of a-z, 0-9, '.', '-' and '_', with no empty part between dots";

/// A name (cluster, node, trust domain, namespace, service or port name) that broke its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// The name was empty.
    #[error("{kind} must not be empty; {rule}")]
    Empty {
        /// What kind of name it was, e.g. `cluster id`.
        kind: &'static str,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// The name was longer than allowed.
    #[error("{kind} {value:?} is {len} characters long, more than {max}; {rule}")]
    TooLong {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// The name contained a character outside the allowed set.
    #[error("{kind} {value:?} contains {ch:?}; {rule}")]
    BadChar {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// The first offending character.
        ch: char,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A DNS-label style name did not start with a letter.
    #[error("{kind} {value:?} must start with a lowercase letter; {rule}")]
    BadStart {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A DNS-label style name ended with `-`.
    #[error("{kind} {value:?} must not end with '-'; {rule}")]
    TrailingHyphen {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A dotted name had a leading, trailing or doubled dot.
    #[error("{kind} {value:?} has an empty part (leading, trailing or doubled '.'); {rule}")]
    EmptyLabel {
        /// What kind of name it was.
        kind: &'static str,
        /// The (shortened) offending input.
        value: String,
        /// The rule the name must follow.
        rule: &'static str,
    },
    /// A service name was not `<name>.<namespace>`.
    #[error(
        "service name {value:?} must be written <name>.<namespace> with exactly one '.', \
         for example web.shop"
    )]
    ServiceNameShape {
        /// The (shortened) offending input.
        value: String,
    },
}

fn check_label(
    kind: &'static str,
    s: &str,
    max: usize,
    rule: &'static str,
) -> Result<(), InvalidName> {
    if s.is_empty() {
        return Err(InvalidName::Empty { kind, rule });
    }
    if s.len() > max {
        return Err(InvalidName::TooLong {
            kind,
            value: shorten(s),
            len: s.len(),
            max,
            rule,
        });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(InvalidName::BadChar {
            kind,
            value: shorten(s),
            ch,
            rule,
        });
    }
    if !s.as_bytes()[0].is_ascii_lowercase() {
        return Err(InvalidName::BadStart {
            kind,
            value: shorten(s),
            rule,
        });
    }
    if s.ends_with('-') {
        return Err(InvalidName::TrailingHyphen {
            kind,
            value: shorten(s),
            rule,
        });
    }
    Ok(())
}

fn check_trust_domain(s: &str) -> Result<(), InvalidName> {
    const KIND: &str = "trust domain";
    let rule = TRUST_DOMAIN_RULE;
    if s.is_empty() {
        return Err(InvalidName::Empty { kind: KIND, rule });
    }
    if s.len() > 255 {
        return Err(InvalidName::TooLong {
            kind: KIND,
            value: shorten(s),
            len: s.len(),
            max: 255,
            rule,
        });
    }
    if let Some(ch) = s.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
    }) {
        return Err(InvalidName::BadChar {
            kind: KIND,
            value: shorten(s),
            ch,
            rule,
        });
    }
    if s.split('.').any(str::is_empty) {
        return Err(InvalidName::EmptyLabel {
            kind: KIND,
            value: shorten(s),
            rule,
        });
    }
    Ok(())
}

/// Implements the string conversions shared by every string newtype.
macro_rules! string_newtype_impls {
    ($name:ident) => {
        impl $name {
            /// The validated text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl FromStr for $name {
            type Err = InvalidName;
            fn from_str(s: &str) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }
        impl TryFrom<String> for $name {
            type Error = InvalidName;
            fn try_from(s: String) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }
        impl TryFrom<&str> for $name {
            type Error = InvalidName;
            fn try_from(s: &str) -> Result<Self, InvalidName> {
                Self::new(s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Declares a DNS-label newtype.
macro_rules! label_newtype {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $max:expr, $rule:expr) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
                let s = s.into();
                check_label($kind, &s, $max, $rule)?;
                Ok(Self(s))
            }
        }
        string_newtype_impls!($name);
    };
}

label_newtype!(
    /// A cluster's name: a DNS label (1..=63 of `[a-z0-9-]`, starts with a letter, no trailing `-`).
    ClusterId,
    "cluster id",
    63,
    LABEL_RULE
);
label_newtype!(
    /// A node's name within a cluster: same rules as [`ClusterId`].
    NodeName,
    "node name",
    63,
    LABEL_RULE
);
label_newtype!(
    /// A namespace or service name: a DNS label like [`ClusterId`].
    Label,
    "name",
    63,
    LABEL_RULE
);
label_newtype!(
    /// A port name: a DNS label of at most 15 characters (the Kubernetes port-name rule).
    PortName,
    "port name",
    15,
    PORT_NAME_RULE
);

/// A SPIFFE trust domain: 1..=255 chars of `[a-z0-9.-_]`, no empty dot-separated part.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Validates `s` and wraps it.
    pub fn new(s: impl Into<String>) -> Result<Self, InvalidName> {
        let s = s.into();
        check_trust_domain(&s)?;
        Ok(Self(s))
    }
}
string_newtype_impls!(TrustDomain);

/// A service's identity across the mesh: `<name>.<namespace>`, e.g. `web.shop`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ServiceName {
    name: Label,
    namespace: Label,
}

impl ServiceName {
    /// Builds a service name from its validated parts.
    pub fn new(name: Label, namespace: Label) -> Self {
        Self { name, namespace }
    }

    /// The service's own name (`web` in `web.shop`).
    pub fn name(&self) -> &Label {
        &self.name
    }

    /// The service's namespace (`shop` in `web.shop`).
    pub fn namespace(&self) -> &Label {
        &self.namespace
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

impl FromStr for ServiceName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, InvalidName> {
        let shape = || InvalidName::ServiceNameShape { value: shorten(s) };
        let (name, namespace) = s.split_once('.').ok_or_else(shape)?;
        if namespace.contains('.') {
            return Err(shape());
        }
        check_label("service name", name, 63, LABEL_RULE)?;
        check_label("namespace", namespace, 63, LABEL_RULE)?;
        Ok(Self {
            name: Label(name.to_owned()),
            namespace: Label(namespace.to_owned()),
        })
    }
}

impl TryFrom<String> for ServiceName {
    type Error = InvalidName;
    fn try_from(s: String) -> Result<Self, InvalidName> {
        s.parse()
    }
}

impl From<ServiceName> for String {
    fn from(v: ServiceName) -> String {
        v.to_string()
    }
}

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
    /// Not an IP address with an optional port.
    #[error(
        "endpoint {value:?} is not an IP address with an optional port; \
         write it like 10.0.0.5, 10.0.0.5:8080, fd00::5 or [fd00::5]:8080"
    )]
    Syntax {
        /// The (shortened) offending input.
        value: String,
    },
    /// The port was 0.
    #[error("endpoint {value:?} has port 0; leave the port out or use 1 to 65535")]
    ZeroPort {
        /// The (shortened) offending input.
        value: String,
    },
}

/// Where an endpoint of a service listens. Without a port, the service port's target is used.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointAddr {
    /// The endpoint's IP.
    pub ip: IpAddr,
    /// An explicit port overriding the service port's `target_port`.
    pub port: Option<u16>,
}

impl EndpointAddr {
    /// The socket address to dial for `service_port`.
    pub fn target(&self, service_port: &ServicePort) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(service_port.target_port))
    }
}

impl FromStr for EndpointAddr {
    type Err = InvalidEndpoint;
    fn from_str(s: &str) -> Result<Self, InvalidEndpoint> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(EndpointAddr { ip, port: None });
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) if sa.port() == 0 => Err(InvalidEndpoint::ZeroPort { value: shorten(s) }),
            Ok(sa) => Ok(EndpointAddr {
                ip: sa.ip(),
                port: Some(sa.port()),
            }),
            Err(_) => Err(InvalidEndpoint::Syntax { value: shorten(s) }),
        }
    }
}

impl fmt::Display for EndpointAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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
    /// The same endpoint is listed twice.
    #[error("service {service} lists endpoint {endpoint} twice; list each endpoint once")]
    DuplicateEndpoint {
        /// The service.
        service: ServiceName,
        /// The repeated endpoint.
        endpoint: EndpointAddr,
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
    /// Its endpoints (unique).
    pub endpoints: Vec<EndpointAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServiceSpec {
    name: ServiceName,
    ports: Vec<ServicePort>,
    #[serde(default)]
    endpoints: Vec<EndpointAddr>,
}

impl TryFrom<RawServiceSpec> for ServiceSpec {
    type Error = InvalidService;
    fn try_from(raw: RawServiceSpec) -> Result<Self, InvalidService> {
        ServiceSpec::new(raw.name, raw.ports, raw.endpoints)
    }
}

impl ServiceSpec {
    /// Checks that the parts fit together: at least one port, port names and numbers unique,
    /// endpoint ports only for single-port services, endpoints unique.
    pub fn new(
        name: ServiceName,
        ports: Vec<ServicePort>,
        endpoints: Vec<EndpointAddr>,
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
        for e in &endpoints {
            if e.port.is_some() && ports.len() != 1 {
                return Err(InvalidService::EndpointPortAmbiguous {
                    service: name,
                    endpoint: e.clone(),
                });
            }
            if !seen.insert(e) {
                return Err(InvalidService::DuplicateEndpoint {
                    service: name,
                    endpoint: e.clone(),
                });
            }
        }
        Ok(ServiceSpec {
            name,
            ports,
            endpoints,
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
}

#[cfg(test)]
mod tests;
