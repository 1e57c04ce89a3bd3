//! Property tests: decoders and parsers never panic on arbitrary input, and encodings round-trip.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use std::collections::BTreeMap;

use ferry_federation::{
    encode_frame, ClusterId, EndpointAddr, ExportedEndpoint, ExportedService, FrameDecoder,
    GoodbyeReason, ImportLimits, JoinMessage, Label, LinkConfig, LinkMessage, LinkSync, LinkToken,
    ServiceName, SpiffeId, TunnelHeader,
};

/// One service of a small pool with 1 to 3 ports (over a bound of 2 when 3).
fn pooled_service() -> impl Strategy<Value = ExportedService> {
    (0usize..6, 1usize..=3, 0u32..3).prop_map(|(i, ports, healthy)| ExportedService {
        name: format!("s{i}.ns").parse().unwrap(),
        ports: (0..ports)
            .map(|p| format!("p{p}={}", 8000 + p).parse().unwrap())
            .collect(),
        healthy: [("p0".parse().unwrap(), healthy)].into_iter().collect(),
        headless: false,
        endpoints: vec![],
        exported_at_ms: 0,
    })
}

/// A delta over the pool: upserts and removals of distinct names.
fn pooled_delta() -> impl Strategy<Value = (Vec<ExportedService>, Vec<ServiceName>)> {
    (
        proptest::collection::vec(pooled_service(), 0..4),
        proptest::collection::vec(0usize..6, 0..3),
    )
        .prop_map(|(upserts, removed)| {
            let mut seen = std::collections::BTreeSet::new();
            let upserts: Vec<_> = upserts
                .into_iter()
                .filter(|s| seen.insert(s.name.clone()))
                .collect();
            let removals = removed
                .into_iter()
                .map(|i| format!("s{i}.ns").parse::<ServiceName>().unwrap())
                .filter(|n| seen.insert(n.clone()))
                .collect();
            (upserts, removals)
        })
}

fn cluster() -> impl Strategy<Value = ClusterId> {
    "[a-z]([a-z0-9-]{0,20}[a-z0-9])?".prop_map(|s| s.parse().unwrap())
}

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
}

fn hostname() -> impl Strategy<Value = Label> {
    label().prop_map(|s| s.parse().unwrap())
}

fn service_name() -> impl Strategy<Value = ServiceName> {
    (label(), label()).prop_map(|(n, ns)| format!("{n}.{ns}").parse().unwrap())
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::new(IpAddr::from(ip), p)),
    ]
}

fn header() -> impl Strategy<Value = TunnelHeader> {
    (
        service_name(),
        "[a-z]([a-z0-9-]{0,13}[a-z0-9])?",
        proptest::option::of(cluster()),
        any::<u8>(),
        proptest::option::of("[!-~]{1,255}"),
        proptest::option::of(hostname()),
        any::<bool>(),
    )
        .prop_map(
            |(service, port, cluster, hops, traceparent, endpoint, http)| TunnelHeader {
                service,
                port: port.parse().unwrap(),
                cluster,
                hops,
                traceparent,
                endpoint,
                carries: match http {
                    true => ferry_federation::Carries::Http,
                    false => ferry_federation::Carries::Bytes,
                },
            },
        )
}

fn token() -> impl Strategy<Value = LinkToken> {
    (
        cluster(),
        "[a-z0-9_-]{1,20}(\\.[a-z0-9_-]{1,20}){0,3}",
        cluster(),
        proptest::collection::vec(socket_addr(), 0..8),
        any::<[u8; 32]>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
        any::<u64>(),
    )
        .prop_map(
            |(issuer, td, peer, gateways, bundle_fingerprint, id, secret, expires_at_unix)| {
                LinkToken {
                    issuer,
                    trust_domain: td.parse().unwrap(),
                    peer,
                    gateways,
                    bundle_fingerprint,
                    id,
                    secret,
                    expires_at_unix,
                }
            },
        )
}

fn exported() -> impl Strategy<Value = ExportedService> {
    (
        "[a-c]\\.ns",
        0u32..3,
        proptest::collection::vec((hostname(), any::<bool>()), 0..3),
    )
        .prop_map(|(name, healthy, endpoints)| ExportedService {
            name: name.parse().unwrap(),
            ports: vec!["http=80/http".parse().unwrap()],
            healthy: [("http".parse().unwrap(), healthy)].into_iter().collect(),
            headless: !endpoints.is_empty(),
            endpoints: endpoints
                .into_iter()
                .map(|(hostname, healthy)| ExportedEndpoint { hostname, healthy })
                .collect(),
            exported_at_ms: 0,
        })
}

