use super::*;

fn header() -> TunnelHeader {
    TunnelHeader {
        service: "web.shop".parse().unwrap(),
        port: "http".parse().unwrap(),
        cluster: Some("east".parse().unwrap()),
        hops: 1,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        endpoint: None,
        carries: Carries::Bytes,
    }
}

fn endpoint_header() -> TunnelHeader {
    TunnelHeader {
        endpoint: Some("kafka-0".parse().unwrap()),
        ..header()
    }
}

fn encoded(h: &TunnelHeader) -> Vec<u8> {
    let mut out = Vec::new();
    h.encode(&mut out);
    out
}

#[test]
fn header_round_trip() {
    let minimal = TunnelHeader {
        cluster: None,
        traceparent: None,
        hops: 0,
        ..header()
    };
    let minimal_endpoint = TunnelHeader {
        endpoint: Some("10-0-0-5".parse().unwrap()),
        ..minimal.clone()
    };
    for h in [header(), minimal, endpoint_header(), minimal_endpoint] {
        let mut buf = encoded(&h);
        let len = buf.len();
        buf.extend_from_slice(b"payload");
        let (got, used) = TunnelHeader::decode(&buf).unwrap().unwrap();
        assert_eq!(got, h);
        assert_eq!(used, len);
        assert_eq!(&buf[used..], b"payload");
    }
}

#[test]
fn header_layout() {
    let h = TunnelHeader {
        cluster: None,
        traceparent: None,
        hops: 2,
        ..header()
    };
    assert_eq!(
        encoded(&h),
        b"F\x01\x02\x03web\x04shop\x04http\x00\x00".to_vec(),
        "without an endpoint the header is version 1, byte for byte"
    );
    let h = TunnelHeader {
        endpoint: Some("kafka-0".parse().unwrap()),
        ..h
    };
    assert_eq!(
        encoded(&h),
        b"F\x02\x02\x03web\x04shop\x04http\x00\x00\x07kafka-0".to_vec(),
        "with one, version 2 and the hostname last"
    );
    let http = TunnelHeader {
        carries: Carries::Http,
        ..h.clone()
    };
    assert_eq!(
        encoded(&http),
        b"F\x03\x02\x03web\x04shop\x04http\x00\x00\x07kafka-0\x01".to_vec(),
        "a stream of HTTP requests is version 3, with the kind last"
    );
    let http = TunnelHeader {
        endpoint: None,
        ..http
    };
    assert_eq!(
        encoded(&http),
        b"F\x03\x02\x03web\x04shop\x04http\x00\x00\x00\x01".to_vec(),
        "version 3 without an endpoint sends it empty"
    );
}

