//! The mesh zone: every name the DNS server answers with authority, built from one
//! [`MeshSnapshot`].
//!
//! [`Zone::build`] is a pure function of the snapshot and the zone settings; the server
//! rebuilds the zone whenever a snapshot arrives and answers every query from the current
//! build with one hash lookup. This module must not do I/O, read the clock or keep state
//! between builds.
//!
//! Names follow the Kubernetes Multi-Cluster Services DNS specification (schema 1.0.0):
//!
//! | name | records |
//! |---|---|
//! | `<svc>.<ns>.svc.<zone>` | A/AAAA: the service VIP (headless: every ready endpoint's VIP); SRV: one per port (headless: per ready endpoint) |
//! | `_<port>._<tcp\|udp>.<svc>.<ns>.svc.<zone>` | SRV per port, target the service (headless: each endpoint) |
//! | `<hostname>.<cluster>.<svc>.<ns>.svc.<zone>` | headless only: A/AAAA of that endpoint's VIP |
//! | `dns-version.<zone>` | TXT `"1.0.0"` |
//! | `<zone>` | SOA, NS |
//! | reverse name of a VIP | PTR to the service or endpoint name |
//!
//! A service is in the zone only while it is exported here or imported from a peer, and some
//! cluster has a healthy endpoint for it. `<cluster>.<svc>.<ns>.svc.<zone>` never exists (the
//! specification reserves it), even when endpoint names sit below it.

use std::collections::HashMap;
use std::net::IpAddr;

use ferry_federation::{ClusterId, EndpointRecord, MeshSnapshot, Protocol, ServiceRecord};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record, RecordType};
use ipnet::IpNet;

/// The MCS DNS schema version this server implements.
pub const DNS_SCHEMA_VERSION: &str = "1.0.0";

/// Settings that shape the zone.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// The mesh zone, e.g. `clusterset.local.`.
    pub origin: Name,
    /// TTL of positive answers, in seconds.
    pub ttl: u32,
    /// TTL of negative answers (the SOA's minimum and its own TTL), in seconds.
    pub negative_ttl: u32,
    /// Address ranges VIPs come from; PTR queries for addresses inside them are answered here.
    pub vip_ranges: Vec<IpNet>,
}

impl ZoneConfig {
    /// Settings for `zone` (a domain name, with or without the final dot).
    pub fn new(zone: &str, vip_ranges: Vec<IpNet>) -> Result<ZoneConfig, InvalidZone> {
        let mut origin = Name::from_ascii(zone).map_err(|e| InvalidZone {
            zone: zone.chars().take(80).collect(),
            reason: e.to_string(),
        })?;
        origin.set_fqdn(true);
        if origin.is_root() {
            return Err(InvalidZone {
                zone: zone.to_owned(),
                reason: "the root zone cannot be the mesh zone".into(),
            });
        }
        // Leave room for `<hostname>.<cluster>.<svc>.<ns>.svc.` below the zone.
        if origin.len() > 120 {
            return Err(InvalidZone {
                zone: zone.chars().take(80).collect(),
                reason: "longer than 120 characters; mesh names below it would not fit in 253"
                    .into(),
            });
        }
        Ok(ZoneConfig {
            origin: origin.to_lowercase(),
            ttl: 5,
            negative_ttl: 5,
            vip_ranges,
        })
    }
}

/// A zone name that cannot serve as the mesh zone.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid DNS zone {zone:?}: {reason}; use a domain name such as clusterset.local")]
pub struct InvalidZone {
    zone: String,
    reason: String,
}

