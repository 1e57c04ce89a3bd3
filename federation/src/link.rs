//! The link/sync state machine: keeps one peer's view of our exports current and ours of its.
//!
//! [`LinkSync`] is sans-I/O in the quinn-proto style: the shell feeds it `handle_*(now, ..)`
//! and drains `poll_transmit` / `poll_event` / `poll_timeout`. It must not read the clock,
//! touch sockets or spawn anything; it also never trusts the transport to be lossless, so
//! duplicated, lost or reordered messages only cost a resync.
//!
//! Protocol: on connect each side sends `Hello` then a full `Snapshot` at its current `seq`.
//! Every change bumps `seq` and is sent as a `Delta`. `Heartbeat { seq }` goes out every
//! `heartbeat`, so a receiver that missed a delta notices and asks for `Resync`. Imports live
//! for a lease after the last message from the peer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::limits::{
    bound_exports, check_export, check_gateways, FrameBudget, ImportLimits, LimitExceeded,
};
use crate::model::{ClusterId, ExportedService, ServiceName};
use crate::wire::{GoodbyeReason, LinkMessage};

/// The longest lease a peer may ask for; a bogus `lease_ms` must not pin stale imports.
pub const MAX_LEASE: Duration = Duration::from_secs(300);

/// Timers of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    /// How often a heartbeat is sent while connected.
    pub heartbeat: Duration,
    /// How long imports stay after the last message from the peer (at least; the peer's
    /// advertised lease is used when longer, up to [`MAX_LEASE`]).
    pub lease: Duration,
    /// What the peer may make us hold.
    pub limits: ImportLimits,
}

impl Default for LinkConfig {
    fn default() -> Self {
        LinkConfig {
            heartbeat: Duration::from_secs(1),
            lease: Duration::from_secs(5),
            limits: ImportLimits::default(),
        }
    }
}

/// Something the shell must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkEvent {
    /// The peer (re)introduced itself.
    PeerHello {
        /// The peer.
        peer: ClusterId,
        /// The peer's session (new every time its process starts).
        session: u64,
        /// Its gateways.
        gateways: Vec<SocketAddr>,
        /// SHA-256 (hex) of the roots of its trust bundle (checked: at most
        /// [`MAX_PEER_ROOTS`], each 64 lowercase hex digits); empty if it did not say.
        roots: Vec<String>,
    },
    /// The peer's exports changed; [`LinkSync::imports`] has the complete current set.
    Imports {
        /// The peer.
        peer: ClusterId,
    },
    /// The peer was silent past the lease; its imports are gone.
    ImportsWithdrawn {
        /// The peer.
        peer: ClusterId,
    },
    /// The peer removed the link on its side.
    PeerRemovedLink {
        /// The peer.
        peer: ClusterId,
    },
    /// Something the peer sent went over a bound and was refused (one event per refusal).
    Refused {
        /// The peer.
        peer: ClusterId,
        /// Which bound, and what was refused.
        limit: LimitExceeded,
    },
    /// The set of bounds the peer is currently over changed (empty: within all of them).
    LimitsChanged {
        /// The peer.
        peer: ClusterId,
        /// Every bound it is over, sorted.
        limited: Vec<LimitExceeded>,
    },
}

/// The peer broke the protocol; the shell should close the connection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The peer says it is another cluster.
    #[error(
        "the peer says it is cluster {got}, but this link is for {expected}; \
         check the gateway addresses configured for the link"
    )]
    UnexpectedPeer {
        /// The cluster this link is for.
        expected: ClusterId,
        /// The cluster the peer claimed.
        got: ClusterId,
    },
    /// The peer sent something the protocol does not allow.
    #[error("the peer broke the link protocol ({0}); the connection will be closed and retried")]
    ProtocolViolation(&'static str),
}