#[test]
fn version_3_round_trips_and_refuses_unknown_kinds() {
    for endpoint in [None, Some("kafka-0".parse().unwrap())] {
        let h = TunnelHeader {
            endpoint,
            carries: Carries::Http,
            ..header()
        };
        let buf = encoded(&h);
        assert_eq!(TunnelHeader::decode(&buf), Ok(Some((h.clone(), buf.len()))));
        for cut in 0..buf.len() {
            assert_eq!(TunnelHeader::decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
        let mut unknown = buf.clone();
        *unknown.last_mut().unwrap() = 7;
        assert!(
            matches!(
                TunnelHeader::decode(&unknown),
                Err(WireError::BadField {
                    field: "carries",
                    ..
                })
            ),
            "an unknown stream kind is refused, not read as bytes"
        );
    }
}

#[test]
fn truncated_header_needs_more() {
    for h in [header(), endpoint_header()] {
        let buf = encoded(&h);
        for cut in 0..buf.len() {
            assert_eq!(TunnelHeader::decode(&buf[..cut]), Ok(None), "cut at {cut}");
        }
    }
}

#[test]
fn encode_drops_unsendable_traceparent() {
    for bad in ["", "has space", &"a".repeat(256)] {
        let h = TunnelHeader {
            traceparent: Some(bad.to_string()),
            ..header()
        };
        let (got, _) = TunnelHeader::decode(&encoded(&h)).unwrap().unwrap();
        assert_eq!(got.traceparent, None, "{bad:?}");
    }
}

#[test]
fn garbage_headers_are_errors() {
    let good = encoded(&header());
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    type Check = fn(&WireError) -> bool;
    let mut oversize = vec![b'F', 1, 0];
    for _ in 0..5 {
        oversize.push(255);
        oversize.extend_from_slice(&[b'a'; 255]);
    }
    let mut bad_utf8 = b"F\x01\x00\x03w".to_vec();
    bad_utf8.extend_from_slice(&[0xff, 0xfe]);
    bad_utf8.extend_from_slice(b"\x04shop\x04http\x00\x00");
    let cases: Vec<(Vec<u8>, Check)> = vec![
        (b"GET / HTTP/1.1\r\n".to_vec(), |e| {
            *e == WireError::BadMagic(b'G')
        }),
        (vec![0], |e| *e == WireError::BadMagic(0)),
        (vec![b'F', 4], |e| *e == WireError::UnsupportedVersion(4)),
        (vec![b'F', 0], |e| *e == WireError::UnsupportedVersion(0)),
        (
            b"F\x02\x00\x03web\x04shop\x04http\x00\x00\x00".to_vec(),
            |e| {
                matches!(
                    e,
                    WireError::BadField {
                        field: "endpoint",
                        ..
                    }
                )
            },
        ),
        (
            b"F\x02\x00\x03web\x04shop\x04http\x00\x00\x07Kafka-0".to_vec(),
            |e| {
                matches!(
                    e,
                    WireError::BadField {
                        field: "endpoint",
                        ..
                    }
                )
            },
        ),
        (oversize, |e| *e == WireError::HeaderTooLarge),
        (bad_utf8, |e| {
            matches!(
                e,
                WireError::BadField {
                    field: "service",
                    ..
                }
            )
        }),
        (with(4, b'W'), |e| {
            matches!(
                e,
                WireError::BadField {
                    field: "service",
                    ..
                }
            )
        }),
        (b"F\x01\x00\x00\x04shop\x04http\x00\x00".to_vec(), |e| {
            matches!(
                e,
                WireError::BadField {
                    field: "service",
                    ..
                }
            )
        }),
        (b"F\x01\x00\x03web\x04sh.p\x04http\x00\x00".to_vec(), |e| {
            matches!(
                e,
                WireError::BadField {
                    field: "namespace",
                    ..
                }
            )
        }),
        (b"F\x01\x00\x03web\x04shop\x04HTTP\x00\x00".to_vec(), |e| {
            matches!(e, WireError::BadField { field: "port", .. })
        }),
        (
            b"F\x01\x00\x03web\x04shop\x04http\x02-x\x00".to_vec(),
            |e| {
                matches!(
                    e,
                    WireError::BadField {
                        field: "cluster",
                        ..
                    }
                )
            },
        ),
        (
            b"F\x01\x00\x03web\x04shop\x04http\x00\x02a\n".to_vec(),
            |e| {
                matches!(
                    e,
                    WireError::BadField {
                        field: "traceparent",
                        ..
                    }
                )
            },
        ),
    ];
    for (input, check) in cases {
        let e = TunnelHeader::decode(&input).expect_err(&format!("{input:?} should fail"));
        assert!(check(&e), "{input:?} gave {e:?}");
    }
}

#[test]
fn header_accepts_any_hop_count_for_admission_to_refuse() {
    let h = TunnelHeader {
        hops: 200,
        ..header()
    };
    let (got, _) = TunnelHeader::decode(&encoded(&h)).unwrap().unwrap();
    assert_eq!(got.hops, 200);
}

#[test]
fn tunnel_status_codes() {
    assert_eq!(TunnelStatus::Ok.encode(), [0, 0]);
    assert_eq!(TunnelStatus::decode([0, 0]), Ok(TunnelStatus::Ok));
    for code in 1..=9 {
        let r = Refusal::from_code(code).unwrap();
        let s = TunnelStatus::Refused(r);
        assert_eq!(s.encode(), [1, code]);
        assert_eq!(TunnelStatus::decode(s.encode()), Ok(s));
    }
    for bad in [[0, 1], [1, 0], [1, 10], [2, 0], [255, 255]] {
        assert_eq!(TunnelStatus::decode(bad), Err(WireError::BadStatus(bad)));
    }
}

fn sample_messages() -> Vec<LinkMessage> {
    let svc = ExportedService {
        name: "web.shop".parse().unwrap(),
        ports: vec!["http=80:8080/http".parse().unwrap()],
        healthy: [("http".parse().unwrap(), 3)].into_iter().collect(),
        headless: false,
        endpoints: Vec::new(),
        exported_at_ms: 1_700_000_000,
    };
    let headless = ExportedService {
        name: "kafka.data".parse().unwrap(),
        headless: true,
        endpoints: vec![
            ExportedEndpoint {
                hostname: "10-0-0-5".parse().unwrap(),
                healthy: true,
            },
            ExportedEndpoint {
                hostname: "kafka-1".parse().unwrap(),
                healthy: false,
            },
        ],
        ..svc.clone()
    };
    vec![
        LinkMessage::Hello {
            cluster: "east".parse().unwrap(),
            session: 7,
            gateways: vec!["192.0.2.1:4443".parse().unwrap()],
            lease_ms: 5000,
            roots: vec![],
        },
        LinkMessage::Snapshot {
            seq: 1,
            services: vec![svc.clone(), headless],
        },
        LinkMessage::Delta {
            seq: 2,
            upserts: vec![svc],
            removals: vec!["db.shop".parse().unwrap()],
        },
        LinkMessage::Heartbeat { seq: 2 },
        LinkMessage::Resync,
        LinkMessage::Goodbye {
            reason: GoodbyeReason::LinkRemoved,
        },
        LinkMessage::Goodbye {
            reason: GoodbyeReason::ShuttingDown,
        },
    ]
}

#[test]
fn frames_round_trip_in_any_chunking() {
    let msgs = sample_messages();
    let stream: Vec<u8> = msgs.iter().flat_map(encode_frame).collect();
    for chunk in [1, 2, 3, 7, 64, stream.len()] {
        let mut dec = FrameDecoder::<LinkMessage>::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            dec.push(piece);
            while let Some(m) = dec.next().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, msgs, "chunk size {chunk}");
    }
}

#[test]
fn join_messages_frame() {
    let msgs = vec![
        JoinMessage::Request {
            token_id: [3; 16],
            joiner: "west".parse().unwrap(),
            proof: [9; 32],
            gateways: vec!["[2001:db8::2]:4443".parse().unwrap()],
        },
        JoinMessage::Accepted {
            issuer: "east".parse().unwrap(),
            gateways: vec![],
        },
        JoinMessage::Refused {
            reason: "token expired".into(),
        },
    ];
    let mut dec = FrameDecoder::<JoinMessage>::new();
    for m in &msgs {
        dec.push(&encode_frame(m));
    }
    for m in &msgs {
        assert_eq!(dec.next().unwrap().as_ref(), Some(m));
    }
    assert_eq!(dec.next().unwrap(), None);
}

#[test]
fn oversize_frame_is_refused_before_its_body_arrives() {
    let mut dec = FrameDecoder::<LinkMessage>::new();
    dec.push(&((MAX_FRAME as u32) + 1).to_be_bytes());
    let e = dec.next().unwrap_err();
    assert_eq!(e, WireError::FrameTooLarge { len: MAX_FRAME + 1 });
    dec.push(b"more");
    assert_eq!(dec.next().unwrap_err(), e, "stays failed");

    let mut dec = FrameDecoder::<LinkMessage>::new();
    dec.push(&u32::MAX.to_be_bytes());
    assert!(matches!(dec.next(), Err(WireError::FrameTooLarge { .. })));

    // Exactly MAX_FRAME is allowed: the decoder waits for the body.
    let mut dec = FrameDecoder::<LinkMessage>::new();
    dec.push(&(MAX_FRAME as u32).to_be_bytes());
    assert_eq!(dec.next(), Ok(None));
}

#[test]
fn bad_frame_bodies_are_errors() {
    for body in [
        &b"not json"[..],
        b"{}",
        b"{\"heartbeat\":{\"seq\":-1}}",
        b"",
    ] {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        let mut dec = FrameDecoder::<LinkMessage>::new();
        dec.push(&frame);
        assert!(
            matches!(dec.next(), Err(WireError::BadFrame(_))),
            "{body:?}"
        );
    }
    // A name that breaks its rules is refused while decoding.
    let body = br#"{"hello":{"cluster":"EAST","session":1,"gateways":[],"lease_ms":1}}"#;
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    let mut dec = FrameDecoder::<LinkMessage>::new();
    dec.push(&frame);
    assert!(matches!(dec.next(), Err(WireError::BadFrame(_))));
}

#[test]
fn exported_service_new_fields_are_optional_both_ways() {
    // What a peer that predates headless services sends: decodes as a plain service.
    let old = r#"{"name":"web.shop","ports":["http=80/http"],"healthy":{"http":2}}"#;
    let svc: ExportedService = serde_json::from_str(old).unwrap();
    assert!(!svc.headless);
    assert!(svc.endpoints.is_empty());
    // A plain service is sent exactly as before, so old peers see no change.
    assert_eq!(serde_json::to_string(&svc).unwrap(), old);
    // A headless one carries hostnames and health, never addresses.
    let new = r#"{"name":"kafka.data","ports":["b=9092/tcp"],"healthy":{"b":1},"headless":true,"endpoints":[{"hostname":"kafka-0","healthy":true}]}"#;
    let svc: ExportedService = serde_json::from_str(new).unwrap();
    assert!(svc.headless);
    assert_eq!(svc.endpoints[0].hostname.as_str(), "kafka-0");
    assert_eq!(serde_json::to_string(&svc).unwrap(), new);
    // Unknown fields from a newer peer are ignored, as before; bad hostnames are refused.
    let newer = r#"{"name":"web.shop","ports":[],"healthy":{},"later":1}"#;
    assert!(serde_json::from_str::<ExportedService>(newer).is_ok());
    let bad =
        r#"{"name":"k.d","ports":[],"healthy":{},"endpoints":[{"hostname":"-x","healthy":true}]}"#;
    assert!(serde_json::from_str::<ExportedService>(bad).is_err());
}
