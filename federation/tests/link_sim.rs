//! Simulation of two clusters' `LinkSync` over a virtual network with virtual time.
//!
//! The network can delay, drop, duplicate and reorder messages (within a jitter window), be
//! partitioned (connection down), black-holed (connection up, nothing arrives) and either
//! peer can restart with a new session. Every message goes through the real framing
//! (`encode_frame` / `FrameDecoder`). Time is an `Instant` taken once per test and advanced
//! by adding durations; nothing sleeps.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferry_federation::{
    encode_frame, ClusterId, ExportedService, FrameDecoder, ImportLimits, LimitExceeded,
    LinkConfig, LinkEvent, LinkMessage, LinkSync,
};

/// SplitMix64: deterministic, seedable, good enough to shuffle a network.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct NetConfig {
    delay: Duration,
    /// Extra random delay in `0..jitter`; messages sent closer than this may be reordered.
    jitter: Duration,
    drop_percent: u64,
    dup_percent: u64,
}

impl NetConfig {
    fn clean() -> Self {
        NetConfig {
            delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            drop_percent: 0,
            dup_percent: 0,
        }
    }

    fn lossy() -> Self {
        NetConfig {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(80),
            drop_percent: 20,
            dup_percent: 10,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    A,
    B,
}

struct InFlight {
    at: Instant,
    order: u64,
    to: Side,
    frame: Vec<u8>,
}

/// One cluster: its state machine and what its shell has learned from the events.
struct Node {
    name: ClusterId,
    sync: LinkSync,
    exports: Vec<ExportedService>,
    /// The peer's exports as reported through events (`None` before any / after withdrawal).
    view: Option<Vec<ExportedService>>,
    withdrawals: Vec<Instant>,
    /// Bounds the peer went over: an honest peer never does.
    refusals: Vec<LimitExceeded>,
    hellos: usize,
    /// When a message from the peer was last delivered.
    last_heard: Option<Instant>,
}

const CONFIG: LinkConfig = LinkConfig {
    heartbeat: Duration::from_secs(1),
    lease: Duration::from_secs(5),
    limits: ImportLimits::DEFAULT,
};

impl Node {
    fn new(name: &str, peer: &str, session: u64) -> Self {
        let name: ClusterId = name.parse().unwrap();
        Node {
            sync: LinkSync::new(name.clone(), peer.parse().unwrap(), session, vec![], CONFIG),
            name,
            exports: vec![],
            view: None,
            withdrawals: vec![],
            refusals: vec![],
            hellos: 0,
            last_heard: None,
        }
    }
}

struct Sim {
    now: Instant,
    rng: Rng,
    net: NetConfig,
    queue: Vec<InFlight>,
    next_order: u64,
    a: Node,
    b: Node,
    connected: bool,
    blackhole: bool,
    /// Drop the next Delta sent by this side (to force a gap).
    drop_next_delta: Option<Side>,
    sent: BTreeMap<&'static str, usize>,
    next_session: u64,
}

fn kind(m: &LinkMessage) -> &'static str {
    match m {
        LinkMessage::Hello { .. } => "hello",
        LinkMessage::Snapshot { .. } => "snapshot",
        LinkMessage::Delta { .. } => "delta",
        LinkMessage::Heartbeat { .. } => "heartbeat",
        LinkMessage::Resync => "resync",
        LinkMessage::Goodbye { .. } => "goodbye",
    }
}

impl Sim {
    fn new(seed: u64, net: NetConfig) -> Self {
        let mut sim = Sim {
            now: base_instant(),
            rng: Rng(seed),
            net,
            queue: vec![],
            next_order: 0,
            a: Node::new("east", "west", 1),
            b: Node::new("west", "east", 2),
            connected: false,
            blackhole: false,
            drop_next_delta: None,
            sent: BTreeMap::new(),
            next_session: 3,
        };
        sim.heal();
        sim
    }

