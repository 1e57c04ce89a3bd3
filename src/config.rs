//! Cluster configuration: TOML parsed from a `&str` into validated types.
//!
//! `RawConfig` mirrors the file (unknown keys rejected); `Config` is what the roles
//! run on, produced by `TryFrom` with every cross-field check done, so an invalid file
//! is refused before any port is bound. Relative paths resolve against the directory
//! of the config file.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_federation::{
    ClusterId, EndpointAddr, ImportLimits, NodeName, ServiceName, ServicePort, ServiceSpec,
    TrafficPolicy,
};

mod policy;
use serde::Deserialize;

/// Why a config file was refused. Each message names the key and what is expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {0}: {1}; check the path given to --config")]
    Read(PathBuf, std::io::Error),
    #[error("invalid config: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("invalid config key `{key}`: {reason}")]
    Invalid { key: String, reason: String },
}

fn invalid(key: impl Into<String>, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        reason: reason.to_string(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster: String,
    trust: RawTrust,
    #[serde(default)]
    control: RawControl,
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    node: RawNode,
    #[serde(default)]
    dns: RawDns,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    federation: RawFederation,
    #[serde(default, rename = "service")]
    services: Vec<RawService>,
    #[serde(default, rename = "policy")]
    policies: Vec<policy::RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrust {
    dir: String,
    cert_ttl: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControl {
    socket: Option<String>,
    data_dir: Option<String>,
    vip_range: Option<String>,
    health_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<String>,
    advertise: Option<String>,
    idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    access_log: Option<String>,
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

/// Bounds on what each linked peer may make this cluster hold, and VIP reuse.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFederation {
    max_imported_services: Option<usize>,
    max_ports_per_service: Option<usize>,
    max_endpoints_per_service: Option<usize>,
    max_peer_gateways: Option<usize>,
    max_link_messages_per_second: Option<u32>,
    allow_loopback_gateways: Option<bool>,
    vip_quarantine: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: Option<String>,
    drain_timeout: Option<String>,
    idle_timeout: Option<String>,
    max_in_flight_per_endpoint: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDns {
    listen: Option<String>,
    zone: Option<String>,
    upstreams: Option<Vec<String>>,
    enabled: Option<bool>,
    ttl: Option<String>,
    rate_limit: Option<u32>,
    forward_from: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    ports: Vec<String>,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default)]
    export: bool,
    #[serde(default)]
    headless: bool,
}

/// A validated cluster configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub cluster: ClusterId,
    /// Directory holding `ca.crt`, `ca.key` and `bundle.crt` from `ferry trust issue`.
    pub trust_dir: PathBuf,
    pub cert_ttl: Duration,
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub vip_range: VipRange,
    pub health_interval: Duration,
    pub gateway_listen: SocketAddr,
    pub gateway_advertise: Option<SocketAddr>,
    pub node_name: NodeName,
    /// On SIGTERM, how long the node proxy waits for open connections to finish.
    pub drain_timeout: Duration,
    /// A connection the node proxy relays is closed after this long without a byte.
    pub node_idle_timeout: Duration,
    /// Calls (TCP connections, HTTP requests) one node proxy keeps open to one endpoint
    /// or remote cluster at most; past that, callers get a 503 or a reset.
    pub node_max_in_flight: u32,
    /// A tunnel stream the gateway relays is closed after this long without a byte.
    pub gateway_idle_timeout: Duration,
    pub dns: DnsConfig,
    /// The admin listener (`/metrics`, `/ready`, `/live`) of `ferry up` and the control
    /// plane; the gateway, node and DNS roles run alone add 1, 2 and 3 to a non-zero port.
    pub admin_listen: SocketAddr,
    /// Which proxied calls get an access log line (`[telemetry] access_log`).
    pub access_log: ferry_gateway::access::Mode,
    /// Where spans are exported over OTLP/gRPC (`[telemetry] otlp_endpoint`), if anywhere.
    pub otlp_endpoint: Option<String>,
    /// What each linked peer may make this cluster hold.
    pub limits: ImportLimits,
    /// How long a VIP whose name went away is kept from every other name.
    pub vip_quarantine: Duration,
    pub services: Vec<DeclaredService>,
    /// Traffic policies the file declares (`[[policy]]`), sorted by service.
    pub policies: Vec<TrafficPolicy>,
    /// The file this config was loaded from (for messages), if any.
    pub file: Option<PathBuf>,
}

/// DNS server settings (used by `ferry dns` and inside `ferry up`).
#[derive(Clone, Debug)]
pub struct DnsConfig {
    pub enabled: bool,
    pub listen: SocketAddr,
    pub zone: String,
    pub upstreams: Vec<SocketAddr>,
    /// TTL of answers; negative answers use this too, at most 5 s.
    pub ttl: Duration,
    /// Queries per second per client address (0: unlimited).
    pub rate_limit: u32,
    /// Clients allowed to have non-mesh names forwarded to the upstreams.
    pub forward_from: Vec<ipnet::IpNet>,
}

impl Config {
    /// The DNS server's settings: the `[dns]` section plus the VIP range for PTR answers.
    pub fn dns_settings(&self) -> ferry_dns::DnsSettings {
        let ttl = u32::try_from(self.dns.ttl.as_secs()).unwrap_or(u32::MAX);
        let vip_range = ipnet::Ipv4Net::new(self.vip_range.base, self.vip_range.prefix)
            .map(|n| vec![ipnet::IpNet::V4(n.trunc())])
            .unwrap_or_default();
        let mut zone = ferry_dns::ZoneConfig::new(&self.dns.zone, vip_range)
            .expect("the zone was validated when the config was loaded");
        zone.ttl = ttl;
        zone.negative_ttl = ttl.min(5);
        ferry_dns::DnsSettings {
            listen: self.dns.listen,
            zone,
            upstreams: self.dns.upstreams.clone(),
            forward_from: self.dns.forward_from.clone(),
            rate_limit: self.dns.rate_limit,
        }
    }
}

/// A service declared in the config file; applied to the store at control-plane start.
#[derive(Clone, Debug)]
pub struct DeclaredService {
    pub spec: ServiceSpec,
    pub export: bool,
}

/// An IPv4 range VIPs are allocated from, e.g. `127.10.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipRange {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl VipRange {
    /// Number of usable addresses (network and broadcast excluded for prefixes < 31).
    pub fn size(&self) -> u32 {
        let host_bits = 32 - u32::from(self.prefix);
        if host_bits >= 2 {
            (1u32 << host_bits) - 2
        } else {
            1u32 << host_bits
        }
    }

    /// The `i`-th usable address, `i < size()`.
    pub fn nth(&self, i: u32) -> Option<Ipv4Addr> {
        if i >= self.size() {
            return None;
        }
        let offset = if self.prefix < 31 { i + 1 } else { i };
        Some(Ipv4Addr::from(u32::from(self.base) + offset))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => {
                let mask = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                u32::from(v4) & mask == u32::from(self.base)
            }
            IpAddr::V6(_) => false,
        }
    }
}

