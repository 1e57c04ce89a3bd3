use super::*;

fn cid(s: &str) -> ClusterId {
    s.parse().unwrap()
}

fn svc(name: &str, healthy: u32) -> ExportedService {
    ExportedService {
        name: name.parse().unwrap(),
        ports: vec!["http=80/http".parse().unwrap()],
        healthy: [("http".parse().unwrap(), healthy)].into_iter().collect(),
        headless: false,
        endpoints: Vec::new(),
        exported_at_ms: 0,
    }
}

fn config() -> LinkConfig {
    LinkConfig {
        heartbeat: Duration::from_secs(1),
        lease: Duration::from_secs(5),
        limits: ImportLimits::default(),
    }
}

/// East's side of the east<->west link, connected at `t0`.
fn east(t0: Instant) -> LinkSync {
    let mut l = LinkSync::new(
        cid("east"),
        cid("west"),
        1,
        vec!["192.0.2.1:4443".parse().unwrap()],
        config(),
    );
    l.handle_connected(t0);
    drain(&mut l);
    l
}

fn hello(session: u64) -> LinkMessage {
    LinkMessage::Hello {
        cluster: cid("west"),
        session,
        gateways: vec![],
        lease_ms: 5000,
        roots: vec![],
    }
}

fn drain(l: &mut LinkSync) -> Vec<LinkMessage> {
    std::iter::from_fn(|| l.poll_transmit()).collect()
}

fn events(l: &mut LinkSync) -> Vec<LinkEvent> {
    std::iter::from_fn(|| l.poll_event()).collect()
}

/// The only event is "imports changed", and the imports are now `services`.
fn assert_imports(l: &mut LinkSync, services: Vec<ExportedService>) {
    assert_eq!(events(l), vec![LinkEvent::Imports { peer: cid("west") }]);
    assert_eq!(l.imports(), services);
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn connect_sends_hello_then_snapshot_then_heartbeats() {
    let t0 = crate::testutil::t0();
    let mut l = LinkSync::new(cid("east"), cid("west"), 9, vec![], config());
    assert_eq!(l.poll_timeout(), None);
    l.set_local_exports(t0, vec![svc("web.shop", 1)]);
    assert!(
        drain(&mut l).is_empty(),
        "nothing is sent while disconnected"
    );
    l.handle_connected(t0);
    let sent = drain(&mut l);
    assert_eq!(
        sent,
        vec![
            LinkMessage::Hello {
                cluster: cid("east"),
                session: 9,
                gateways: vec![],
                lease_ms: 5000,
                roots: vec![],
            },
            LinkMessage::Snapshot {
                seq: 1,
                services: vec![svc("web.shop", 1)]
            },
        ]
    );
    assert_eq!(l.poll_timeout(), Some(t0 + secs(1)));
    l.handle_timeout(t0 + Duration::from_millis(999));
    assert!(drain(&mut l).is_empty());
    l.handle_timeout(t0 + secs(1));
    assert_eq!(drain(&mut l), vec![LinkMessage::Heartbeat { seq: 1 }]);
    assert_eq!(l.poll_timeout(), Some(t0 + secs(2)));
    l.handle_disconnected(t0 + secs(1));
    assert_eq!(l.poll_timeout(), None);
    l.handle_timeout(t0 + secs(5));
    assert!(drain(&mut l).is_empty(), "no heartbeats while disconnected");
}

#[test]
fn exports_changes_become_deltas() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.set_local_exports(t0, vec![svc("b.ns", 1), svc("a.ns", 1)]);
    assert_eq!(
        drain(&mut l),
        vec![LinkMessage::Delta {
            seq: 1,
            upserts: vec![svc("a.ns", 1), svc("b.ns", 1)],
            removals: vec![]
        }]
    );
    l.set_local_exports(t0, vec![svc("a.ns", 1), svc("b.ns", 1)]);
    assert!(
        drain(&mut l).is_empty(),
        "unchanged (order does not matter)"
    );
    l.set_local_exports(t0, vec![svc("b.ns", 2), svc("c.ns", 1)]);
    assert_eq!(
        drain(&mut l),
        vec![LinkMessage::Delta {
            seq: 2,
            upserts: vec![svc("b.ns", 2), svc("c.ns", 1)],
            removals: vec!["a.ns".parse().unwrap()]
        }]
    );
    l.handle_message(t0, LinkMessage::Resync).unwrap();
    assert_eq!(
        drain(&mut l),
        vec![LinkMessage::Snapshot {
            seq: 2,
            services: vec![svc("b.ns", 2), svc("c.ns", 1)]
        }]
    );
}

