use super::*;

fn td(s: &str) -> TrustDomain {
    s.parse().unwrap()
}

#[test]
fn parses_valid_ids() {
    let cases = [
        ("spiffe://mesh.local", "mesh.local", ""),
        (
            "spiffe://mesh.local/cluster/east",
            "mesh.local",
            "/cluster/east",
        ),
        (
            "spiffe://example.org/ns/Prod/sa-1_x.y",
            "example.org",
            "/ns/Prod/sa-1_x.y",
        ),
        ("spiffe://a_b-c/x", "a_b-c", "/x"),
        ("spiffe://td/...", "td", "/..."),
        ("spiffe://td/.a/a.", "td", "/.a/a."),
    ];
    for (input, trust, path) in cases {
        let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
        assert_eq!(id.trust_domain().as_str(), trust);
        assert_eq!(id.path(), path);
        assert_eq!(id.to_string(), input);
        assert_eq!(input.parse::<SpiffeId>().unwrap(), id);
    }
}

#[test]
fn rejects_invalid_ids() {
    type Check = fn(&InvalidSpiffeId) -> bool;
    let long = format!("spiffe://td/{}", "a".repeat(2040));
    let cases: Vec<(&str, Check)> = vec![
        ("", |e| matches!(e, InvalidSpiffeId::WrongScheme { .. })),
        ("http://td/x", |e| {
            matches!(e, InvalidSpiffeId::WrongScheme { .. })
        }),
        ("SPIFFE://td/x", |e| {
            matches!(e, InvalidSpiffeId::WrongScheme { .. })
        }),
        ("spiffe:/td/x", |e| {
            matches!(e, InvalidSpiffeId::WrongScheme { .. })
        }),
        ("spiffe://", |e| {
            matches!(e, InvalidSpiffeId::MissingTrustDomain { .. })
        }),
        ("spiffe:///x", |e| {
            matches!(e, InvalidSpiffeId::MissingTrustDomain { .. })
        }),
        ("spiffe://TD/x", |e| {
            matches!(e, InvalidSpiffeId::TrustDomain(_))
        }),
        ("spiffe://t%64/x", |e| {
            matches!(e, InvalidSpiffeId::TrustDomain(_))
        }),
        ("spiffe://td:443/x", |e| {
            matches!(e, InvalidSpiffeId::PortOrUserInfo { .. })
        }),
        ("spiffe://user@td/x", |e| {
            matches!(e, InvalidSpiffeId::PortOrUserInfo { .. })
        }),
        ("spiffe://td/x?a=b", |e| {
            matches!(e, InvalidSpiffeId::QueryOrFragment { .. })
        }),
        ("spiffe://td/x#frag", |e| {
            matches!(e, InvalidSpiffeId::QueryOrFragment { .. })
        }),
        ("spiffe://td/", |e| {
            matches!(e, InvalidSpiffeId::EmptySegment { .. })
        }),
        ("spiffe://td/x/", |e| {
            matches!(e, InvalidSpiffeId::EmptySegment { .. })
        }),
        ("spiffe://td//x", |e| {
            matches!(e, InvalidSpiffeId::EmptySegment { .. })
        }),
        ("spiffe://td/./x", |e| {
            matches!(e, InvalidSpiffeId::DotSegment { .. })
        }),
        ("spiffe://td/x/..", |e| {
            matches!(e, InvalidSpiffeId::DotSegment { .. })
        }),
        ("spiffe://td/x%20y", |e| {
            matches!(e, InvalidSpiffeId::BadPathChar { ch: '%', .. })
        }),
        ("spiffe://td/a b", |e| {
            matches!(e, InvalidSpiffeId::BadPathChar { ch: ' ', .. })
        }),
        ("spiffe://td/é", |e| {
            matches!(e, InvalidSpiffeId::BadPathChar { .. })
        }),
        (&long, |e| matches!(e, InvalidSpiffeId::TooLong { .. })),
    ];
    for (input, check) in cases {
        let e = SpiffeId::parse(input).expect_err(input);
        assert!(check(&e), "{input:?} gave {e:?}");
        assert!(!e.to_string().is_empty());
    }
}

#[test]
fn max_length_is_accepted() {
    let path = "a".repeat(2048 - "spiffe://td/".len());
    let id = format!("spiffe://td/{path}");
    assert_eq!(id.len(), 2048);
    assert!(SpiffeId::parse(&id).is_ok());
}

#[test]
fn identities_from_ids() {
    let mesh = td("mesh.local");
    let cases = [
        (
            "spiffe://mesh.local/cluster/east/gateway",
            Identity::Gateway {
                cluster: "east".parse().unwrap(),
            },
            "gateway of east",
        ),
        (
            "spiffe://mesh.local/cluster/east/node/n1",
            Identity::Node {
                cluster: "east".parse().unwrap(),
                node: "n1".parse().unwrap(),
            },
            "node n1 of east",
        ),
        (
            "spiffe://mesh.local/cluster/west",
            Identity::ClusterCa {
                cluster: "west".parse().unwrap(),
            },
            "cluster CA of west",
        ),
    ];
    for (input, want, display) in cases {
        let id = SpiffeId::parse(input).unwrap();
        let got = Identity::from_spiffe(&id, &mesh).unwrap();
        assert_eq!(got, want);
        assert_eq!(got.to_string(), display);
        assert_eq!(got.spiffe_id(&mesh), id, "round trip");
        assert_eq!(got.cluster(), want.cluster());
    }
}

#[test]
fn rejects_foreign_and_unknown_identities() {
    let mesh = td("mesh.local");
    let unexpected = [
        "spiffe://mesh.local",
        "spiffe://mesh.local/cluster",
        "spiffe://mesh.local/cluster/east/gateway/x",
        "spiffe://mesh.local/cluster/east/node",
        "spiffe://mesh.local/cluster/east/node/n1/x",
        "spiffe://mesh.local/cluster/east/admin",
        "spiffe://mesh.local/ns/default/sa/web",
        "spiffe://mesh.local/Cluster/east",
    ];
    for input in unexpected {
        let id = SpiffeId::parse(input).unwrap();
        let e = Identity::from_spiffe(&id, &mesh).unwrap_err();
        assert!(
            matches!(e, InvalidSpiffeId::UnexpectedPath { .. }),
            "{input}: {e:?}"
        );
        assert!(e.to_string().contains("/cluster/<cluster>/gateway"), "{e}");
    }
    let bad_names = [
        "spiffe://mesh.local/cluster/East/gateway",
        "spiffe://mesh.local/cluster/east/node/N1",
        "spiffe://mesh.local/cluster/1east",
    ];
    for input in bad_names {
        let id = SpiffeId::parse(input).unwrap();
        let e = Identity::from_spiffe(&id, &mesh).unwrap_err();
        assert!(
            matches!(e, InvalidSpiffeId::BadName { .. }),
            "{input}: {e:?}"
        );
    }
    let other = SpiffeId::parse("spiffe://evil.example/cluster/east/gateway").unwrap();
    let e = Identity::from_spiffe(&other, &mesh).unwrap_err();
    assert!(
        matches!(e, InvalidSpiffeId::WrongTrustDomain { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("mesh.local"));
}

#[test]
fn serde_as_string() {
    let id = SpiffeId::parse("spiffe://mesh.local/cluster/east").unwrap();
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, "\"spiffe://mesh.local/cluster/east\"");
    assert_eq!(serde_json::from_str::<SpiffeId>(&json).unwrap(), id);
    assert!(serde_json::from_str::<SpiffeId>("\"spiffe://td/\"").is_err());
}
