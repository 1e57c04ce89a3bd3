use std::collections::BTreeMap;

use super::*;
use crate::resolve::{Conflict, ConflictReason};
use crate::snapshot::{EndpointState, LinkRecord, RemoteState, ServiceRecord};
use crate::{ClusterId, EndpointAddr, ServiceName};

const DAY: i64 = 86_400;
const NOW: i64 = 1_800_000_000;
const ROOT: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER_ROOT: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn snapshot() -> MeshSnapshot {
    MeshSnapshot {
        version: 7,
        cluster: "east".parse().unwrap(),
        trust_domain: "example.org".parse().unwrap(),
        services: Vec::new(),
        links: Vec::new(),
        gateways: vec!["127.0.0.1:4433".parse().unwrap()],
        policies: Vec::new(),
    }
}

fn link(peer: &str, connected: bool) -> LinkRecord {
    LinkRecord {
        peer: peer.parse().unwrap(),
        gateways: vec!["127.0.0.1:4434".parse().unwrap()],
        connected,
        created_at_unix: 0,
        limited: Vec::new(),
    }
}

fn import(name: &str, healthy: u32) -> ServiceRecord {
    ServiceRecord {
        name: name.parse::<ServiceName>().unwrap(),
        vip: "127.10.0.1".parse().unwrap(),
        ports: Vec::new(),
        exported: false,
        local: Vec::new(),
        remote: vec![RemoteState {
            cluster: "west".parse::<ClusterId>().unwrap(),
            healthy: BTreeMap::from([("http".parse().unwrap(), healthy)]),
        }],
        headless: false,
        endpoints: Vec::new(),
        exported_at_ms: 0,
        conflicts: Vec::new(),
    }
}

fn valid_for(days: i64) -> Validity {
    Validity {
        not_before: NOW - DAY,
        not_after: NOW + days * DAY,
    }
}

fn facts(snapshot: &MeshSnapshot) -> Facts<'_> {
    Facts {
        now: NOW,
        roots: vec![valid_for(3650)],
        cluster_ca: valid_for(365),
        ca_chained: true,
        role_certs: vec![RoleCert {
            role: "gateway".into(),
            validity: Validity {
                not_before: NOW - 3600,
                not_after: NOW + 20 * 3600,
            },
        }],
        snapshot,
        published_at: NOW - 60,
        listen_failures: Vec::new(),
        without_vip: Vec::new(),
        dns: DnsProbe::Answered("1.0.0".into()),
        role_versions: vec![RoleVersion {
            role: "node n1".into(),
            version: 7,
        }],
        local_roots: vec![ROOT.into()],
        peer_roots: BTreeMap::new(),
    }
}

/// The status of `code` (the worst of its findings).
fn status_of(findings: &[Finding], code: &str) -> Status {
    findings
        .iter()
        .filter(|f| f.code == code)
        .map(|f| f.status)
        .max()
        .unwrap_or_else(|| panic!("no {code} in {findings:#?}"))
}

#[test]
fn a_healthy_cluster_passes_every_check_and_lists_them_all() {
    let mut s = snapshot();
    s.links.push(link("west", true));
    s.services.push(import("web.shop", 2));
    let mut healthy = facts(&s);
    healthy
        .peer_roots
        .insert("west".parse().unwrap(), vec![ROOT.into()]);
    let findings = evaluate(&healthy);
    assert!(passed(&findings), "{findings:#?}");
    for code in [
        "FERRY101", "FERRY102", "FERRY103", "FERRY104", "FERRY201", "FERRY203", "FERRY301",
        "FERRY302", "FERRY303", "FERRY304", "FERRY401", "FERRY402", "FERRY403",
    ] {
        assert_eq!(status_of(&findings, code), Status::Ok, "{code}");
    }
    assert!(
        findings.iter().all(|f| f.fix.is_empty()),
        "ok findings carry no fix"
    );
    // Grouped in order: trust, links, services, data plane.
    let groups: Vec<Group> = findings.iter().map(|f| f.group).collect();
    let mut sorted = groups.clone();
    sorted.sort();
    assert_eq!(groups, sorted);
}