#[test]
fn snapshots_and_deltas_update_imports() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    assert_eq!(
        events(&mut l),
        vec![LinkEvent::PeerHello {
            peer: cid("west"),
            session: 7,
            gateways: vec![],
            roots: vec![],
        }]
    );
    snapshot_from_west(&mut l, t0, 3, vec![svc("a.ns", 1)]);
    assert_imports(&mut l, vec![svc("a.ns", 1)]);
    // Same content again: no event. Older seq: ignored.
    snapshot_from_west(&mut l, t0, 3, vec![svc("a.ns", 1)]);
    snapshot_from_west(&mut l, t0, 2, vec![]);
    assert!(events(&mut l).is_empty());
    assert_eq!(l.imports(), [svc("a.ns", 1)]);

    let delta = LinkMessage::Delta {
        seq: 4,
        upserts: vec![svc("b.ns", 1)],
        removals: vec!["a.ns".parse().unwrap()],
    };
    l.handle_message(t0, delta.clone()).unwrap();
    assert_imports(&mut l, vec![svc("b.ns", 1)]);
    l.handle_message(t0, delta).unwrap();
    assert!(events(&mut l).is_empty(), "duplicate delta ignored");
    l.handle_message(t0, LinkMessage::Heartbeat { seq: 4 })
        .unwrap();
    assert!(drain(&mut l).is_empty(), "heartbeat in step needs nothing");
}

#[test]
fn gaps_ask_for_resync_once_per_heartbeat_and_wait_for_a_snapshot() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    snapshot_from_west(&mut l, t0, 1, vec![]);
    events(&mut l);
    let gap = LinkMessage::Delta {
        seq: 3,
        upserts: vec![svc("a.ns", 1)],
        removals: vec![],
    };
    l.handle_message(t0, gap).unwrap();
    assert_eq!(drain(&mut l), vec![LinkMessage::Resync]);
    // The missing delta arrives late, but we already asked for a snapshot: it is not applied.
    l.handle_message(
        t0,
        LinkMessage::Delta {
            seq: 2,
            upserts: vec![svc("z.ns", 1)],
            removals: vec![],
        },
    )
    .unwrap();
    l.handle_message(t0, LinkMessage::Heartbeat { seq: 3 })
        .unwrap();
    assert!(
        drain(&mut l).is_empty(),
        "resync is not repeated within a heartbeat"
    );
    assert!(l.imports().is_empty());
    l.handle_message(t0 + secs(1), LinkMessage::Heartbeat { seq: 3 })
        .unwrap();
    assert_eq!(
        drain(&mut l),
        vec![LinkMessage::Resync],
        "repeated if the first was lost"
    );
    snapshot_from_west(&mut l, t0 + secs(1), 3, vec![svc("a.ns", 1)]);
    assert_imports(&mut l, vec![svc("a.ns", 1)]);
    l.handle_message(
        t0 + secs(1),
        LinkMessage::Delta {
            seq: 4,
            upserts: vec![],
            removals: vec!["a.ns".parse().unwrap()],
        },
    )
    .unwrap();
    assert_imports(&mut l, vec![]);
}

#[test]
fn heartbeat_ahead_or_before_any_snapshot_asks_for_resync() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    l.handle_message(t0, LinkMessage::Heartbeat { seq: 0 })
        .unwrap();
    assert_eq!(
        drain(&mut l),
        vec![LinkMessage::Resync],
        "the first snapshot was lost"
    );
    snapshot_from_west(&mut l, t0, 0, vec![]);
    l.handle_message(t0 + secs(1), LinkMessage::Heartbeat { seq: 2 })
        .unwrap();
    assert_eq!(drain(&mut l), vec![LinkMessage::Resync]);
}