fn link_message() -> impl Strategy<Value = LinkMessage> {
    let seq = 0u64..8;
    prop_oneof![
        (
            prop_oneof![Just("west"), Just("north")],
            0u64..3,
            0u64..10_000
        )
            .prop_map(|(c, session, lease_ms)| LinkMessage::Hello {
                cluster: c.parse().unwrap(),
                session,
                gateways: vec![],
                lease_ms,
                roots: vec![],
            }),
        (seq.clone(), proptest::collection::vec(exported(), 0..4))
            .prop_map(|(seq, services)| LinkMessage::Snapshot { seq, services }),
        (
            seq.clone(),
            proptest::collection::vec(exported(), 0..3),
            proptest::collection::vec("[a-c]\\.ns", 0..2)
        )
            .prop_map(|(seq, upserts, removals)| LinkMessage::Delta {
                seq,
                upserts,
                removals: removals.iter().map(|r| r.parse().unwrap()).collect(),
            }),
        seq.prop_map(|seq| LinkMessage::Heartbeat { seq }),
        Just(LinkMessage::Resync),
        Just(LinkMessage::Goodbye {
            reason: GoodbyeReason::LinkRemoved
        }),
        Just(LinkMessage::Goodbye {
            reason: GoodbyeReason::ShuttingDown
        }),
    ]
}

proptest! {
    #[test]
    fn tunnel_header_decode_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..1500)) {
        if let Ok(Some((h, used))) = TunnelHeader::decode(&buf) {
            prop_assert!(used <= buf.len());
            // Decoding is canonical: re-encoding gives back exactly the bytes consumed.
            let mut again = Vec::new();
            h.encode(&mut again);
            prop_assert_eq!(&again[..], &buf[..used]);
        }
    }

    #[test]
    fn tunnel_header_decode_never_panics_near_valid(
        h in header(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        cut in any::<usize>(),
    ) {
        let mut buf = Vec::new();
        h.encode(&mut buf);
        for (i, b) in flips {
            let i = i % buf.len();
            buf[i] = b;
        }
        let cut = cut % (buf.len() + 1);
        let _ = TunnelHeader::decode(&buf[..cut]);
    }

    #[test]
    fn tunnel_header_round_trips(h in header(), tail in proptest::collection::vec(any::<u8>(), 0..16)) {
        let mut buf = Vec::new();
        h.encode(&mut buf);
        let len = buf.len();
        prop_assert!(len <= 1024);
        for cut in 0..len {
            prop_assert_eq!(TunnelHeader::decode(&buf[..cut]), Ok(None));
        }
        buf.extend_from_slice(&tail);
        let (got, used) = TunnelHeader::decode(&buf).unwrap().unwrap();
        prop_assert_eq!(got, h);
        prop_assert_eq!(used, len);
    }

    #[test]
    fn endpoint_addrs_round_trip(
        ip in prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<[u8; 16]>().prop_map(IpAddr::from),
        ],
        port in proptest::option::of(1u16..),
        hostname in proptest::option::of(hostname()),
    ) {
        let e = EndpointAddr { ip, port, hostname };
        let text = e.to_string();
        prop_assert_eq!(text.parse::<EndpointAddr>(), Ok(e.clone()));
        // The default hostname of any IP is a valid label (it is built, never panics).
        let _ = EndpointAddr { hostname: None, ..e }.hostname_or_default();
    }

    #[test]
    fn endpoint_parse_never_panics(s in "\\PC{0,80}", t in "[a-z0-9=:.\\[\\]-]{0,40}") {
        let _ = s.parse::<EndpointAddr>();
        let _ = t.parse::<EndpointAddr>();
    }

    #[test]
    fn frame_decoder_never_panics(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..16),
    ) {
        let mut dec = FrameDecoder::<LinkMessage>::new();
        let mut join = FrameDecoder::<JoinMessage>::new();
        for c in &chunks {
            dec.push(c);
            join.push(c);
            while let Ok(Some(_)) = dec.next() {}
            while let Ok(Some(_)) = join.next() {}
        }
    }

    #[test]
    fn frames_round_trip_with_arbitrary_splits(
        msgs in proptest::collection::vec(link_message(), 0..8),
        split in 1usize..50,
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
        let mut dec = FrameDecoder::<LinkMessage>::new();
        let mut got = Vec::new();
        for c in stream.chunks(split) {
            dec.push(c);
            while let Some(m) = dec.next().unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn link_token_decode_never_panics(s in "\\PC{0,300}") {
        let _ = LinkToken::decode(&s);
    }

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let s = String::from_utf8_lossy(&bytes);
        let _ = LinkToken::decode(&s);
        let _ = LinkToken::decode(&format!("ferry-link-v1.{s}"));
        let _ = SpiffeId::parse(&s);
        let _ = SpiffeId::parse(&format!("spiffe://{s}"));
    }

    #[test]
    fn link_token_decode_never_panics_on_base64ish(body in "[A-Za-z0-9_-]{0,400}") {
        let _ = LinkToken::decode(&format!("ferry-link-v1.{body}"));
    }

    #[test]
    fn link_token_round_trips(t in token()) {
        let s = t.encode();
        prop_assert_eq!(LinkToken::decode(&s).unwrap(), t);
    }

    #[test]
    fn link_token_damage_is_detected(t in token(), i in any::<usize>(), c in "[A-Za-z0-9_-]") {
        let s = t.encode();
        let prefix = "ferry-link-v1.".len();
        let i = prefix + i % (s.len() - prefix);
        let mut damaged = s.clone();
        damaged.replace_range(i..i + 1, &c);
        if damaged != s {
            // A changed character is caught unless it only touched unused trailing bits.
            if let Ok(back) = LinkToken::decode(&damaged) {
                prop_assert_eq!(back, t);
            }
        }
        prop_assert!(LinkToken::decode(&s[..s.len() - 1 - (i % 8)]).is_err());
    }

    #[test]
    fn spiffe_parse_never_panics(s in "\\PC{0,300}") {
        let _ = SpiffeId::parse(&s);
    }

    #[test]
    fn spiffe_parse_round_trips_what_it_accepts(s in "spiffe://[a-z0-9._%:@A-Z-]{0,12}(/[a-zA-Z0-9._%?# -]{0,6}){0,4}") {
        if let Ok(id) = SpiffeId::parse(&s) {
            prop_assert_eq!(id.to_string(), s.clone());
            prop_assert_eq!(SpiffeId::parse(&id.to_string()).unwrap(), id);
        }
    }

    #[test]
    fn link_sync_never_panics(
        steps in proptest::collection::vec((link_message(), 0u64..3000, any::<bool>()), 0..40),
    ) {
        let t0 = base_instant();
        let mut now = t0;
        let mut l = LinkSync::new(
            "east".parse().unwrap(),
            "west".parse().unwrap(),
            1,
            vec![],
            LinkConfig::default(),
        );
        l.handle_connected(now);
        for (msg, advance_ms, reconnect) in steps {
            now += Duration::from_millis(advance_ms);
            if reconnect {
                l.handle_disconnected(now);
                l.handle_connected(now);
            }
            let _ = l.handle_message(now, msg);
            if l.poll_timeout().is_some_and(|t| t <= now) {
                l.handle_timeout(now);
            }
            while l.poll_transmit().is_some() {}
            while l.poll_event().is_some() {}
            // Imports are always a sorted set.
            let names: Vec<_> = l.imports().iter().map(|s| s.name.clone()).collect();
            let mut sorted = names.clone();
            sorted.sort();
            sorted.dedup();
            prop_assert_eq!(names, sorted);
        }
    }
}