    fn node(&mut self, side: Side) -> &mut Node {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn set_exports(&mut self, side: Side, mut exports: Vec<ExportedService>) {
        exports.sort_by(|x, y| x.name.cmp(&y.name));
        let now = self.now;
        let node = self.node(side);
        node.exports = exports.clone();
        node.sync.set_local_exports(now, exports);
    }

    /// Connection goes down: in-flight messages are lost, both sides notice.
    fn partition(&mut self) {
        self.connected = false;
        self.queue.clear();
        let now = self.now;
        self.a.sync.handle_disconnected(now);
        self.b.sync.handle_disconnected(now);
    }

    /// A new connection comes up.
    fn heal(&mut self) {
        self.connected = true;
        self.blackhole = false;
        let now = self.now;
        self.a.sync.handle_connected(now);
        self.b.sync.handle_connected(now);
    }

    /// B's process restarts with a new session and (possibly) different exports.
    fn restart_b(&mut self, exports: Vec<ExportedService>) {
        self.partition();
        let session = self.next_session;
        self.next_session += 1;
        self.b.sync = LinkSync::new(
            self.b.name.clone(),
            self.a.name.clone(),
            session,
            vec![],
            CONFIG,
        );
        self.b.view = None;
        self.set_exports(Side::B, exports);
        self.heal();
    }

    /// Moves queued transmissions onto the network.
    fn pump(&mut self) {
        for from in [Side::A, Side::B] {
            let to = if from == Side::A { Side::B } else { Side::A };
            while let Some(msg) = self.node(from).sync.poll_transmit() {
                *self.sent.entry(kind(&msg)).or_default() += 1;
                if !self.connected || self.blackhole {
                    continue;
                }
                if matches!(msg, LinkMessage::Delta { .. }) && self.drop_next_delta == Some(from) {
                    self.drop_next_delta = None;
                    continue;
                }
                let frame = encode_frame(&msg);
                let copies = if self.rng.chance(self.net.dup_percent) {
                    2
                } else {
                    1
                };
                for _ in 0..copies {
                    if self.rng.chance(self.net.drop_percent) {
                        continue;
                    }
                    let jitter = self.rng.below(self.net.jitter.as_micros() as u64);
                    let at = self.now + self.net.delay + Duration::from_micros(jitter);
                    self.queue.push(InFlight {
                        at,
                        order: self.next_order,
                        to,
                        frame: frame.clone(),
                    });
                    self.next_order += 1;
                }
            }
        }
    }

    fn collect_events(&mut self) {
        let now = self.now;
        for side in [Side::A, Side::B] {
            let node = self.node(side);
            while let Some(ev) = node.sync.poll_event() {
                match ev {
                    LinkEvent::PeerHello { .. } => node.hellos += 1,
                    LinkEvent::Imports { .. } => node.view = Some(node.sync.imports()),
                    LinkEvent::ImportsWithdrawn { .. } => {
                        node.view = None;
                        node.withdrawals.push(now);
                    }
                    LinkEvent::PeerRemovedLink { .. } => node.view = None,
                    LinkEvent::Refused { limit, .. } => node.refusals.push(limit),
                    LinkEvent::LimitsChanged { .. } => {}
                }
            }
        }
    }

    /// Runs the world until `now + d`.
    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        for _ in 0..1_000_000 {
            self.pump();
            self.collect_events();
            let next = [
                self.queue.iter().map(|m| m.at).min(),
                self.a.sync.poll_timeout(),
                self.b.sync.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => self.now = self.now.max(t),
                _ => {
                    self.now = end;
                    return;
                }
            }
            // Deliver everything due, in arrival order.
            let mut due: Vec<InFlight> = Vec::new();
            let mut i = 0;
            while i < self.queue.len() {
                if self.queue[i].at <= self.now {
                    due.push(self.queue.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            due.sort_by_key(|m| (m.at, m.order));
            for m in due {
                let now = self.now;
                let node = self.node(m.to);
                let mut dec = FrameDecoder::<LinkMessage>::new();
                dec.push(&m.frame);
                let msg = dec.next().unwrap().expect("one whole frame");
                node.last_heard = Some(now);
                node.sync
                    .handle_message(now, msg)
                    .expect("well-behaved peer never violates the protocol");
            }
            let now = self.now;
            for side in [Side::A, Side::B] {
                let node = self.node(side);
                if node.sync.poll_timeout().is_some_and(|t| t <= now) {
                    node.sync.handle_timeout(now);
                }
            }
        }
        panic!("simulation did not reach its end time");
    }

    fn assert_converged(&self, context: &str) {
        for (me, peer) in [(&self.a, &self.b), (&self.b, &self.a)] {
            assert_eq!(
                me.view.as_ref(),
                Some(&peer.exports),
                "{context}: {} sees {}'s exports through events",
                me.name,
                peer.name
            );
            assert_eq!(
                me.sync.imports(),
                peer.exports.as_slice(),
                "{context}: {}'s imports() match {}'s exports",
                me.name,
                peer.name
            );
            assert_eq!(
                me.refusals,
                Vec::<LimitExceeded>::new(),
                "{context}: an honest peer stays within every bound"
            );
        }
    }
}

fn svc(name: &str, healthy: u32) -> ExportedService {
    ExportedService {
        name: name.parse().unwrap(),
        ports: vec!["http=80:8080/http".parse().unwrap()],
        healthy: [("http".parse().unwrap(), healthy)].into_iter().collect(),
        headless: false,
        endpoints: Vec::new(),
        exported_at_ms: 0,
    }
}

fn random_exports(rng: &mut Rng) -> Vec<ExportedService> {
    let mut out = Vec::new();
    for i in 0..6 {
        if rng.chance(50) {
            out.push(svc(&format!("s{i}.shop"), rng.below(4) as u32));
        }
    }
    out
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn clean_network_converges_quickly() {
    let mut sim = Sim::new(1, NetConfig::clean());
    sim.set_exports(Side::A, vec![svc("web.shop", 2)]);
    sim.set_exports(Side::B, vec![svc("api.shop", 1), svc("db.shop", 3)]);
    sim.run_for(ms(100));
    sim.assert_converged("after one round trip");
    assert_eq!(sim.sent.get("resync"), None, "no resync on a clean network");
    sim.set_exports(Side::B, vec![svc("db.shop", 0)]);
    sim.run_for(ms(100));
    sim.assert_converged("after a change");
    sim.run_for(secs(60));
    sim.assert_converged("after a quiet minute");
    assert!(sim.a.withdrawals.is_empty() && sim.b.withdrawals.is_empty());
    assert!(
        sim.sent["heartbeat"] >= 100,
        "heartbeats keep the lease alive"
    );
}

#[test]
fn lossy_reordering_network_converges_after_it_heals() {
    let mut resyncs = 0;
    for seed in 0..40 {
        let mut sim = Sim::new(seed, NetConfig::lossy());
        let mut changes = Rng(seed ^ 0xABCD);
        for _ in 0..40 {
            let side = if changes.chance(50) { Side::A } else { Side::B };
            let exports = random_exports(&mut changes);
            sim.set_exports(side, exports);
            // Changes often come faster than the jitter window, so deltas get reordered.
            sim.run_for(ms(10 + changes.below(400)));
        }
        sim.net = NetConfig::clean();
        sim.run_for(secs(3));
        sim.assert_converged(&format!("seed {seed}"));
        resyncs += sim.sent.get("resync").copied().unwrap_or(0);
    }
    assert!(
        resyncs > 40,
        "the lossy network exercised resync ({resyncs} times)"
    );
}

#[test]
fn silence_past_lease_withdraws_exactly_once_then_imports_return() {
    let mut sim = Sim::new(7, NetConfig::clean());
    sim.set_exports(Side::A, vec![svc("web.shop", 2)]);
    sim.set_exports(Side::B, vec![svc("api.shop", 1)]);
    sim.run_for(secs(2));
    sim.assert_converged("before the silence");

    sim.blackhole = true; // the connection looks up, but nothing arrives
    sim.run_for(secs(30));
    for node in [&sim.a, &sim.b] {
        assert_eq!(
            node.withdrawals.len(),
            1,
            "{}: exactly one withdrawal",
            node.name
        );
        let at = node.withdrawals[0];
        let heard = node.last_heard.unwrap();
        assert!(
            at >= heard + CONFIG.lease,
            "{}: not before the lease",
            node.name
        );
        assert!(
            at <= heard + CONFIG.lease + ms(1),
            "{}: right at the lease",
            node.name
        );
        assert_eq!(node.view, None);
        assert!(node.sync.imports().is_empty());
    }

    // B changed its exports while nobody could hear it.
    sim.set_exports(Side::B, vec![svc("api.shop", 3), svc("new.shop", 1)]);
    sim.blackhole = false;
    sim.run_for(secs(3));
    sim.assert_converged("after the network came back");
    assert_eq!(sim.a.withdrawals.len(), 1);
    assert_eq!(sim.b.withdrawals.len(), 1);
}

#[test]
fn partition_then_reconnect() {
    let mut sim = Sim::new(8, NetConfig::clean());
    sim.set_exports(Side::A, vec![svc("web.shop", 2)]);
    sim.set_exports(Side::B, vec![svc("api.shop", 1)]);
    sim.run_for(secs(2));

    // Shorter than the lease: imports stay, nothing is withdrawn.
    sim.partition();
    sim.set_exports(Side::A, vec![svc("web.shop", 1)]);
    sim.run_for(secs(3));
    assert_eq!(
        sim.b.view.as_ref(),
        Some(&vec![svc("web.shop", 2)]),
        "stale but kept"
    );
    sim.heal();
    sim.run_for(secs(1));
    sim.assert_converged("after a short partition");
    assert!(sim.a.withdrawals.is_empty() && sim.b.withdrawals.is_empty());

    // Longer than the lease: exactly one withdrawal each, then back.
    sim.partition();
    sim.run_for(secs(20));
    assert_eq!(sim.a.withdrawals.len(), 1);
    assert_eq!(sim.b.withdrawals.len(), 1);
    assert_eq!(sim.a.view, None);
    sim.heal();
    sim.run_for(secs(1));
    sim.assert_converged("after a long partition");
    assert_eq!(sim.a.withdrawals.len(), 1);
}

#[test]
fn peer_restart_with_new_session_replaces_imports() {
    let mut sim = Sim::new(9, NetConfig::clean());
    sim.set_exports(Side::A, vec![svc("web.shop", 2)]);
    // Push B's sequence number well ahead so a naive receiver would ignore the new session.
    for i in 0..10 {
        sim.set_exports(Side::B, vec![svc("api.shop", i)]);
        sim.run_for(ms(50));
    }
    sim.assert_converged("before the restart");
    let hellos = sim.a.hellos;

    sim.restart_b(vec![svc("fresh.shop", 1)]);
    sim.run_for(secs(1));
    sim.assert_converged("after B restarted");
    assert!(sim.a.hellos > hellos, "A saw B's new hello");
    assert!(
        sim.a.withdrawals.is_empty(),
        "a quick restart withdraws nothing"
    );
    sim.set_exports(Side::B, vec![svc("fresh.shop", 2)]);
    sim.run_for(secs(1));
    sim.assert_converged("deltas of the new session apply");
}

#[test]
fn restarts_on_a_lossy_network_converge() {
    for seed in 100..120 {
        let mut sim = Sim::new(seed, NetConfig::lossy());
        let mut changes = Rng(seed);
        for round in 0..6 {
            for _ in 0..5 {
                let side = if changes.chance(50) { Side::A } else { Side::B };
                sim.set_exports(side, random_exports(&mut changes));
                sim.run_for(ms(changes.below(300)));
            }
            if round % 2 == 0 {
                sim.restart_b(random_exports(&mut changes));
            } else {
                sim.partition();
                sim.run_for(ms(changes.below(8000)));
                sim.heal();
            }
        }
        sim.net = NetConfig::clean();
        sim.run_for(secs(3));
        sim.assert_converged(&format!("seed {seed}"));
    }
}

#[test]
fn delta_gap_triggers_resync_and_converges() {
    let mut sim = Sim::new(10, NetConfig::clean());
    sim.set_exports(Side::B, vec![svc("a.shop", 1)]);
    sim.run_for(secs(1));
    sim.assert_converged("start");
    assert_eq!(sim.sent.get("resync"), None);

    // A delta is lost and a later one arrives: the gap is noticed at once.
    sim.drop_next_delta = Some(Side::B);
    sim.set_exports(Side::B, vec![svc("a.shop", 1), svc("b.shop", 1)]);
    sim.run_for(ms(100));
    assert_eq!(
        sim.a.view.as_ref(),
        Some(&vec![svc("a.shop", 1)]),
        "lost delta not seen yet"
    );
    sim.set_exports(Side::B, vec![svc("b.shop", 2)]);
    sim.run_for(ms(200));
    assert_eq!(sim.sent.get("resync"), Some(&1));
    sim.assert_converged("after resync on gap");

    // The last delta is lost: the next heartbeat shows A is behind.
    sim.drop_next_delta = Some(Side::B);
    sim.set_exports(Side::B, vec![svc("c.shop", 3)]);
    sim.run_for(ms(100));
    assert_eq!(sim.a.view.as_ref(), Some(&vec![svc("b.shop", 2)]));
    sim.run_for(ms(1200));
    assert_eq!(sim.sent.get("resync"), Some(&2));
    sim.assert_converged("after resync on heartbeat");
    assert!(sim.a.withdrawals.is_empty());
}

/// A base instant for virtual time; tests advance it by adding durations.
#[allow(clippy::disallowed_methods)] // only the base of virtual time, never read again
fn base_instant() -> Instant {
    Instant::now()
}