/// The sync state machine for one peer link.
#[derive(Debug)]
pub struct LinkSync {
    local: ClusterId,
    peer: ClusterId,
    session: u64,
    gateways: Vec<SocketAddr>,
    config: LinkConfig,
    connected: bool,
    // Outbound: our exports and their sequence number (bumped on every change).
    exports: Vec<ExportedService>,
    send_seq: u64,
    next_heartbeat: Option<Instant>,
    transmit: VecDeque<LinkMessage>,
    // Inbound: what the peer told us.
    peer_session: Option<u64>,
    peer_lease: Duration,
    /// Seq of the last applied snapshot/delta in the peer's current session.
    recv_seq: Option<u64>,
    /// A gap was seen: deltas are ignored until a snapshot arrives.
    awaiting_snapshot: bool,
    resync_sent_at: Option<Instant>,
    /// The peer's exports that passed the bounds, by name. A delta changes only the names
    /// it carries: the work per message is proportional to the message, not to the imports.
    imports: BTreeMap<ServiceName, ExportedService>,
    /// Services refused on their own (ports, endpoints), while the peer still exports them;
    /// at most `limits.services` of them are remembered.
    refused: BTreeMap<ServiceName, LimitExceeded>,
    /// Whether names were refused for the services bound since the last snapshot, and how
    /// many the peer offered at least.
    services_over: Option<LimitExceeded>,
    /// Whether `imports` have been reported to the shell and not withdrawn.
    imports_live: bool,
    lease_deadline: Option<Instant>,
    events: VecDeque<LinkEvent>,
    /// Our bundle's root fingerprints, for `Hello`.
    roots: Vec<String>,
    // Bounds: what the peer's current exports and hello went over, and flow-control
    // refusals (rate, resync) seen in this connection.
    budget: FrameBudget,
    import_limits: Vec<LimitExceeded>,
    gateway_limits: Vec<LimitExceeded>,
    flow_limits: BTreeSet<LimitExceeded>,
    limited: Vec<LimitExceeded>,
}

