//! Arbitrary bytes through the whole UDP and TCP request path (precheck, rate limit, hickory's
//! parser, the handler, the encoder): no panic, and every UDP reply within the bound.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use ferry_dns::handler::{udp_answer_limit, MeshHandler, MAX_AMPLIFICATION};
use ferry_dns::server::{triage, Datagram};
use ferry_dns::{Zone, ZoneConfig};
use ferry_federation::{
    ClusterId, EndpointAddr, EndpointRecord, EndpointState, MeshSnapshot, RemoteState,
    ServiceRecord, TrustDomain,
};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{Name, RecordType};
use hickory_server::net::xfer::Protocol;
use hickory_server::server::Request;
use proptest::prelude::*;

fn snapshot() -> MeshSnapshot {
    let svc = |name: &str, vip: &str, headless: bool| ServiceRecord {
        name: name.parse().unwrap(),
        vip: vip.parse().unwrap(),
        ports: vec![
            "http=80/http".parse().unwrap(),
            "dns=53/udp".parse().unwrap(),
        ],
        exported: true,
        local: vec![EndpointState {
            addr: "10.0.0.1".parse::<EndpointAddr>().unwrap(),
            healthy: true,
        }],
        remote: vec![RemoteState {
            cluster: ClusterId::new("west").unwrap(),
            healthy: BTreeMap::from([("http".parse().unwrap(), 1)]),
        }],
        exported_at_ms: 0,
        conflicts: vec![],
        headless,
        endpoints: if headless {
            (0..30)
                .map(|i| EndpointRecord {
                    cluster: ClusterId::new("west").unwrap(),
                    hostname: format!("h-{i}").parse().unwrap(),
                    vip: format!("127.10.2.{i}").parse().unwrap(),
                    healthy: true,
                })
                .collect()
        } else {
            vec![]
        },
    };
    MeshSnapshot {
        version: 1,
        cluster: ClusterId::new("east").unwrap(),
        trust_domain: TrustDomain::new("example.org").unwrap(),
        services: vec![
            svc("api.shop", "127.10.0.1", false),
            svc("big.shop", "127.10.0.2", true),
        ],
        links: vec![],
        gateways: vec![],
        policies: vec![],
    }
}

fn handler() -> Arc<MeshHandler> {
    let cfg = ZoneConfig::new("clusterset.local", vec!["127.10.0.0/16".parse().unwrap()]).unwrap();
    Arc::new(MeshHandler::new(
        Zone::build(&cfg, &snapshot()),
        None,
        vec![],
    ))
}

fn src() -> SocketAddr {
    "127.0.0.1:5000".parse().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs one datagram through the UDP path; returns the reply, if any.
fn udp(handler: &MeshHandler, rt: &tokio::runtime::Runtime, packet: &[u8]) -> Option<Vec<u8>> {
    match triage(packet, src(), None) {
        Datagram::Ignore => None,
        Datagram::Reply(h) => Some(h.to_vec()),
        Datagram::Answer { request, limit } => {
            let reply = rt.block_on(handler.respond(&request, limit));
            assert!(
                reply.len() <= usize::from(limit),
                "{} > {limit}",
                reply.len()
            );
            Some(reply)
        }
    }
}

fn valid_queries() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (name, rtype) in [
        ("api.shop.svc.clusterset.local.", RecordType::A),
        ("big.shop.svc.clusterset.local.", RecordType::SRV),
        ("big.shop.svc.clusterset.local.", RecordType::A),
        ("_http._tcp.big.shop.svc.clusterset.local.", RecordType::SRV),
        ("dns-version.clusterset.local.", RecordType::TXT),
        ("1.0.10.127.in-addr.arpa.", RecordType::PTR),
        ("nope.svc.clusterset.local.", RecordType::ANY),
    ] {
        for edns in [false, true] {
            let mut m = Message::query();
            m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
            if edns {
                let mut e = Edns::new();
                e.set_max_payload(4096);
                m.set_edns(e);
            }
            out.push(m.to_vec().unwrap());
        }
    }
    out
}

