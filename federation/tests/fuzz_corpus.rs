//! Replays the saved fuzz corpora (`fuzz/corpus/<target>/`) through the fuzz targets' entry
//! points, plus deterministic truncations and byte flips of every input, so what the fuzzers
//! found stays fixed without a nightly toolchain. `write_seeds` (ignored) regenerates the
//! hand-made seeds.

use std::path::PathBuf;

use ferry_federation::fuzzing;
use ferry_federation::{
    encode_frame, ExportedEndpoint, ExportedService, GoodbyeReason, JoinMessage, LinkMessage,
    LinkToken, TunnelHeader,
};

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Runs `entry` over every corpus input of `target` and over variants of each.
fn replay(target: &str, entry: fn(&[u8])) {
    let dir = corpus(target);
    let mut inputs = 0;
    for file in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let data = std::fs::read(file.unwrap().path()).unwrap();
        entry(&data);
        for cut in [1, 2, 3, 5, 8, 13] {
            entry(&data[..data.len().saturating_sub(cut)]);
        }
        for i in (0..data.len()).step_by(data.len() / 16 + 1) {
            for flip in [0x01, 0x80, 0xff] {
                let mut mutated = data.clone();
                mutated[i] ^= flip;
                entry(&mutated);
            }
        }
        inputs += 1;
    }
    assert!(inputs >= 3, "the {target} corpus holds seeds");
}

#[test]
fn link_frames_corpus() {
    replay("link_frames", fuzzing::link_frames);
}

#[test]
fn tunnel_header_corpus() {
    replay("tunnel_header", fuzzing::tunnel_header);
}

#[test]
fn link_token_corpus() {
    replay("link_token", fuzzing::link_token);
}

fn service(name: &str, headless: bool) -> ExportedService {
    ExportedService {
        name: name.parse().unwrap(),
        ports: vec!["http=80:8080/http".parse().unwrap()],
        healthy: [("http".parse().unwrap(), 2)].into_iter().collect(),
        headless,
        endpoints: if headless {
            vec![ExportedEndpoint {
                hostname: "kafka-0".parse().unwrap(),
                healthy: true,
            }]
        } else {
            vec![]
        },
        exported_at_ms: 1_700_000_000_000,
    }
}

#[test]
#[ignore = "writes the hand-made seeds into fuzz/corpus; run by hand"]
fn write_seeds() {
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = corpus(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    let link = [
        LinkMessage::Hello {
            cluster: "west".parse().unwrap(),
            session: 7,
            gateways: vec!["192.0.2.1:4433".parse().unwrap()],
            lease_ms: 5000,
            roots: vec![],
        },
        LinkMessage::Snapshot {
            seq: 1,
            services: vec![service("web.shop", false), service("kafka.data", true)],
        },
        LinkMessage::Delta {
            seq: 2,
            upserts: vec![service("api.shop", false)],
            removals: vec!["web.shop".parse().unwrap()],
        },
        LinkMessage::Heartbeat { seq: 2 },
        LinkMessage::Resync,
        LinkMessage::Goodbye {
            reason: GoodbyeReason::LinkRemoved,
        },
    ];
    let mut all = vec![7u8];
    for (i, msg) in link.iter().enumerate() {
        let mut one = vec![255u8];
        one.extend(encode_frame(msg));
        write("link_frames", &format!("link-{i}"), &one);
        all.extend(encode_frame(msg));
    }
    write("link_frames", "link-all-in-7-byte-chunks", &all);
    let join = [
        JoinMessage::Request {
            token_id: [1; 16],
            joiner: "west".parse().unwrap(),
            proof: [2; 32],
            gateways: vec!["[2001:db8::1]:4433".parse().unwrap()],
        },
        JoinMessage::Accepted {
            issuer: "east".parse().unwrap(),
            gateways: vec![],
        },
        JoinMessage::Refused {
            reason: "no".into(),
        },
    ];
    for (i, msg) in join.iter().enumerate() {
        let mut one = vec![3u8];
        one.extend(encode_frame(msg));
        write("link_frames", &format!("join-{i}"), &one);
    }
    write("link_frames", "too-large", &[1, 0xff, 0xff, 0xff, 0xff]);
    write("link_frames", "not-json", b"\x40\x00\x00\x00\x05{{{{{");

    let mut header = TunnelHeader {
        service: "web.shop".parse().unwrap(),
        port: "http".parse().unwrap(),
        cluster: Some("west".parse().unwrap()),
        hops: 1,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        endpoint: None,
        carries: ferry_federation::Carries::Bytes,
    };
    let mut v1 = Vec::new();
    header.encode(&mut v1);
    write("tunnel_header", "v1", &v1);
    header.endpoint = Some("kafka-0".parse().unwrap());
    header.cluster = None;
    header.traceparent = None;
    let mut v2 = Vec::new();
    header.encode(&mut v2);
    v2.extend_from_slice(b"payload after the header");
    write("tunnel_header", "v2-with-payload", &v2);
    header.endpoint = None;
    header.carries = ferry_federation::Carries::Http;
    let mut v3 = Vec::new();
    header.encode(&mut v3);
    v3.extend_from_slice(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n");
    write("tunnel_header", "v3-http", &v3);
    write("tunnel_header", "bad-magic", b"GET / HTTP/1.1\r\n");
    write("tunnel_header", "version-9", &[b'F', 9, 0, 1, b'a']);

    let token = LinkToken {
        issuer: "east".parse().unwrap(),
        trust_domain: "example.org".parse().unwrap(),
        peer: "west".parse().unwrap(),
        gateways: vec![
            "192.0.2.1:4433".parse().unwrap(),
            "[2001:db8::1]:4433".parse().unwrap(),
        ],
        bundle_fingerprint: [9; 32],
        id: [1; 16],
        secret: [2; 32],
        expires_at_unix: 1_900_000_000,
    };
    write("link_token", "valid", token.encode().as_bytes());
    write("link_token", "v2-prefix", b"ferry-link-v2.AAAA");
    write("link_token", "not-base64", b"ferry-link-v1.!!!!");
    write("link_token", "empty-body", b"ferry-link-v1.");
}