type Break = fn(&mut Facts<'_>);

#[test]
fn each_problem_fails_its_own_check_with_a_fix() {
    let cases: [(&str, Break, Status); 12] = [
        ("FERRY101", |f| f.roots = vec![valid_for(59)], Status::Fail),
        ("FERRY101", |f| f.roots.clear(), Status::Fail),
        ("FERRY102", |f| f.cluster_ca = valid_for(30), Status::Fail),
        ("FERRY102", |f| f.cluster_ca = valid_for(-1), Status::Fail),
        ("FERRY103", |f| f.ca_chained = false, Status::Fail),
        (
            "FERRY104",
            |f| f.role_certs[0].validity.not_after = NOW - 1,
            Status::Fail,
        ),
        (
            "FERRY104",
            |f| f.role_certs[0].validity.not_after = NOW + 600,
            Status::Warn,
        ),
        (
            "FERRY303",
            |f| f.without_vip = vec!["a.shop".into()],
            Status::Fail,
        ),
        (
            "FERRY304",
            |f| f.dns = DnsProbe::Failed("timed out".into()),
            Status::Fail,
        ),
        ("FERRY304", |f| f.dns = DnsProbe::NotRunning, Status::Warn),
        (
            "FERRY401",
            |f| f.listen_failures = vec!["127.10.0.1:80: in use (node n1)".into()],
            Status::Fail,
        ),
        ("FERRY402", |f| f.role_versions[0].version = 5, Status::Fail),
    ];
    let s = snapshot();
    for (code, break_it, want) in cases {
        let mut f = facts(&s);
        break_it(&mut f);
        let findings = evaluate(&f);
        assert_eq!(status_of(&findings, code), want, "{code}: {findings:#?}");
        let finding = findings
            .iter()
            .find(|x| x.code == code && x.status == want)
            .unwrap();
        assert!(!finding.fix.is_empty(), "{code} has a fix");
        // Only that check is unhappy.
        let others_ok = findings
            .iter()
            .filter(|x| x.code != code)
            .all(|x| x.status == Status::Ok);
        assert!(others_ok, "{code}: {findings:#?}");
        assert_eq!(passed(&findings), want != Status::Fail, "{code}");
    }
}

#[test]
fn a_role_behind_is_forgiven_while_a_snapshot_is_fresh() {
    let s = snapshot();
    let mut f = facts(&s);
    f.role_versions[0].version = 6;
    f.published_at = NOW - 1;
    assert_eq!(status_of(&evaluate(&f), "FERRY402"), Status::Ok);
    f.published_at = NOW - SYNC_GRACE_SECS;
    assert_eq!(status_of(&evaluate(&f), "FERRY402"), Status::Fail);
}

#[test]
fn links_imports_and_conflicts() {
    let mut s = snapshot();
    s.links.push(link("north", true));
    s.links.push(link("west", false));
    let findings = evaluate(&facts(&s));
    let links: Vec<_> = findings.iter().filter(|f| f.code == "FERRY201").collect();
    assert_eq!(links.len(), 2, "one finding per link");
    assert!(links
        .iter()
        .any(|f| f.status == Status::Fail && f.detail.contains("west")));
    assert!(!passed(&findings));

    let mut s = snapshot();
    s.services.push(import("web.shop", 0));
    s.services.push(import("api.shop", 1));
    let findings = evaluate(&facts(&s));
    let dead = findings.iter().find(|f| f.code == "FERRY301").unwrap();
    assert_eq!(dead.status, Status::Fail);
    assert!(dead.detail.contains("web.shop") && !dead.detail.contains("api.shop"));
    // A local healthy endpoint counts as somewhere.
    s.services[0].local.push(EndpointState {
        addr: "127.0.0.1:9000".parse::<EndpointAddr>().unwrap(),
        healthy: true,
    });
    assert_eq!(status_of(&evaluate(&facts(&s)), "FERRY301"), Status::Ok);

    s.services[1].conflicts.push(Conflict {
        cluster: "west".parse().unwrap(),
        reason: ConflictReason::Headless { exported: true },
    });
    assert_eq!(status_of(&evaluate(&facts(&s)), "FERRY302"), Status::Fail);
}

#[test]
fn no_gateway_fails_only_when_there_are_links() {
    let mut s = snapshot();
    s.gateways.clear();
    assert_eq!(status_of(&evaluate(&facts(&s)), "FERRY403"), Status::Warn);
    s.links.push(link("west", true));
    assert_eq!(status_of(&evaluate(&facts(&s)), "FERRY403"), Status::Fail);
}

#[test]
fn links_share_a_root_with_this_cluster() {
    let mut s = snapshot();
    s.links.push(link("west", true));
    let judge = |s: &MeshSnapshot, peer_roots: Option<Vec<&str>>, local: Vec<&str>| {
        let mut f = facts(s);
        f.local_roots = local.into_iter().map(String::from).collect();
        if let Some(roots) = peer_roots {
            f.peer_roots.insert(
                "west".parse().unwrap(),
                roots.into_iter().map(String::from).collect(),
            );
        }
        let findings = evaluate(&f);
        let found = findings.iter().find(|x| x.code == "FERRY203").cloned();
        found.map(|x| (x.status, x.detail, x.fix))
    };
    let (status, detail, _) = judge(&s, Some(vec![ROOT]), vec![ROOT]).unwrap();
    assert_eq!(status, Status::Ok, "{detail}");
    let (status, detail, fix) = judge(&s, Some(vec![OTHER_ROOT]), vec![ROOT]).unwrap();
    assert_eq!(status, Status::Fail);
    assert!(
        detail.contains("west") && detail.contains("no root"),
        "{detail}"
    );
    assert!(fix.contains("ferry trust"), "{fix}");
    let (status, detail, _) = judge(&s, Some(vec![ROOT]), vec![ROOT, OTHER_ROOT]).unwrap();
    assert_eq!(status, Status::Warn, "a root the peer lacks: {detail}");
    assert!(detail.contains("lacks 1"), "{detail}");
    let (status, _, _) = judge(&s, None, vec![ROOT]).unwrap();
    assert_eq!(status, Status::Warn, "an up link whose peer never said");
    s.links[0].connected = false;
    assert_eq!(
        judge(&s, None, vec![ROOT]),
        None,
        "a down link is FERRY201's"
    );
}