impl std::str::FromStr for VipRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a CIDR range; expected e.g. 127.10.0.0/16"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("`{ip}` is not an IPv4 address; expected e.g. 127.10.0.0/16"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("prefix `/{prefix}` must be between /8 and /30"))?;
        let mask = u32::MAX << (32 - u32::from(prefix));
        if u32::from(ip) & !mask != 0 {
            return Err(format!(
                "`{s}` has host bits set; use the network address, e.g. {}/{prefix}",
                Ipv4Addr::from(u32::from(ip) & mask)
            ));
        }
        Ok(VipRange { base: ip, prefix })
    }
}

impl std::fmt::Display for VipRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

/// Calls one node proxy keeps open to one hop unless `[node] max_in_flight_per_endpoint`
/// says otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10_000;

/// Parses a duration such as `24h`, `15m` or `500ms`.
pub fn parse_duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(s).map_err(|e| {
        invalid(
            key,
            format!("`{s}` is not a duration ({e}); expected e.g. 24h, 15m, 1s"),
        )
    })
}

impl Config {
    /// The socket the cluster's gateways and node proxies use (certificates, reports).
    pub fn role_socket(&self) -> PathBuf {
        crate::control::scope::Scope::Role.path(&self.socket)
    }

    /// The socket that serves only the snapshot stream (`ferry dns`).
    pub fn watch_socket(&self) -> PathBuf {
        crate::control::scope::Scope::Watch.path(&self.socket)
    }