fn check_reply(query: &[u8], reply: &[u8]) {
    assert!(
        reply.len() <= MAX_AMPLIFICATION * query.len().max(12),
        "a {}-byte reply to a {}-byte query",
        reply.len(),
        query.len()
    );
    assert_eq!(reply[..2], query[..2], "reply carries the query ID");
    assert!(reply[2] & 0x80 != 0, "QR set");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(packet in proptest::collection::vec(any::<u8>(), 0..700)) {
        let (h, rt) = (handler(), runtime());
        if let Some(reply) = udp(&h, &rt, &packet) {
            check_reply(&packet, &reply);
        }
        // The same bytes as a TCP message.
        if let Ok(request) = Request::from_bytes(packet.clone(), src(), Protocol::Tcp) {
            let _ = rt.block_on(h.respond(&request, u16::MAX));
        }
    }

    #[test]
    fn mutated_queries_never_panic(
        which in 0usize..14,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let (h, rt) = (handler(), runtime());
        let mut packet = valid_queries()[which].clone();
        for (i, b) in flips {
            let i = i % packet.len();
            packet[i] = b;
        }
        packet.truncate(12.max(cut % (packet.len() + 1)));
        if let Some(reply) = udp(&h, &rt, &packet) {
            check_reply(&packet, &reply);
        }
    }
}

#[test]
fn valid_queries_get_answers_within_the_bound() {
    let (h, rt) = (handler(), runtime());
    for q in valid_queries() {
        let reply = udp(&h, &rt, &q).expect("a reply");
        check_reply(&q, &reply);
        let limit = udp_answer_limit(q.len(), 4096);
        let parsed = Message::from_vec(&reply).unwrap();
        assert!(reply.len() <= usize::from(limit));
        // The 30-endpoint SRV answer does not fit: truncated, never partial-and-silent.
        if parsed.answers.is_empty()
            && parsed.metadata.response_code == hickory_proto::op::ResponseCode::NoError
        {
            assert!(
                parsed.metadata.truncation || !parsed.authorities.is_empty(),
                "{parsed:?}"
            );
        }
    }
}

#[test]
fn additionals_that_do_not_fit_are_dropped_without_tc() {
    // Two headless endpoints: the SRV answer fits a plain UDP reply within 4x the query,
    // the addresses of its targets do not (RFC 2181 section 9: leave them out, no TC).
    let mut snap = snapshot();
    snap.services[1].endpoints.truncate(2);
    let cfg = ZoneConfig::new("clusterset.local", vec![]).unwrap();
    let h = MeshHandler::new(Zone::build(&cfg, &snap), None, vec![]);
    let rt = runtime();
    for (edns, additionals) in [(false, 0), (true, 2)] {
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("_http._tcp.big.shop.svc.clusterset.local.").unwrap(),
            RecordType::SRV,
        ));
        if edns {
            m.set_edns(Edns::new());
        }
        let reply = udp(&h, &rt, &m.to_vec().unwrap()).unwrap();
        let reply = Message::from_vec(&reply).unwrap();
        assert_eq!(reply.answers.len(), 2, "edns={edns}");
        assert!(!reply.metadata.truncation, "edns={edns}");
        let addresses = reply
            .additionals
            .iter()
            .filter(|r| r.record_type() == RecordType::A)
            .count();
        assert_eq!(addresses, additionals, "edns={edns}");
    }
}

#[test]
fn recursion_is_refused_outside_forward_from() {
    let cfg = ZoneConfig::new("clusterset.local", vec![]).unwrap();
    // An upstream is configured, but only 10.0.0.0/8 may use it.
    let h = MeshHandler::new(
        Zone::build(&cfg, &snapshot()),
        ferry_dns::forward::Forwarder::new(vec!["127.0.0.1:9".parse().unwrap()]),
        vec!["10.0.0.0/8".parse().unwrap()],
    );
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_ascii("example.com.").unwrap(),
        RecordType::A,
    ));
    let request = Request::from_bytes(m.to_vec().unwrap(), src(), Protocol::Udp).unwrap();
    let reply = Message::from_vec(&runtime().block_on(h.respond(&request, 512))).unwrap();
    assert_eq!(
        reply.metadata.response_code,
        hickory_proto::op::ResponseCode::Refused
    );
}