proptest! {
    /// Deltas applied name by name keep the bounds (at most 3 services, none with more
    /// than 2 ports), and, as long as no name had to be refused for the services bound,
    /// import exactly what a snapshot of the peer's whole current set would.
    #[test]
    fn deltas_import_what_a_snapshot_would(deltas in proptest::collection::vec(pooled_delta(), 1..30)) {
        let limits = ImportLimits { services: 3, ports: 2, ..ImportLimits::DEFAULT };
        let config = LinkConfig { limits, ..LinkConfig::default() };
        let now = base_instant();
        let mut l = LinkSync::new("east".parse().unwrap(), "west".parse().unwrap(), 1, vec![], config);
        l.handle_connected(now);
        l.handle_message(now, LinkMessage::Snapshot { seq: 1, services: vec![] }).unwrap();
        let mut exported: BTreeMap<ServiceName, ExportedService> = BTreeMap::new();
        let mut over_bound_once = false;
        for (seq, (upserts, removals)) in deltas.into_iter().enumerate() {
            for n in &removals {
                exported.remove(n);
            }
            for s in &upserts {
                exported.insert(s.name.clone(), s.clone());
            }
            l.handle_message(now, LinkMessage::Delta { seq: seq as u64 + 2, upserts, removals }).unwrap();
            while l.poll_event().is_some() {}
            let imports = l.imports();
            prop_assert!(imports.len() <= 3);
            prop_assert!(imports.iter().all(|s| s.ports.len() <= 2));
            over_bound_once |= l.limited().iter().any(|x| x.kind() == "services");
            if !over_bound_once {
                let mut fresh = LinkSync::new("east".parse().unwrap(), "west".parse().unwrap(), 1, vec![], config);
                fresh.handle_connected(now);
                fresh.handle_message(now, LinkMessage::Snapshot { seq: 1, services: exported.values().cloned().collect() }).unwrap();
                prop_assert_eq!(imports, fresh.imports());
            }
        }
    }
}

/// A base instant for virtual time; tests advance it by adding durations.
#[allow(clippy::disallowed_methods)] // only the base of virtual time, never read again
fn base_instant() -> Instant {
    Instant::now()
}