    /// Parses a config file's text; `base` is the directory relative paths start from.
    pub fn parse(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)?;
        Config::from_raw(raw, base)
    }

    /// Reads and parses the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_owned(), e))?;
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut cfg = Config::parse(&text, &base)?;
        cfg.file = Some(path.to_owned());
        Ok(cfg)
    }

    fn from_raw(raw: RawConfig, base: &Path) -> Result<Config, ConfigError> {
        let resolve = |p: &str| {
            let p = PathBuf::from(p);
            if p.is_absolute() {
                p
            } else {
                base.join(p)
            }
        };
        let cluster: ClusterId = raw.cluster.parse().map_err(|e| invalid("cluster", e))?;
        let cert_ttl = match &raw.trust.cert_ttl {
            Some(s) => parse_duration("trust.cert_ttl", s)?,
            None => Duration::from_secs(24 * 3600),
        };
        if cert_ttl < Duration::from_secs(60) {
            return Err(invalid("trust.cert_ttl", "must be at least 1m"));
        }
        let data_dir = resolve(raw.control.data_dir.as_deref().unwrap_or("data"));
        let socket = match &raw.control.socket {
            Some(s) => resolve(s),
            None => data_dir.join("control.sock"),
        };
        let vip_range: VipRange = raw
            .control
            .vip_range
            .as_deref()
            .unwrap_or("127.10.0.0/16")
            .parse()
            .map_err(|e| invalid("control.vip_range", e))?;
        let health_interval = match &raw.control.health_interval {
            Some(s) => parse_duration("control.health_interval", s)?,
            None => Duration::from_secs(1),
        };
        let gateway_listen = parse_addr(
            "gateway.listen",
            raw.gateway.listen.as_deref(),
            "127.0.0.1:0",
        )?;
        let gateway_advertise = match raw.gateway.advertise.as_deref() {
            Some(s) => Some(parse_addr("gateway.advertise", Some(s), "")?),
            None => None,
        };
        if let Some(adv) = gateway_advertise {
            if adv.port() == 0 || adv.ip().is_unspecified() {
                return Err(invalid(
                    "gateway.advertise",
                    "must be a concrete address and port peers can reach, e.g. 203.0.113.5:4433",
                ));
            }
        }
        let node_name: NodeName = raw
            .node
            .name
            .as_deref()
            .unwrap_or("node-1")
            .parse()
            .map_err(|e| invalid("node.name", e))?;
        let zone = raw
            .dns
            .zone
            .unwrap_or_else(|| "clusterset.local".to_owned());
        ferry_dns::ZoneConfig::new(&zone, vec![]).map_err(|e| invalid("dns.zone", e))?;
        let dns_ttl = match raw.dns.ttl.as_deref() {
            None => Duration::from_secs(5),
            Some(s) => humantime::parse_duration(s)
                .ok()
                .filter(|d| (1..=86_400).contains(&d.as_secs()) && d.subsec_nanos() == 0)
                .ok_or_else(|| {
                    invalid(
                        "dns.ttl",
                        format!(
                            "`{s}` is not a TTL; use whole seconds between 1s and 24h, e.g. \"5s\""
                        ),
                    )
                })?,
        };
        let forward_from = match raw.dns.forward_from {
            None => ferry_dns::private_networks(),
            Some(nets) => nets
                .iter()
                .map(|s| {
                    s.parse::<ipnet::IpNet>().map_err(|_| {
                        invalid(
                            "dns.forward_from",
                            format!("`{s}` is not a network; use CIDR notation, e.g. 10.0.0.0/8"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?,
        };
        let admin_listen = parse_addr("admin.listen", raw.admin.listen.as_deref(), "127.0.0.1:0")?;
        use ferry_gateway::access::Mode;
        let access_log = match raw.telemetry.access_log.as_deref() {
            None | Some("failures") => Mode::Failures,
            Some("all") => Mode::All,
            Some("off") => Mode::Off,
            Some(other) => {
                return Err(invalid(
                    "telemetry.access_log",
                    format!("`{other}` is not a setting; use failures (the default: refusals and failed calls), all, or off"),
                ))
            }
        };
        let otlp_endpoint = match raw.telemetry.otlp_endpoint {
            None => None,
            Some(e) if e.starts_with("http://") && e.len() > "http://".len() => Some(e),
            Some(e) => {
                return Err(invalid(
                    "telemetry.otlp_endpoint",
                    format!("`{e}` is not an OTLP/gRPC address; expected http://host:port, e.g. http://127.0.0.1:4317 (a local collector; TLS is not supported)"),
                ))
            }
        };
        let dns = DnsConfig {
            enabled: raw.dns.enabled.unwrap_or(true),
            listen: parse_addr("dns.listen", raw.dns.listen.as_deref(), "127.0.0.1:0")?,
            zone,
            ttl: dns_ttl,
            rate_limit: raw.dns.rate_limit.unwrap_or(2000),
            forward_from,
            upstreams: raw
                .dns
                .upstreams
                .unwrap_or_default()
                .iter()
                .map(|s| parse_upstream(s))
                .collect::<Result<_, _>>()?,
        };
        if let Some(own) = dns.upstreams.iter().find(|u| **u == dns.listen) {
            return Err(invalid(
                "dns.upstreams",
                format!("{own} is this DNS server's own listen address; forwarding to it would loop. List real resolvers"),
            ));
        }
        let (limits, vip_quarantine) = federation(&raw.federation)?;
        let drain_timeout = match raw.node.drain_timeout.as_deref() {
            None => Duration::from_secs(5),
            Some(s) => parse_duration("node.drain_timeout", s)?,
        };
        let idle = |key: &str, value: Option<&str>| -> Result<Duration, ConfigError> {
            let d = match value {
                None => return Ok(Duration::from_secs(3600)),
                Some(s) => parse_duration(key, s)?,
            };
            if d < Duration::from_secs(1) {
                return Err(invalid(key, "must be at least 1s (the default is 1h)"));
            }
            Ok(d)
        };
        let node_idle_timeout = idle("node.idle_timeout", raw.node.idle_timeout.as_deref())?;
        let node_max_in_flight = match raw.node.max_in_flight_per_endpoint {
            None => DEFAULT_MAX_IN_FLIGHT,
            Some(n @ 1..=1_000_000) => n,
            Some(n) => {
                return Err(invalid(
                    "node.max_in_flight_per_endpoint",
                    format!("{n} is not 1 to 1000000"),
                ))
            }
        };
        let gateway_idle_timeout =
            idle("gateway.idle_timeout", raw.gateway.idle_timeout.as_deref())?;
        let mut seen = BTreeSet::new();
        let mut services = Vec::new();
        for (i, s) in raw.services.into_iter().enumerate() {
            let key = format!("service[{i}]");
            let name: ServiceName = s
                .name
                .parse()
                .map_err(|e| invalid(format!("{key}.name"), e))?;
            if !seen.insert(name.clone()) {
                return Err(invalid(
                    format!("{key}.name"),
                    format!("service `{name}` is declared twice"),
                ));
            }
            let ports = s
                .ports
                .iter()
                .map(|p| p.parse::<ServicePort>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("{key}.ports"), e))?;
            let endpoints = s
                .endpoints
                .iter()
                .map(|p| p.parse::<EndpointAddr>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| invalid(format!("{key}.endpoints"), e))?;
            let spec = ServiceSpec::with_headless(name, ports, endpoints, s.headless)
                .map_err(|e| invalid(key.clone(), e))?;
            services.push(DeclaredService {
                spec,
                export: s.export,
            });
        }
        let policies = policy::policies(raw.policies)?;
        Ok(Config {
            cluster,
            trust_dir: resolve(&raw.trust.dir),
            cert_ttl,
            socket,
            data_dir,
            vip_range,
            health_interval,
            gateway_listen,
            gateway_advertise,
            node_name,
            drain_timeout,
            node_idle_timeout,
            node_max_in_flight,
            gateway_idle_timeout,
            dns,
            admin_listen,
            access_log,
            otlp_endpoint,
            limits,
            vip_quarantine,
            services,
            policies,
            file: None,
        })
    }
}

/// The `[federation]` section: per-link bounds and the VIP quarantine.
fn federation(raw: &RawFederation) -> Result<(ImportLimits, Duration), ConfigError> {
    fn bound<T: Copy + PartialOrd + From<u16> + std::fmt::Display>(
        key: &str,
        value: Option<T>,
        default: T,
        max: T,
    ) -> Result<T, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) if v >= T::from(1) && v <= max => Ok(v),
            Some(v) => Err(invalid(
                format!("federation.{key}"),
                format!("{v} is out of range; use 1 to {max}"),
            )),
        }
    }
    let d = ImportLimits::DEFAULT;
    let rate = bound(
        "max_link_messages_per_second",
        raw.max_link_messages_per_second,
        d.frames_per_second,
        10_000,
    )?;
    let limits = ImportLimits {
        services: bound(
            "max_imported_services",
            raw.max_imported_services,
            d.services,
            1_000_000,
        )?,
        ports: bound(
            "max_ports_per_service",
            raw.max_ports_per_service,
            d.ports,
            1024,
        )?,
        endpoints: bound(
            "max_endpoints_per_service",
            raw.max_endpoints_per_service,
            d.endpoints,
            100_000,
        )?,
        gateways: bound("max_peer_gateways", raw.max_peer_gateways, d.gateways, 256)?,
        frames_per_second: rate,
        frame_burst: rate.saturating_mul(4),
        allow_loopback: raw.allow_loopback_gateways.unwrap_or(false),
    };
    let quarantine = match raw.vip_quarantine.as_deref() {
        None => Duration::from_secs(600),
        Some(s) => parse_duration("federation.vip_quarantine", s)?,
    };
    if quarantine < Duration::from_secs(60) {
        return Err(invalid(
            "federation.vip_quarantine",
            "must be at least 1m: clients cache addresses longer than DNS TTLs; the default is 10m",
        ));
    }
    Ok((limits, quarantine))
}

/// An upstream resolver: `ip:port`, or a bare IP meaning port 53.
fn parse_upstream(s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            invalid(
                "dns.upstreams",
                format!("`{s}` is not a resolver address; write ip or ip:port, e.g. \"1.1.1.1\" or \"10.0.0.2:53\""),
            )
        })
}

fn parse_addr(key: &str, value: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = value.unwrap_or(default);
    s.parse().map_err(|_| {
        invalid(
            key,
            format!("`{s}` is not an address; expected ip:port, e.g. 127.0.0.1:4433"),
        )
    })
}

#[cfg(test)]
mod tests;