/// What the zone says about one question.
#[derive(Debug, PartialEq)]
pub enum Lookup<'z> {
    /// The name is outside every zone served here: forward it or refuse it.
    NotOurs,
    /// The name is ours but no snapshot has arrived yet: SERVFAIL, never NXDOMAIN.
    NotReady,
    /// Records of the asked type, and records for the additional section.
    Answer {
        /// The answer section.
        answers: &'z [Record],
        /// The additional section (addresses of SRV targets).
        additionals: &'z [Record],
    },
    /// The name exists without records of the asked type.
    NoData {
        /// The SOA for the authority section.
        soa: &'z Record,
    },
    /// The name does not exist.
    NxDomain {
        /// The SOA for the authority section.
        soa: &'z Record,
    },
}

#[derive(Debug)]
struct RrSet {
    rtype: RecordType,
    records: Vec<Record>,
    additionals: Vec<Record>,
}

#[derive(Debug, Default)]
struct Node {
    rrsets: Vec<RrSet>,
}

impl Node {
    fn rrset_mut(&mut self, rtype: RecordType) -> &mut RrSet {
        match self.rrsets.iter().position(|r| r.rtype == rtype) {
            Some(i) => &mut self.rrsets[i],
            None => {
                self.rrsets.push(RrSet {
                    rtype,
                    records: Vec::new(),
                    additionals: Vec::new(),
                });
                self.rrsets.last_mut().expect("just pushed")
            }
        }
    }
}

/// The names the server answers with authority, as of one snapshot (or none yet).
#[derive(Debug)]
pub struct Zone {
    origin: LowerName,
    cfg: ZoneConfig,
    /// The snapshot version this zone was built from; `None` before the first snapshot.
    version: Option<u64>,
    soa: Record,
    reverse_soa: Vec<(IpNet, LowerName, Record)>,
    nodes: HashMap<LowerName, Node>,
}

impl Zone {
    /// The zone before any snapshot: every mesh name gets SERVFAIL.
    pub fn pending(cfg: &ZoneConfig) -> Zone {
        Zone::empty(cfg, None)
    }

    /// The zone for `snapshot`.
    pub fn build(cfg: &ZoneConfig, snapshot: &MeshSnapshot) -> Zone {
        let mut zone = Zone::empty(cfg, Some(snapshot.version));
        let origin = cfg.origin.clone();
        let soa = zone.soa.clone();
        zone.node(&origin)
            .rrset_mut(RecordType::SOA)
            .records
            .push(soa);
        let ns_name = ns_name(&origin);
        zone.node(&origin)
            .rrset_mut(RecordType::NS)
            .records
            .push(Record::from_rdata(
                origin.clone(),
                cfg.ttl,
                RData::NS(NS(ns_name)),
            ));
        if let Ok(version) = Name::from_ascii("dns-version").and_then(|n| n.append_name(&origin)) {
            let txt = Record::from_rdata(
                version.clone(),
                cfg.ttl,
                RData::TXT(TXT::new(vec![DNS_SCHEMA_VERSION.to_owned()])),
            );
            zone.node(&version)
                .rrset_mut(RecordType::TXT)
                .records
                .push(txt);
        }
        for service in &snapshot.services {
            if let Err(e) = zone.add_service(&snapshot.cluster, service) {
                tracing::warn!(service = %service.name, error = %e, "service left out of the mesh zone");
            }
        }
        zone
    }

    fn empty(cfg: &ZoneConfig, version: Option<u64>) -> Zone {
        let origin = cfg.origin.clone();
        let soa = soa_record(&origin, cfg, version.unwrap_or(0));
        let reverse_soa = cfg
            .vip_ranges
            .iter()
            .map(|net| {
                let name = reverse_origin(net);
                let soa = soa_record(&name, cfg, version.unwrap_or(0));
                (*net, LowerName::new(&name), soa)
            })
            .collect();
        Zone {
            origin: LowerName::new(&origin),
            cfg: cfg.clone(),
            version,
            soa,
            reverse_soa,
            nodes: HashMap::new(),
        }
    }

    /// The snapshot version this zone reflects, if any.
    pub fn version(&self) -> Option<u64> {
        self.version
    }

