use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::control::store::RedeemError;

/// A control plane for cluster `east` in a temporary directory, with `extra` config.
fn plane(extra: &str) -> (tempfile::TempDir, Arc<ControlPlane>) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    crate::trust::init(&"example.org".parse().unwrap(), &root).unwrap();
    crate::trust::issue(
        &root,
        &"east".parse().unwrap(),
        &dir.path().join("east-ca"),
        None,
    )
    .unwrap();
    let text = format!(
        "cluster = \"east\"\n[trust]\ndir = \"east-ca\"\n[control]\ndata_dir = \"data\"\nvip_range = \"127.200.0.0/24\"\n{extra}"
    );
    let cfg = Config::parse(&text, dir.path()).unwrap();
    (dir, ControlPlane::open(cfg).unwrap())
}

fn spec(name: &str, port: &str) -> ServiceSpec {
    ServiceSpec::new(
        name.parse().unwrap(),
        vec![port.parse().unwrap()],
        vec!["127.0.0.1:9".parse().unwrap()],
    )
    .unwrap()
}

/// Deterministic "randomness": 1, 2, 3, …
fn counter() -> impl FnMut(&mut [u8]) {
    let mut next = 0u8;
    move |buf: &mut [u8]| {
        for b in buf {
            next = next.wrapping_add(1);
            *b = next;
        }
    }
}

#[test]
fn link_tokens_follow_the_clock_they_are_given() {
    let (_dir, cp) = plane("");
    let west: ClusterId = "west".parse().unwrap();
    let ttl = Duration::from_secs(60);
    let err = cp
        .create_link_token(1000, &mut counter(), west.clone(), ttl)
        .unwrap_err();
    assert!(
        matches!(err, ControlError::Precondition(_)),
        "no gateway yet: {err}"
    );
    cp.register_gateway("192.0.2.1:4433".parse().unwrap(), Duration::from_secs(60))
        .unwrap();
    for (peer, ttl, why) in [
        ("east", ttl, "cannot link to itself"),
        ("west", Duration::ZERO, "between 1s and 24h"),
        (
            "west",
            MAX_TOKEN_TTL + Duration::from_secs(1),
            "between 1s and 24h",
        ),
    ] {
        let err = cp
            .create_link_token(1000, &mut counter(), peer.parse().unwrap(), ttl)
            .unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }

    let token = cp
        .create_link_token(1000, &mut counter(), west.clone(), ttl)
        .unwrap();
    assert_eq!(
        token.id,
        core::array::from_fn(|i| i as u8 + 1),
        "ids come from the source given"
    );
    assert_eq!(token.expires_at_unix, 1060);
    let redeem = |now: u64, joiner: &str| {
        cp.redeem_link_token(
            now,
            &token.id,
            &joiner.parse().unwrap(),
            &[
                "198.51.100.7:4433".parse().unwrap(),
                "127.0.0.1:1".parse().unwrap(),
            ],
            |_| true,
        )
    };
    assert!(matches!(
        redeem(1060, "west"),
        Err(ControlError::Redeem(RedeemError::Expired(_)))
    ));
    assert!(matches!(
        redeem(1059, "north"),
        Err(ControlError::Redeem(RedeemError::WrongPeer { .. }))
    ));
    assert_eq!(
        redeem(1059, "west").unwrap(),
        ["192.0.2.1:4433".parse::<SocketAddr>().unwrap()],
        "the issuer's gateways come back"
    );
    assert!(matches!(
        redeem(1059, "west"),
        Err(ControlError::Redeem(RedeemError::Used(_)))
    ));
    let links = cp.links().unwrap();
    assert_eq!(links.len(), 1);
    assert_eq!(links[0].created_at_unix, 1059);
    assert_eq!(
        links[0].gateways,
        ["198.51.100.7:4433".parse::<SocketAddr>().unwrap()],
        "the joiner's loopback address was not kept"
    );
    assert_eq!(cp.snapshot().links.len(), 1, "published");
    cp.remove_link(&west).unwrap();
    assert!(matches!(
        cp.remove_link(&west),
        Err(ControlError::NotFound(_))
    ));
    assert!(cp.snapshot().links.is_empty());
}