#[test]
fn lease_expiry_withdraws_once_and_traffic_brings_imports_back() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    snapshot_from_west(&mut l, t0, 1, vec![svc("a.ns", 1)]);
    events(&mut l);
    l.handle_message(t0 + secs(2), LinkMessage::Heartbeat { seq: 1 })
        .unwrap();
    l.handle_timeout(t0 + secs(6));
    assert!(
        events(&mut l).is_empty(),
        "lease runs from the last message"
    );
    assert!(l.poll_timeout().unwrap() <= t0 + secs(7));
    l.handle_timeout(t0 + secs(7));
    assert_eq!(
        events(&mut l),
        vec![LinkEvent::ImportsWithdrawn { peer: cid("west") }]
    );
    assert!(l.imports().is_empty());
    for s in 8..20 {
        l.handle_timeout(t0 + secs(s));
    }
    assert!(events(&mut l).is_empty(), "withdrawn exactly once");
    drain(&mut l);
    l.handle_message(t0 + secs(20), LinkMessage::Heartbeat { seq: 1 })
        .unwrap();
    assert_eq!(drain(&mut l), vec![LinkMessage::Resync]);
    snapshot_from_west(&mut l, t0 + secs(20), 1, vec![svc("a.ns", 1)]);
    assert_imports(&mut l, vec![svc("a.ns", 1)]);
}

#[test]
fn no_withdrawal_without_imports() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    events(&mut l);
    l.handle_timeout(t0 + secs(60));
    assert!(events(&mut l).is_empty());
}

#[test]
fn peer_lease_is_honoured_within_bounds() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    let mut h = hello(7);
    if let LinkMessage::Hello { lease_ms, .. } = &mut h {
        *lease_ms = 30_000;
    }
    l.handle_message(t0, h).unwrap();
    snapshot_from_west(&mut l, t0, 0, vec![]);
    events(&mut l);
    l.handle_timeout(t0 + secs(29));
    assert!(events(&mut l).is_empty());
    l.handle_timeout(t0 + secs(30));
    assert_eq!(events(&mut l).len(), 1);

    let mut l = east(t0);
    let mut h = hello(7);
    if let LinkMessage::Hello { lease_ms, .. } = &mut h {
        *lease_ms = u64::MAX;
    }
    l.handle_message(t0, h).unwrap();
    snapshot_from_west(&mut l, t0, 0, vec![]);
    events(&mut l);
    l.handle_timeout(t0 + MAX_LEASE);
    assert_eq!(events(&mut l).len(), 1, "a huge lease is capped");
}

#[test]
fn new_peer_session_resets_sequence() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    snapshot_from_west(&mut l, t0, 9, vec![svc("a.ns", 1)]);
    events(&mut l);
    // Same session again (reconnect): old seq still holds.
    l.handle_message(t0, hello(7)).unwrap();
    snapshot_from_west(&mut l, t0, 2, vec![]);
    assert_eq!(l.imports(), [svc("a.ns", 1)]);
    // The peer restarted: seq starts over, old imports stay until the new snapshot.
    l.handle_message(t0, hello(8)).unwrap();
    assert_eq!(l.imports(), [svc("a.ns", 1)]);
    events(&mut l);
    snapshot_from_west(&mut l, t0, 0, vec![svc("b.ns", 1)]);
    assert_imports(&mut l, vec![svc("b.ns", 1)]);
}