    /// Number of names in the zone (for logs and metrics).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the zone holds no names at all (before the first snapshot).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `name` falls in a zone served here (the mesh zone or a VIP reverse zone).
    pub fn is_ours(&self, name: &LowerName) -> bool {
        self.origin.zone_of(name) || self.reverse_soa_for(name).is_some()
    }

    /// Answers one question. `RecordType::ANY` gets one RRset (RFC 8482).
    pub fn lookup(&self, name: &LowerName, rtype: RecordType) -> Lookup<'_> {
        let soa = if self.origin.zone_of(name) {
            &self.soa
        } else if let Some(soa) = self.reverse_soa_for(name) {
            soa
        } else {
            return Lookup::NotOurs;
        };
        if self.version.is_none() {
            return Lookup::NotReady;
        }
        let Some(node) = self.nodes.get(name) else {
            return Lookup::NxDomain { soa };
        };
        let rrset = if rtype == RecordType::ANY {
            node.rrsets.first()
        } else {
            node.rrsets.iter().find(|r| r.rtype == rtype)
        };
        match rrset {
            Some(r) => Lookup::Answer {
                answers: &r.records,
                additionals: &r.additionals,
            },
            None => Lookup::NoData { soa },
        }
    }

    /// The SOA of the reverse zone holding `name`, when `name` is the reverse name of an
    /// address inside a VIP range.
    fn reverse_soa_for(&self, name: &LowerName) -> Option<&Record> {
        let ip = parse_reverse(&Name::from(name))?;
        self.reverse_soa
            .iter()
            .find(|(net, _, _)| net.contains(&ip))
            .map(|(_, _, soa)| soa)
    }

    fn node(&mut self, name: &Name) -> &mut Node {
        self.nodes.entry(LowerName::new(name)).or_default()
    }

    /// Adds the names of one service, if it is answerable. Every name is built before any is
    /// inserted, so a service whose names do not fit is left out whole, never half in.
    fn add_service(
        &mut self,
        here: &ClusterId,
        service: &ServiceRecord,
    ) -> Result<(), hickory_proto::ProtoError> {
        if service.headless {
            return self.add_headless(here, service);
        }
        if !answerable(service) {
            return Ok(());
        }
        let names = ServiceNames::new(&self.cfg.origin, service)?;
        let ttl = self.cfg.ttl;
        let base = names.insert_skeleton(self);
        let address = address_record(&base, service.vip, ttl);
        self.node(&base)
            .rrset_mut(address.record_type())
            .records
            .push(address.clone());
        for (srv_name, port) in names.srv.iter().zip(&service.ports) {
            let srv = SRV::new(0, 100, port.port, base.clone());
            let set = self.node(srv_name).rrset_mut(RecordType::SRV);
            set.records
                .push(Record::from_rdata(srv_name.clone(), ttl, RData::SRV(srv)));
            set.additionals.push(address.clone());
        }
        // The bare service name answers SRV too: one record, the first port (what the MCS
        // conformance suite asks).
        if let Some(port) = service.ports.first() {
            let bare = SRV::new(0, 100, port.port, base.clone());
            let set = self.node(&base).rrset_mut(RecordType::SRV);
            set.records
                .push(Record::from_rdata(base.clone(), ttl, RData::SRV(bare)));
            set.additionals.push(address);
        }
        self.add_ptr(service.vip, &base);
        Ok(())
    }

    /// A headless service: no service VIP in DNS; every ready endpoint gets
    /// `<hostname>.<cluster>.<svc>.<ns>.svc.<zone>` and its own VIP, and the service name
    /// answers all of them. Local endpoints count only when the service is exported here.
    fn add_headless(
        &mut self,
        here: &ClusterId,
        service: &ServiceRecord,
    ) -> Result<(), hickory_proto::ProtoError> {
        let ready: Vec<&EndpointRecord> = service
            .endpoints
            .iter()
            .filter(|e| e.healthy && (&e.cluster != here || service.exported))
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        let names = ServiceNames::new(&self.cfg.origin, service)?;
        let ttl = self.cfg.ttl;
        let targets = ready
            .iter()
            .map(|e| {
                let name = names
                    .base
                    .prepend_label(e.cluster.as_str())?
                    .prepend_label(e.hostname.as_str())?;
                let address = address_record(&name, e.vip, ttl);
                Ok((name, address, e.vip))
            })
            .collect::<Result<Vec<_>, hickory_proto::ProtoError>>()?;
        let base = names.insert_skeleton(self);
        let weight = u16::try_from(100 / targets.len()).unwrap_or(1).max(1);
        for (target, address, vip) in &targets {
            self.node(target)
                .rrset_mut(address.record_type())
                .records
                .push(address.clone());
            let at_base = address_record(&base, *vip, ttl);
            self.node(&base)
                .rrset_mut(at_base.record_type())
                .records
                .push(at_base);
            self.add_ptr(*vip, target);
        }
        for (i, (srv_name, port)) in names.srv.iter().zip(&service.ports).enumerate() {
            for (target, address, _) in &targets {
                let rdata = SRV::new(0, weight, port.port, target.clone());
                let set = self.node(srv_name).rrset_mut(RecordType::SRV);
                set.records.push(Record::from_rdata(
                    srv_name.clone(),
                    ttl,
                    RData::SRV(rdata.clone()),
                ));
                set.additionals.push(address.clone());
                // The bare name: one record per ready endpoint, on the first port.
                if i == 0 {
                    let set = self.node(&base).rrset_mut(RecordType::SRV);
                    set.records
                        .push(Record::from_rdata(base.clone(), ttl, RData::SRV(rdata)));
                    set.additionals.push(address.clone());
                }
            }
        }
        Ok(())
    }

    fn add_ptr(&mut self, vip: IpAddr, target: &Name) {
        if !self.cfg.vip_ranges.iter().any(|net| net.contains(&vip)) {
            return;
        }
        let name = reverse_name(vip);
        let ptr = Record::from_rdata(name.clone(), self.cfg.ttl, RData::PTR(PTR(target.clone())));
        self.node(&name)
            .rrset_mut(RecordType::PTR)
            .records
            .push(ptr);
    }
}