#[test]
fn services_keep_their_export_time_and_say_what_changed() {
    let (_dir, cp) = plane("");
    let web: ServiceName = "web.shop".parse().unwrap();
    let first = cp
        .add_service(5_000, spec("web.shop", "http=80/http"), true)
        .unwrap();
    assert_eq!(first.replaced, None);
    let exported_at = |cp: &ControlPlane| cp.snapshot().service(&web).unwrap().exported_at_ms;
    assert_eq!(exported_at(&cp), 5_000);
    // Replaced while staying exported: the export keeps its age, so peers never see a
    // newer export of the same service.
    let again = cp
        .add_service(9_000, spec("web.shop", "http=81/http"), true)
        .unwrap();
    assert_eq!(
        again.replaced.as_deref(),
        Some("replaced web.shop: ports http=80/http -> http=81/http")
    );
    assert_eq!(exported_at(&cp), 5_000);
    cp.set_exported(10_000, &web, false).unwrap();
    assert_eq!(exported_at(&cp), 0);
    cp.set_exported(11_000, &web, true).unwrap();
    assert_eq!(exported_at(&cp), 11_000, "a new export is a new age");
    cp.remove_service(&web).unwrap();
    assert!(matches!(
        cp.remove_service(&web),
        Err(ControlError::NotFound(_))
    ));
    assert!(matches!(
        cp.set_exported(1, &web, true),
        Err(ControlError::NotFound(_))
    ));
}

#[test]
fn declared_services_are_the_file_s() {
    let (_dir, cp) = plane(
        "[[service]]\nname = \"api.shop\"\nports = [\"http=8080/http\"]\nendpoints = [\"127.0.0.1:9\"]\nexport = true\n",
    );
    let api: ServiceName = "api.shop".parse().unwrap();
    assert!(cp.snapshot().service(&api).unwrap().exported);
    let refusals = [
        cp.add_service(1, spec("api.shop", "http=1/http"), false)
            .unwrap_err(),
        cp.remove_service(&api).unwrap_err(),
        cp.set_exported(1, &api, false).unwrap_err(),
    ];
    for err in refusals {
        assert!(matches!(err, ControlError::Precondition(_)), "{err}");
        assert!(err.to_string().contains("api.shop is declared in"), "{err}");
    }
    assert!(
        cp.snapshot().service(&api).unwrap().exported,
        "nothing changed"
    );
}

#[test]
fn join_tokens_are_checked_before_any_dial() {
    let (_dir, cp) = plane("");
    let good = LinkToken {
        issuer: "west".parse().unwrap(),
        trust_domain: cp.trust.trust_domain().clone(),
        peer: "east".parse().unwrap(),
        gateways: vec![
            "127.0.0.1:4433".parse().unwrap(),
            "192.0.2.9:4433".parse().unwrap(),
        ],
        bundle_fingerprint: cp.trust.fingerprint,
        id: [1; 16],
        secret: [2; 32],
        expires_at_unix: 2000,
    };
    let checked = cp.check_join_token(1000, good.clone()).unwrap();
    assert_eq!(
        checked.gateways,
        ["192.0.2.9:4433".parse::<SocketAddr>().unwrap()],
        "loopback is not dialled unless allowed"
    );
    let cases = [
        (LinkToken { ..good.clone() }, 2000, "expired"),
        (
            LinkToken {
                bundle_fingerprint: [0; 32],
                ..good.clone()
            },
            1000,
            "another root",
        ),
        (
            LinkToken {
                issuer: "east".parse().unwrap(),
                ..good.clone()
            },
            1000,
            "this very cluster",
        ),
        (
            LinkToken {
                peer: "north".parse().unwrap(),
                ..good.clone()
            },
            1000,
            "issued for peer `north`",
        ),
        (
            LinkToken {
                gateways: vec!["127.0.0.1:4433".parse().unwrap()],
                ..good.clone()
            },
            1000,
            "allow_loopback_gateways",
        ),
    ];
    for (token, now, why) in cases {
        let err = cp.check_join_token(now, token).unwrap_err();
        assert!(err.to_string().contains(why), "{why}: {err}");
    }
}