#[test]
fn protocol_violations() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    let wrong = LinkMessage::Hello {
        cluster: cid("north"),
        session: 1,
        gateways: vec![],
        lease_ms: 5000,
        roots: vec![],
    };
    assert_eq!(
        l.handle_message(t0, wrong),
        Err(LinkError::UnexpectedPeer {
            expected: cid("west"),
            got: cid("north")
        })
    );
    let zero = LinkMessage::Hello {
        cluster: cid("west"),
        session: 1,
        gateways: vec![],
        lease_ms: 0,
        roots: vec![],
    };
    assert!(matches!(
        l.handle_message(t0, zero),
        Err(LinkError::ProtocolViolation(_))
    ));
    let dup = LinkMessage::Snapshot {
        seq: 1,
        services: vec![svc("a.ns", 1), svc("a.ns", 2)],
    };
    assert!(matches!(
        l.handle_message(t0, dup),
        Err(LinkError::ProtocolViolation(_))
    ));
    let both = LinkMessage::Delta {
        seq: 1,
        upserts: vec![svc("a.ns", 1)],
        removals: vec!["a.ns".parse().unwrap()],
    };
    assert!(matches!(
        l.handle_message(t0, both),
        Err(LinkError::ProtocolViolation(_))
    ));
    assert!(
        events(&mut l).is_empty(),
        "rejected messages change nothing"
    );
    assert!(l.imports().is_empty());
    let msg = LinkError::UnexpectedPeer {
        expected: cid("west"),
        got: cid("north"),
    }
    .to_string();
    assert!(msg.contains("north") && msg.contains("west"), "{msg}");
}

#[test]
fn goodbyes() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    snapshot_from_west(&mut l, t0, 0, vec![svc("a.ns", 1)]);
    events(&mut l);
    l.handle_message(
        t0,
        LinkMessage::Goodbye {
            reason: GoodbyeReason::ShuttingDown,
        },
    )
    .unwrap();
    assert!(
        events(&mut l).is_empty(),
        "shutting down keeps imports for the lease"
    );
    assert_eq!(l.imports().len(), 1);
    l.handle_message(
        t0,
        LinkMessage::Goodbye {
            reason: GoodbyeReason::LinkRemoved,
        },
    )
    .unwrap();
    assert_eq!(
        events(&mut l),
        vec![LinkEvent::PeerRemovedLink { peer: cid("west") }]
    );
    assert!(l.imports().is_empty());
    l.handle_timeout(t0 + secs(60));
    assert!(events(&mut l).is_empty(), "no withdrawal after removal");

    drain(&mut l);
    l.remove_link();
    assert_eq!(
        drain(&mut l),
        vec![LinkMessage::Goodbye {
            reason: GoodbyeReason::LinkRemoved
        }]
    );
    l.handle_timeout(t0 + secs(61));
    l.set_local_exports(t0 + secs(61), vec![svc("x.ns", 1)]);
    assert!(drain(&mut l).is_empty(), "nothing after goodbye");
}

#[test]
fn gateway_changes_resend_hello() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.set_gateways(vec!["192.0.2.1:4443".parse().unwrap()]);
    assert!(drain(&mut l).is_empty(), "unchanged");
    l.set_gateways(vec!["192.0.2.9:4443".parse().unwrap()]);
    assert!(matches!(
        drain(&mut l).as_slice(),
        [LinkMessage::Hello { session: 1, gateways, .. }] if gateways.len() == 1
    ));
}