/// Every name of one service, built before any goes into the zone.
struct ServiceNames {
    /// `svc.<zone>`.
    svc_zone: Name,
    /// `<ns>.svc.<zone>`.
    namespace: Name,
    /// `<svc>.<ns>.svc.<zone>`.
    base: Name,
    /// `_<port>._<proto>.<base>`, one per port, in port order.
    srv: Vec<Name>,
    /// `_tcp.<base>` / `_udp.<base>` for the protocols in use.
    proto: Vec<Name>,
}

impl ServiceNames {
    fn new(origin: &Name, service: &ServiceRecord) -> Result<Self, hickory_proto::ProtoError> {
        let svc_zone = Name::from_ascii("svc")?.append_name(origin)?;
        let namespace = svc_zone.prepend_label(service.name.namespace().as_str())?;
        let base = namespace.prepend_label(service.name.name().as_str())?;
        let mut srv = Vec::with_capacity(service.ports.len());
        let mut proto = Vec::new();
        for port in &service.ports {
            let p = base.prepend_label(proto_label(port.protocol))?;
            srv.push(p.prepend_label(format!("_{}", port.name))?);
            if !proto.contains(&p) {
                proto.push(p);
            }
        }
        Ok(ServiceNames {
            svc_zone,
            namespace,
            base,
            srv,
            proto,
        })
    }

