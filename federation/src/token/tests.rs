use super::*;

fn sample() -> LinkToken {
    LinkToken {
        issuer: "east".parse().unwrap(),
        trust_domain: "mesh.local".parse().unwrap(),
        peer: "west".parse().unwrap(),
        gateways: vec![
            "192.0.2.1:4443".parse().unwrap(),
            "[2001:db8::1]:4443".parse().unwrap(),
        ],
        bundle_fingerprint: [7; 32],
        id: [1; 16],
        secret: [42; 32],
        expires_at_unix: 1_700_000_000,
    }
}

#[test]
fn round_trip() {
    let t = sample();
    let s = t.encode();
    assert!(s.starts_with("ferry-link-v1."), "{s}");
    assert!(s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    assert_eq!(LinkToken::decode(&s).unwrap(), t);
    assert_eq!(
        LinkToken::decode(&format!("  {s}\n")).unwrap(),
        t,
        "whitespace trimmed"
    );
    let empty = LinkToken {
        gateways: vec![],
        ..sample()
    };
    assert_eq!(LinkToken::decode(&empty.encode()).unwrap(), empty);
}

#[test]
fn debug_redacts_secret() {
    let dbg = format!("{:?}", sample());
    assert!(dbg.contains("<redacted>"), "{dbg}");
    assert!(!dbg.contains("42"), "secret bytes leaked: {dbg}");
    assert!(dbg.contains("east"));
}

#[test]
fn decode_rejects() {
    let good = sample().encode();
    let body = good.strip_prefix(TOKEN_PREFIX).unwrap();
    let mut flipped = body.as_bytes().to_vec();
    let mid = flipped.len() / 2;
    flipped[mid] = if flipped[mid] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{TOKEN_PREFIX}{}", String::from_utf8(flipped).unwrap());
    let truncated = &good[..good.len() - 4];
    let truncated_more = &good[..TOKEN_PREFIX.len() + 10];
    let no_checksum = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode([1u8, 2, 3]));

    type Check = fn(&TokenError) -> bool;
    let cases: Vec<(String, Check)> = vec![
        ("".into(), |e| *e == TokenError::NotAToken),
        ("hello".into(), |e| *e == TokenError::NotAToken),
        (body.into(), |e| *e == TokenError::NotAToken),
        ("ferry-link-v1".into(), |e| *e == TokenError::NotAToken),
        (format!("ferry-link-v2.{body}"), |e| {
            *e == TokenError::UnsupportedVersion("v2".into())
        }),
        (format!("{TOKEN_PREFIX}not base64!"), |e| {
            *e == TokenError::Encoding
        }),
        (format!("{good}="), |e| *e == TokenError::Encoding),
        (tampered, |e| *e == TokenError::Corrupted),
        (truncated.into(), |e| {
            matches!(e, TokenError::Corrupted | TokenError::Encoding)
        }),
        (truncated_more.into(), |e| {
            matches!(e, TokenError::Corrupted | TokenError::Encoding)
        }),
        (TOKEN_PREFIX.into(), |e| *e == TokenError::Corrupted),
        (no_checksum, |e| *e == TokenError::Corrupted),
    ];
    for (input, check) in cases {
        let e = LinkToken::decode(&input).expect_err(&input);
        assert!(check(&e), "{input:?} gave {e:?}");
    }
    let msg = TokenError::Corrupted.to_string();
    assert!(msg.contains("modified or truncated") && msg.contains("ferry link create"));
}

/// Builds a token body with a valid checksum around arbitrary payload bytes.
fn with_checksum(payload: &[u8]) -> String {
    let mut buf = payload.to_vec();
    let sum = digest::digest(&digest::SHA256, payload);
    buf.extend_from_slice(&sum.as_ref()[..CHECKSUM_LEN]);
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&buf))
}

#[test]
fn malformed_payloads_with_valid_checksum() {
    let good = sample().encode();
    let raw = URL_SAFE_NO_PAD
        .decode(good.strip_prefix(TOKEN_PREFIX).unwrap())
        .unwrap();
    let payload = &raw[..raw.len() - CHECKSUM_LEN];
    assert!(LinkToken::decode(&with_checksum(payload)).is_ok());

    let mut trailing = payload.to_vec();
    trailing.push(0);
    let short = &payload[..payload.len() - 1];
    let mut bad_issuer = payload.to_vec();
    bad_issuer[1] = b'E'; // "east" -> "East"
    let mut bad_family = payload.to_vec();
    let family_at = 1 + 4 + 1 + 10 + 1 + 4 + 1;
    assert_eq!(bad_family[family_at], 4);
    bad_family[family_at] = 5;
    for p in [&trailing[..], short, &bad_issuer, &bad_family, &[][..]] {
        let e = LinkToken::decode(&with_checksum(p)).unwrap_err();
        assert!(matches!(e, TokenError::Malformed(_)), "{e:?}");
        assert!(e.to_string().contains("ferry link create"));
    }
}

#[test]
fn expiry() {
    let t = sample();
    assert!(!t.is_expired(t.expires_at_unix - 1));
    assert!(t.is_expired(t.expires_at_unix));
    assert!(t.is_expired(t.expires_at_unix + 1));
}

#[test]
fn join_proofs() {
    let secret = [9u8; 32];
    let east: ClusterId = "east".parse().unwrap();
    let west: ClusterId = "west".parse().unwrap();
    let proof = join_proof(&secret, b"binding", &west);
    assert_eq!(
        proof,
        join_proof(&secret, b"binding", &west),
        "deterministic"
    );
    assert!(verify_join_proof(&secret, b"binding", &west, &proof));
    assert!(!verify_join_proof(&[8u8; 32], b"binding", &west, &proof));
    assert!(!verify_join_proof(&secret, b"other", &west, &proof));
    assert!(!verify_join_proof(&secret, b"binding", &east, &proof));
    assert!(!verify_join_proof(&secret, b"binding", &west, &proof[..31]));
    assert!(!verify_join_proof(&secret, b"binding", &west, &[]));
    let mut flipped = proof;
    flipped[0] ^= 1;
    assert!(!verify_join_proof(&secret, b"binding", &west, &flipped));
    // The binding is length-prefixed, so moving bytes between binding and joiner changes it.
    let a = join_proof(&secret, b"bind", &"ingwest".parse().unwrap());
    let b = join_proof(&secret, b"binding", &"west".parse().unwrap());
    assert_ne!(a, b);
}

#[test]
fn bundle_fingerprints() {
    let a = vec![1u8, 2, 3];
    let b = vec![4u8, 5];
    let fp = bundle_fingerprint(&[a.clone(), b.clone()]);
    assert_eq!(
        fp,
        bundle_fingerprint(&[b.clone(), a.clone()]),
        "order independent"
    );
    assert_ne!(fp, bundle_fingerprint(std::slice::from_ref(&a)));
    assert_ne!(
        bundle_fingerprint(&[vec![1, 2], vec![3]]),
        bundle_fingerprint(&[vec![1], vec![2, 3]]),
        "length prefixes keep boundaries"
    );
    let hex = fingerprint_hex(&fp);
    assert!(hex.starts_with("sha256:"));
    assert_eq!(hex.len(), 7 + 64);
    assert!(hex[7..]
        .bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
    // SHA-256 of nothing, a fixed known value.
    assert_eq!(
        fingerprint_hex(&bundle_fingerprint(&[])),
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