fn refusals(evs: &[LinkEvent]) -> Vec<&'static str> {
    evs.iter()
        .filter_map(|e| match e {
            LinkEvent::Refused { limit, .. } => Some(limit.kind()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_flooding_peer_is_held_to_its_rate_and_the_link_shows_it() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.handle_message(t0, hello(7)).unwrap();
    snapshot_from_west(&mut l, t0, 1, vec![svc("a.ns", 1)]);
    events(&mut l);
    let burst = ImportLimits::DEFAULT.frame_burst as u64;
    for seq in 2..=(burst + 100) {
        l.handle_message(
            t0,
            LinkMessage::Delta {
                seq,
                upserts: vec![svc("a.ns", seq as u32)],
                removals: vec![],
            },
        )
        .unwrap();
    }
    let evs = events(&mut l);
    assert_eq!(
        refusals(&evs).len(),
        101,
        "burst + 101 frames in all (hello, snapshot, deltas): all past the burst are refused"
    );
    assert_eq!(
        l.imports()[0].healthy[&"http".parse::<crate::model::PortName>().unwrap()],
        burst as u32 - 1,
        "the last delta applied is the last one within the budget"
    );
    assert_eq!(
        l.limited(),
        [LimitExceeded::FrameRate {
            per_second: ImportLimits::DEFAULT.frames_per_second
        }]
    );
    assert!(evs
        .iter()
        .any(|e| matches!(e, LinkEvent::LimitsChanged { limited, .. } if limited.len() == 1)));
    // A new connection starts with a full budget and a clean record.
    l.handle_connected(t0 + secs(10));
    assert!(l.limited().is_empty());
}

#[test]
fn a_resync_while_a_snapshot_is_queued_is_dropped() {
    let t0 = crate::testutil::t0();
    let mut l = east(t0);
    l.set_local_exports(t0, vec![svc("a.ns", 1)]);
    drain(&mut l);
    for _ in 0..50 {
        l.handle_message(t0, LinkMessage::Resync).unwrap();
    }
    let queued = drain(&mut l);
    assert_eq!(queued.len(), 1, "one snapshot, however many requests");
    assert!(matches!(queued[0], LinkMessage::Snapshot { .. }));
    assert_eq!(refusals(&events(&mut l)), vec!["resync"; 49]);
    // Once the snapshot went out, the next request is served again.
    l.handle_message(t0, LinkMessage::Resync).unwrap();
    assert_eq!(drain(&mut l).len(), 1);
}

/// West's snapshot `seq` with `services` arrives at `at`.
fn snapshot_from_west(l: &mut LinkSync, at: Instant, seq: u64, services: Vec<ExportedService>) {
    l.handle_message(at, LinkMessage::Snapshot { seq, services })
        .unwrap();
}

/// A link from east to west under `limits`, connected at `t0`.
fn connected_with(limits: ImportLimits, t0: Instant) -> LinkSync {
    let mut l = LinkSync::new(
        cid("east"),
        cid("west"),
        1,
        vec![],
        LinkConfig { limits, ..config() },
    );
    l.handle_connected(t0);
    l
}

#[test]
fn a_peer_over_its_import_bounds_gets_only_what_fits() {
    let t0 = crate::testutil::t0();
    let mut l = connected_with(
        ImportLimits {
            services: 2,
            ..ImportLimits::DEFAULT
        },
        t0,
    );
    l.handle_message(
        t0,
        LinkMessage::Hello {
            cluster: cid("west"),
            session: 1,
            gateways: vec![
                "127.0.0.1:1".parse().unwrap(),
                "192.0.2.1:1".parse().unwrap(),
            ],
            lease_ms: 5000,
            roots: vec![],
        },
    )
    .unwrap();
    let services = vec![svc("a.ns", 1), svc("b.ns", 1), svc("c.ns", 1)];
    l.handle_message(t0, LinkMessage::Snapshot { seq: 1, services })
        .unwrap();
    let evs = events(&mut l);
    assert!(evs.contains(&LinkEvent::PeerHello {
        peer: cid("west"),
        session: 1,
        gateways: vec!["192.0.2.1:1".parse().unwrap()],
        roots: vec![],
    }));
    assert_eq!(refusals(&evs), ["gateway_address", "services"]);
    let names: Vec<String> = l.imports().iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["a.ns", "b.ns"]);
    assert_eq!(l.limited().len(), 2);
    // Back within bounds: the link is clean again; a repeated report counts nothing twice.
    snapshot_from_west(&mut l, t0, 2, vec![svc("a.ns", 1)]);
    assert_eq!(refusals(&events(&mut l)), Vec::<&str>::new());
    assert_eq!(l.limited().len(), 1, "only the gateway address is left");
}

#[test]
fn deltas_are_bounded_like_snapshots_and_touch_only_their_names() {
    let t0 = crate::testutil::t0();
    let mut l = connected_with(
        ImportLimits {
            services: 2,
            ports: 1,
            ..ImportLimits::DEFAULT
        },
        t0,
    );
    l.handle_message(t0, hello(1)).unwrap();
    snapshot_from_west(&mut l, t0, 1, vec![svc("a.ns", 1)]);
    events(&mut l);
    drain(&mut l);
    let delta = |seq, upserts, removals| LinkMessage::Delta {
        seq,
        upserts,
        removals,
    };
    let names =
        |l: &LinkSync| -> Vec<String> { l.imports().iter().map(|s| s.name.to_string()).collect() };
    // A new name within the bound, then one past it: refused, shown, imports untouched.
    l.handle_message(t0, delta(2, vec![svc("b.ns", 1)], vec![]))
        .unwrap();
    assert_imports(&mut l, vec![svc("a.ns", 1), svc("b.ns", 1)]);
    l.handle_message(t0, delta(3, vec![svc("c.ns", 1)], vec![]))
        .unwrap();
    assert_eq!(refusals(&events(&mut l)), ["services"]);
    assert_eq!(names(&l), ["a.ns", "b.ns"]);
    assert_eq!(
        l.limited(),
        [LimitExceeded::Services { max: 2, offered: 3 }]
    );
    // An imported name changing still lands: names imported before keep their place.
    l.handle_message(t0, delta(4, vec![svc("a.ns", 5)], vec![]))
        .unwrap();
    assert_imports(&mut l, vec![svc("a.ns", 5), svc("b.ns", 1)]);
    // An imported service that grows past its own bound is dropped and shown; removing it
    // clears that refusal.
    let mut wide = svc("b.ns", 1);
    wide.ports.push("grpc=81".parse().unwrap());
    l.handle_message(t0, delta(5, vec![wide], vec![])).unwrap();
    let evs = events(&mut l);
    assert_eq!(refusals(&evs), ["ports"]);
    assert!(evs.contains(&LinkEvent::Imports { peer: cid("west") }));
    assert_eq!(names(&l), ["a.ns"]);
    assert!(l.limited().contains(&LimitExceeded::Ports {
        service: "b.ns".parse().unwrap(),
        max: 1
    }));
    // Dropping b.ns made room while c.ns was refused for the services bound: a fresh
    // snapshot is asked for, which says what fits now.
    assert_eq!(drain(&mut l), vec![LinkMessage::Resync]);
    l.handle_message(t0, delta(6, vec![], vec!["b.ns".parse().unwrap()]))
        .unwrap();
    assert!(!l
        .limited()
        .iter()
        .any(|x| matches!(x, LimitExceeded::Ports { .. })));
    assert!(
        drain(&mut l).is_empty(),
        "one resync per heartbeat interval"
    );
    // A full snapshot within bounds clears everything.
    snapshot_from_west(&mut l, t0, 7, vec![svc("c.ns", 1)]);
    assert_eq!(names(&l), ["c.ns"]);
    assert!(l.limited().is_empty());
}

#[test]
fn hello_carries_the_roots_and_bad_root_lists_are_violations() {
    let t0 = crate::testutil::t0();
    let root = "ab".repeat(32);
    let mut l = LinkSync::new(cid("east"), cid("west"), 9, vec![], LinkConfig::default())
        .with_roots(vec![root.clone()]);
    l.handle_connected(t0);
    match l.poll_transmit() {
        Some(LinkMessage::Hello { roots, .. }) => assert_eq!(roots, std::slice::from_ref(&root)),
        other => panic!("expected our hello first, got {other:?}"),
    }
    let hello = |roots: Vec<String>| LinkMessage::Hello {
        cluster: cid("west"),
        session: 1,
        gateways: vec![],
        lease_ms: 5000,
        roots,
    };
    l.handle_message(t0, hello(vec![root.clone(), "cd".repeat(32)]))
        .unwrap();
    assert!(events(&mut l).contains(&LinkEvent::PeerHello {
        peer: cid("west"),
        session: 1,
        gateways: vec![],
        roots: vec![root.clone(), "cd".repeat(32)],
    }));
    for bad in [
        vec![root.clone(); MAX_PEER_ROOTS + 1],
        vec!["AB".repeat(32)],
        vec!["ab".repeat(33)],
        vec!["not hex at all".into()],
        vec![String::new()],
    ] {
        let mut l = LinkSync::new(cid("east"), cid("west"), 9, vec![], LinkConfig::default());
        l.handle_connected(t0);
        assert!(
            matches!(
                l.handle_message(t0, hello(bad.clone())),
                Err(LinkError::ProtocolViolation(_))
            ),
            "{bad:?}"
        );
    }
}