    /// Inserts the empty non-terminals (`svc.<zone>`, `<ns>.svc.<zone>`, `_tcp.<base>`, ...)
    /// so they answer NOERROR without data rather than NXDOMAIN (RFC 8020: NXDOMAIN would
    /// deny the SRV names below them); returns the service name.
    fn insert_skeleton(&self, zone: &mut Zone) -> Name {
        zone.node(&self.svc_zone);
        zone.node(&self.namespace);
        for p in &self.proto {
            zone.node(p);
        }
        self.base.clone()
    }
}

/// Whether a (non-headless) service belongs in the zone: exported here or imported from a
/// peer, with a healthy endpoint in some cluster.
pub fn answerable(service: &ServiceRecord) -> bool {
    let local = service.exported && service.local.iter().any(|e| e.healthy);
    let remote = service
        .remote
        .iter()
        .any(|r| r.healthy.values().any(|&n| n > 0));
    local || remote
}

fn proto_label(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Udp => "_udp",
        Protocol::Tcp | Protocol::Http | Protocol::Grpc => "_tcp",
    }
}

fn address_record(name: &Name, ip: IpAddr, ttl: u32) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), ttl, rdata)
}

fn ns_name(origin: &Name) -> Name {
    Name::from_ascii("ns.dns")
        .and_then(|n| n.append_name(origin))
        .unwrap_or_else(|_| origin.clone())
}

fn soa_record(origin: &Name, cfg: &ZoneConfig, version: u64) -> Record {
    let rname = Name::from_ascii("hostmaster")
        .and_then(|n| n.append_name(&cfg.origin))
        .unwrap_or_else(|_| cfg.origin.clone());
    let soa = SOA::new(
        ns_name(&cfg.origin),
        rname,
        // Serial arithmetic wraps (RFC 1982); the low bits of the version do.
        version as u32,
        60,
        10,
        3600,
        cfg.negative_ttl,
    );
    Record::from_rdata(origin.clone(), cfg.negative_ttl, RData::SOA(soa))
}

/// `d.c.b.a.in-addr.arpa.` for `a.b.c.d`; nibbles under `ip6.arpa.` for IPv6.
pub fn reverse_name(ip: IpAddr) -> Name {
    let text = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa.")
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                s.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            s.push_str("ip6.arpa.");
            s
        }
    };
    Name::from_ascii(text).expect("reverse names are valid")
}

/// The octet- (or nibble-) aligned reverse zone enclosing `net`.
fn reverse_origin(net: &IpNet) -> Name {
    let full = reverse_name(net.network());
    let labels = match net {
        IpNet::V4(n) => 2 + usize::from(n.prefix_len() / 8),
        IpNet::V6(n) => 2 + usize::from(n.prefix_len() / 4),
    };
    full.trim_to(labels)
}

/// The address a full reverse name stands for, if it is one.
fn parse_reverse(name: &Name) -> Option<IpAddr> {
    let labels: Vec<&[u8]> = name.iter().collect();
    let n = labels.len();
    if n == 6 && eq(labels[4], b"in-addr") && eq(labels[5], b"arpa") {
        let mut octets = [0u8; 4];
        for (i, label) in labels[..4].iter().enumerate() {
            let s = std::str::from_utf8(label).ok()?;
            if s.len() > 1 && s.starts_with('0') {
                return None;
            }
            octets[3 - i] = s.parse().ok()?;
        }
        return Some(IpAddr::from(octets));
    }
    if n == 34 && eq(labels[32], b"ip6") && eq(labels[33], b"arpa") {
        let mut bytes = [0u8; 16];
        for (i, label) in labels[..32].iter().enumerate() {
            let [c] = label else { return None };
            let nibble = (*c as char).to_digit(16)? as u8;
            let byte = 15 - i / 2;
            if i % 2 == 0 {
                bytes[byte] |= nibble;
            } else {
                bytes[byte] |= nibble << 4;
            }
        }
        return Some(IpAddr::from(bytes));
    }
    None
}

fn eq(a: &[u8], b: &[u8]) -> bool {
    a.eq_ignore_ascii_case(b)
}

#[cfg(test)]
mod tests;