/// Roots a peer's hello may name.
pub const MAX_PEER_ROOTS: usize = 16;

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl LinkSync {
    /// A link from `local` to `peer`; `session` must be new each time this process starts.
    pub fn new(
        local: ClusterId,
        peer: ClusterId,
        session: u64,
        gateways: Vec<SocketAddr>,
        config: LinkConfig,
    ) -> Self {
        LinkSync {
            local,
            peer,
            session,
            gateways,
            roots: Vec::new(),
            config,
            connected: false,
            exports: Vec::new(),
            send_seq: 0,
            next_heartbeat: None,
            transmit: VecDeque::new(),
            peer_session: None,
            peer_lease: config.lease,
            recv_seq: None,
            awaiting_snapshot: false,
            resync_sent_at: None,
            imports: BTreeMap::new(),
            refused: BTreeMap::new(),
            services_over: None,
            imports_live: false,
            lease_deadline: None,
            events: VecDeque::new(),
            budget: FrameBudget::new(&config.limits),
            import_limits: Vec::new(),
            gateway_limits: Vec::new(),
            flow_limits: BTreeSet::new(),
            limited: Vec::new(),
        }
    }

    /// Says which roots this cluster's trust bundle holds (SHA-256, hex), sent in every
    /// `Hello` from the next connection on.
    /// Duplicates are sent once, and at most [`MAX_PEER_ROOTS`] (what a peer accepts).
    pub fn with_roots(mut self, mut roots: Vec<String>) -> Self {
        roots.sort();
        roots.dedup();
        roots.truncate(MAX_PEER_ROOTS);
        self.roots = roots;
        self
    }

    /// A connection to the peer is up: queues `Hello`, then a `Snapshot` of current exports.
    pub fn handle_connected(&mut self, now: Instant) {
        self.connected = true;
        self.transmit.clear();
        self.transmit.push_back(self.hello());
        self.transmit.push_back(self.snapshot());
        self.next_heartbeat = Some(now + self.config.heartbeat);
        self.resync_sent_at = None;
        self.budget = FrameBudget::new(&self.config.limits);
        self.flow_limits.clear();
        self.update_limited();
    }

    /// The connection is gone: nothing more is sent; imports stay until the lease runs out.
    pub fn handle_disconnected(&mut self, _now: Instant) {
        self.connected = false;
        self.transmit.clear();
        self.next_heartbeat = None;
    }

    /// Replaces our exports; queues a `Delta` when connected (nothing if unchanged).
    pub fn set_local_exports(&mut self, _now: Instant, services: Vec<ExportedService>) {
        let services = canonical(services);
        let old: BTreeMap<&ServiceName, &ExportedService> =
            self.exports.iter().map(|s| (&s.name, s)).collect();
        let new_names: BTreeSet<&ServiceName> = services.iter().map(|s| &s.name).collect();
        let upserts: Vec<ExportedService> = services
            .iter()
            .filter(|s| old.get(&s.name) != Some(s))
            .cloned()
            .collect();
        let removals: Vec<ServiceName> = old
            .keys()
            .filter(|n| !new_names.contains(*n))
            .map(|n| (*n).clone())
            .collect();
        if upserts.is_empty() && removals.is_empty() {
            return;
        }
        self.exports = services;
        self.send_seq += 1;
        if self.connected {
            self.transmit.push_back(LinkMessage::Delta {
                seq: self.send_seq,
                upserts,
                removals,
            });
        }
    }

    /// Replaces the gateways we advertise; re-sends `Hello` when connected and changed.
    pub fn set_gateways(&mut self, gateways: Vec<SocketAddr>) {
        if gateways == self.gateways {
            return;
        }
        self.gateways = gateways;
        if self.connected {
            self.transmit.push_back(self.hello());
        }
    }

    /// A message from the peer arrived. Messages over the peer's rate are dropped (and
    /// reported) before anything else looks at them.
    pub fn handle_message(&mut self, now: Instant, msg: LinkMessage) -> Result<(), LinkError> {
        if !self.budget.take(now, &self.config.limits) {
            self.refuse_flow(LimitExceeded::FrameRate {
                per_second: self.config.limits.frames_per_second,
            });
            return Ok(());
        }
        match msg {
            LinkMessage::Hello {
                cluster,
                session,
                gateways,
                lease_ms,
                roots,
            } => {
                if cluster != self.peer {
                    return Err(LinkError::UnexpectedPeer {
                        expected: self.peer.clone(),
                        got: cluster,
                    });
                }
                if lease_ms == 0 {
                    return Err(LinkError::ProtocolViolation("hello with a zero lease"));
                }
                if roots.len() > MAX_PEER_ROOTS || !roots.iter().all(|r| is_sha256_hex(r)) {
                    return Err(LinkError::ProtocolViolation(
                        "hello with more than 16 roots or a root fingerprint that is not 64 lowercase hex digits",
                    ));
                }
                if self.peer_session.is_some_and(|s| s != session) {
                    // The peer restarted: its sequence numbers start over.
                    self.recv_seq = None;
                    self.awaiting_snapshot = false;
                    self.resync_sent_at = None;
                }
                self.peer_session = Some(session);
                self.peer_lease = Duration::from_millis(lease_ms)
                    .clamp(self.config.lease, MAX_LEASE.max(self.config.lease));
                let (gateways, exceeded) = check_gateways(&gateways, &self.config.limits);
                self.refuse_all(&exceeded);
                self.gateway_limits = exceeded;
                self.update_limited();
                self.events.push_back(LinkEvent::PeerHello {
                    peer: self.peer.clone(),
                    session,
                    gateways,
                    roots,
                });
            }
            LinkMessage::Snapshot { seq, services } => {
                check_unique(&services, &[])?;
                if self.recv_seq.is_none_or(|last| seq >= last) {
                    self.recv_seq = Some(seq);
                    self.awaiting_snapshot = false;
                    self.resync_sent_at = None;
                    self.replace_imports(canonical(services));
                }
            }
            LinkMessage::Delta {
                seq,
                upserts,
                removals,
            } => {
                check_unique(&upserts, &removals)?;
                match self.recv_seq {
                    Some(last) if !self.awaiting_snapshot => {
                        if seq == last + 1 {
                            self.recv_seq = Some(seq);
                            self.apply_delta(now, upserts, removals);
                        } else if seq > last + 1 {
                            self.awaiting_snapshot = true;
                            self.request_resync(now);
                        }
                        // seq <= last: a duplicate or a late copy, already applied.
                    }
                    _ => self.request_resync(now),
                }
            }
            LinkMessage::Heartbeat { seq } => match self.recv_seq {
                Some(last) if !self.awaiting_snapshot => {
                    if seq > last {
                        self.awaiting_snapshot = true;
                        self.request_resync(now);
                    } else if seq < last {
                        // Within one session seq only grows, so we applied something that
                        // was not from this session: start over from a fresh snapshot.
                        self.recv_seq = None;
                        self.request_resync(now);
                    }
                }
                _ => self.request_resync(now),
            },
            LinkMessage::Resync => {
                let queued = self
                    .transmit
                    .iter()
                    .any(|m| matches!(m, LinkMessage::Snapshot { .. }));
                if queued {
                    self.refuse_flow(LimitExceeded::Resync);
                } else if self.connected {
                    self.transmit.push_back(self.snapshot());
                }
            }
            LinkMessage::Goodbye { reason } => match reason {
                GoodbyeReason::LinkRemoved => {
                    self.clear_imports();
                    self.imports_live = false;
                    self.recv_seq = None;
                    self.lease_deadline = None;
                    self.events.push_back(LinkEvent::PeerRemovedLink {
                        peer: self.peer.clone(),
                    });
                    return Ok(());
                }
                // The peer may come back soon; its imports live out their lease.
                GoodbyeReason::ShuttingDown => {}
            },
        }
        self.lease_deadline = Some(now + self.peer_lease);
        Ok(())
    }

    /// Sends due heartbeats and withdraws imports whose lease ran out.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some(at) = self.next_heartbeat {
            if self.connected && now >= at {
                self.transmit
                    .push_back(LinkMessage::Heartbeat { seq: self.send_seq });
                self.next_heartbeat = Some(now + self.config.heartbeat);
            }
        }
        if self.lease_deadline.is_some_and(|at| now >= at) {
            self.lease_deadline = None;
            self.recv_seq = None;
            self.awaiting_snapshot = false;
            self.clear_imports();
            if self.imports_live {
                self.imports_live = false;
                self.events.push_back(LinkEvent::ImportsWithdrawn {
                    peer: self.peer.clone(),
                });
            }
        }
    }

    /// When [`LinkSync::handle_timeout`] must next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.next_heartbeat.filter(|_| self.connected);
        match (heartbeat, self.lease_deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next message to send to the peer.
    pub fn poll_transmit(&mut self) -> Option<LinkMessage> {
        self.transmit.pop_front()
    }

    /// The next event for the shell.
    pub fn poll_event(&mut self) -> Option<LinkEvent> {
        self.events.pop_front()
    }

    /// We removed the link: queues `Goodbye { LinkRemoved }`; nothing else is sent afterwards.
    pub fn remove_link(&mut self) {
        self.transmit.push_back(LinkMessage::Goodbye {
            reason: GoodbyeReason::LinkRemoved,
        });
        self.connected = false;
        self.next_heartbeat = None;
    }

    /// The peer's current exports as far as we know (empty once withdrawn), sorted by name.
    pub fn imports(&self) -> Vec<ExportedService> {
        self.imports.values().cloned().collect()
    }

    /// How many services the peer's current exports hold.
    pub fn import_count(&self) -> usize {
        self.imports.len()
    }

    /// The cluster this link runs from.
    pub fn local(&self) -> &ClusterId {
        &self.local
    }

    /// The peer cluster.
    pub fn peer(&self) -> &ClusterId {
        &self.peer
    }

    fn hello(&self) -> LinkMessage {
        LinkMessage::Hello {
            cluster: self.local.clone(),
            session: self.session,
            gateways: self.gateways.clone(),
            lease_ms: u64::try_from(self.config.lease.as_millis())
                .unwrap_or(u64::MAX)
                .max(1),
            roots: self.roots.clone(),
        }
    }

    fn snapshot(&self) -> LinkMessage {
        LinkMessage::Snapshot {
            seq: self.send_seq,
            services: self.exports.clone(),
        }
    }

    /// Every bound the peer is over right now, sorted.
    pub fn limited(&self) -> &[LimitExceeded] {
        &self.limited
    }

    fn refuse_all(&mut self, exceeded: &[LimitExceeded]) {
        for limit in exceeded {
            self.events.push_back(LinkEvent::Refused {
                peer: self.peer.clone(),
                limit: limit.clone(),
            });
        }
    }

    fn refuse_flow(&mut self, limit: LimitExceeded) {
        self.refuse_all(std::slice::from_ref(&limit));
        if self.flow_limits.insert(limit) {
            self.update_limited();
        }
    }

    fn update_limited(&mut self) {
        let mut all: Vec<LimitExceeded> = self
            .import_limits
            .iter()
            .chain(&self.gateway_limits)
            .chain(&self.flow_limits)
            .cloned()
            .collect();
        all.sort();
        all.dedup();
        if all != self.limited {
            self.limited = all;
            self.events.push_back(LinkEvent::LimitsChanged {
                peer: self.peer.clone(),
                limited: self.limited.clone(),
            });
        }
    }

    /// Bounds the peer's new complete exports and makes them the imports.
    fn replace_imports(&mut self, services: Vec<ExportedService>) {
        let previous: Vec<ExportedService> = self.imports.values().cloned().collect();
        let (services, exceeded) = bound_exports(&previous, services, &self.config.limits);
        if exceeded != self.import_limits {
            self.refuse_all(&exceeded);
        }
        self.refused.clear();
        self.services_over = None;
        for limit in &exceeded {
            match limit {
                LimitExceeded::Ports { service, .. } | LimitExceeded::Endpoints { service, .. }
                    if self.refused.len() < self.config.limits.services =>
                {
                    self.refused.insert(service.clone(), limit.clone());
                }
                LimitExceeded::Services { .. } => self.services_over = Some(limit.clone()),
                _ => {}
            }
        }
        self.import_limits = exceeded;
        self.update_limited();
        let changed = !self.imports_live || services != previous;
        self.imports = services.into_iter().map(|s| (s.name.clone(), s)).collect();
        self.imports_live = true;
        if changed {
            self.imports_changed();
        }
    }

    /// Applies one delta name by name, under the same bounds as a snapshot: a service over
    /// its own bounds is refused (and dropped if it was imported), a new name past the
    /// services bound is refused, names imported before keep their place. Names refused
    /// for the services bound are not remembered (a peer could send endless new ones), so
    /// when room opens while some were refused, or a removal names what may have been one
    /// of them, a fresh snapshot is asked for: it tells exactly what fits now.
    fn apply_delta(
        &mut self,
        now: Instant,
        upserts: Vec<ExportedService>,
        removals: Vec<ServiceName>,
    ) {
        let limits = self.config.limits;
        let mut changed = !self.imports_live;
        let mut limits_changed = false;
        // A removal of a name neither imported nor refused may be one refused for the
        // services bound: only a snapshot can say whether the peer is still over it.
        let mut unknown_removed = false;
        for name in &removals {
            let imported = self.imports.remove(name).is_some();
            let refused = self.refused.remove(name).is_some();
            changed |= imported;
            limits_changed |= refused;
            unknown_removed |= !imported && !refused;
        }
        for svc in upserts {
            match check_export(svc, &limits) {
                Err(limit) => {
                    let name = match &limit {
                        LimitExceeded::Ports { service, .. }
                        | LimitExceeded::Endpoints { service, .. } => service.clone(),
                        _ => continue,
                    };
                    changed |= self.imports.remove(&name).is_some();
                    self.refuse_all(std::slice::from_ref(&limit));
                    if self.refused.len() < limits.services || self.refused.contains_key(&name) {
                        limits_changed |= self.refused.insert(name, limit.clone()) != Some(limit);
                    }
                }
                Ok(svc) => {
                    limits_changed |= self.refused.remove(&svc.name).is_some();
                    if !self.imports.contains_key(&svc.name)
                        && self.imports.len() >= limits.services
                    {
                        let offered = match &self.services_over {
                            Some(LimitExceeded::Services { offered, .. }) => {
                                (*offered).max(self.imports.len() + 1)
                            }
                            _ => self.imports.len() + 1,
                        };
                        let over = LimitExceeded::Services {
                            max: limits.services,
                            offered,
                        };
                        self.refuse_all(std::slice::from_ref(&over));
                        limits_changed |= self.services_over.as_ref() != Some(&over);
                        self.services_over = Some(over);
                        continue;
                    }
                    if self.imports.get(&svc.name) != Some(&svc) {
                        self.imports.insert(svc.name.clone(), svc);
                        changed = true;
                    }
                }
            }
        }
        if self.services_over.is_some() && (unknown_removed || self.imports.len() < limits.services)
        {
            self.request_resync(now);
        }
        if limits_changed {
            self.import_limits = self
                .refused
                .values()
                .chain(&self.services_over)
                .cloned()
                .collect();
            self.update_limited();
        }
        self.imports_live = true;
        if changed {
            self.imports_changed();
        }
    }

    fn imports_changed(&mut self) {
        self.events.push_back(LinkEvent::Imports {
            peer: self.peer.clone(),
        });
    }

    fn clear_imports(&mut self) {
        self.imports.clear();
        self.refused.clear();
        self.services_over = None;
    }

    /// Asks for a snapshot, at most once per heartbeat interval (the peer's heartbeats
    /// bring us back here if the request was lost).
    fn request_resync(&mut self, now: Instant) {
        if !self.connected {
            return;
        }
        if self
            .resync_sent_at
            .is_some_and(|at| now < at + self.config.heartbeat)
        {
            return;
        }
        self.resync_sent_at = Some(now);
        self.transmit.push_back(LinkMessage::Resync);
    }
}

/// Sorts by name and keeps the last entry of each name.
fn canonical(services: Vec<ExportedService>) -> Vec<ExportedService> {
    let map: BTreeMap<ServiceName, ExportedService> =
        services.into_iter().map(|s| (s.name.clone(), s)).collect();
    map.into_values().collect()
}

fn check_unique(services: &[ExportedService], removals: &[ServiceName]) -> Result<(), LinkError> {
    let mut names = BTreeSet::new();
    if !services.iter().all(|s| names.insert(&s.name)) {
        return Err(LinkError::ProtocolViolation("a service is listed twice"));
    }
    if !removals.iter().all(|n| names.insert(n)) {
        return Err(LinkError::ProtocolViolation(
            "a service is both upserted and removed, or removed twice",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
