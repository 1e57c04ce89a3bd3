use super::*;
use crate::testutil::{cid, export, export_headless, local, local_headless};

fn dated(mut e: ExportedService, at: u64) -> ExportedService {
    e.exported_at_ms = at;
    e
}

struct Case {
    what: &'static str,
    local: Vec<LocalService>,
    imports: Vec<(&'static str, ExportedService)>,
    /// (peer, link created at)
    links: Vec<(&'static str, u64)>,
    /// (defined by: "local" or a peer, headless, ports, members, conflicts)
    want: (
        &'static str,
        bool,
        Vec<&'static str>,
        Vec<&'static str>,
        Vec<Conflict>,
    ),
}

fn conflict_headless(cluster: &str, exported: bool) -> Conflict {
    Conflict {
        cluster: cid(cluster),
        reason: ConflictReason::Headless { exported },
    }
}

fn conflict_port(cluster: &str, port: &str) -> Conflict {
    Conflict {
        cluster: cid(cluster),
        reason: ConflictReason::Port {
            port: port.parse().unwrap(),
        },
    }
}

#[test]
fn mcs_conflict_rule() {
    let db_plain = || export("db.prod", &["pg=5432"], &[("pg", 1)]);
    let db_headless = || export_headless("db.prod", "pg=5432", &[("evil-0", true)]);
    let cases = vec![
        Case {
            what: "the local definition wins over an older headless import",
            local: vec![local("db.prod", &["pg=5432"], &[("10.0.0.1", true)], true)],
            imports: vec![("rogue", dated(db_headless(), 1))],
            links: vec![("rogue", 0)],
            want: (
                "local",
                false,
                vec!["pg=5432/tcp"],
                vec![],
                vec![conflict_headless("rogue", true)],
            ),
        },
        Case {
            what: "a local headless service is not turned plain",
            local: vec![local_headless(
                "db.prod",
                &["pg=5432"],
                &[("a=10.0.0.1", true)],
                true,
            )],
            imports: vec![
                ("west", dated(db_plain(), 1)),
                ("north", dated(db_headless(), 5)),
            ],
            links: vec![("west", 0), ("north", 0)],
            want: (
                "local",
                true,
                vec!["pg=5432/tcp"],
                vec!["north"],
                vec![conflict_headless("west", false)],
            ),
        },
        Case {
            what: "the oldest import defines an import-only service",
            local: vec![],
            imports: vec![
                ("west", dated(db_headless(), 200)),
                ("north", dated(db_plain(), 100)),
            ],
            links: vec![("west", 0), ("north", 0)],
            want: (
                "north",
                false,
                vec!["pg=5432/tcp"],
                vec!["north"],
                vec![conflict_headless("west", true)],
            ),
        },
        Case {
            what: "no export counts as older than its link: a backdated claim loses",
            local: vec![],
            imports: vec![
                ("west", dated(db_plain(), 200)),
                ("rogue", dated(db_headless(), 1)),
            ],
            links: vec![("west", 100), ("rogue", 500)],
            want: (
                "west",
                false,
                vec!["pg=5432/tcp"],
                vec!["west"],
                vec![conflict_headless("rogue", true)],
            ),
        },
        Case {
            what: "equal age: the first cluster by name defines",
            local: vec![],
            imports: vec![("west", db_headless()), ("north", db_plain())],
            links: vec![("west", 0), ("north", 0)],
            want: (
                "north",
                false,
                vec!["pg=5432/tcp"],
                vec!["north"],
                vec![conflict_headless("west", true)],
            ),
        },
        Case {
            what: "same port name on another number conflicts",
            local: vec![local(
                "web.shop",
                &["http=80/http"],
                &[("10.0.0.1", true)],
                true,
            )],
            imports: vec![(
                "west",
                export("web.shop", &["http=8080/http"], &[("http", 1)]),
            )],
            links: vec![("west", 0)],
            want: (
                "local",
                false,
                vec!["http=80/http"],
                vec![],
                vec![conflict_port("west", "http")],
            ),
        },
        Case {
            what: "same port on another protocol conflicts",
            local: vec![local(
                "web.shop",
                &["http=80/http"],
                &[("10.0.0.1", true)],
                true,
            )],
            imports: vec![("west", export("web.shop", &["http=80/tcp"], &[("http", 1)]))],
            links: vec![("west", 0)],
            want: (
                "local",
                false,
                vec!["http=80/http"],
                vec![],
                vec![conflict_port("west", "http")],
            ),
        },
        Case {
            what: "same number under another name conflicts",
            local: vec![local(
                "web.shop",
                &["http=80/http"],
                &[("10.0.0.1", true)],
                true,
            )],
            imports: vec![("west", export("web.shop", &["web=80/http"], &[("web", 1)]))],
            links: vec![("west", 0)],
            want: (
                "local",
                false,
                vec!["http=80/http"],
                vec![],
                vec![conflict_port("west", "web")],
            ),
        },
        Case {
            what: "a different target port agrees (endpoints listen where their cluster says)",
            local: vec![local(
                "web.shop",
                &["http=80:8080/http"],
                &[("10.0.0.1", true)],
                true,
            )],
            imports: vec![(
                "west",
                export("web.shop", &["http=80:9999/http"], &[("http", 1)]),
            )],
            links: vec![("west", 0)],
            want: (
                "local",
                false,
                vec!["http=80:8080/http"],
                vec!["west"],
                vec![],
            ),
        },
        Case {
            what: "an extra port never widens a local service",
            local: vec![local(
                "web.shop",
                &["http=80/http"],
                &[("10.0.0.1", true)],
                true,
            )],
            imports: vec![(
                "west",
                export("web.shop", &["http=80/http", "admin=9000"], &[("http", 1)]),
            )],
            links: vec![("west", 0)],
            want: ("local", false, vec!["http=80/http"], vec!["west"], vec![]),
        },
        Case {
            what: "agreeing imports add new ports to an import-only service, oldest first",
            local: vec![],
            imports: vec![
                (
                    "west",
                    dated(export("web.shop", &["http=80/http", "admin=9000"], &[]), 20),
                ),
                (
                    "north",
                    dated(
                        export("web.shop", &["http=80/http", "grpc=9090/grpc"], &[]),
                        10,
                    ),
                ),
            ],
            links: vec![("west", 0), ("north", 0)],
            want: (
                "north",
                false,
                vec!["http=80/http", "grpc=9090/grpc", "admin=9000/tcp"],
                vec!["north", "west"],
                vec![],
            ),
        },
        Case {
            what: "a peer without a link is ignored",
            local: vec![],
            imports: vec![("west", db_plain()), ("rogue", dated(db_headless(), 1))],
            links: vec![("west", 5)],
            want: ("west", false, vec!["pg=5432/tcp"], vec!["west"], vec![]),
        },
    ];
    for case in cases {
        let mut imports: BTreeMap<ClusterId, Vec<ExportedService>> = BTreeMap::new();
        for (peer, e) in &case.imports {
            imports.entry(cid(peer)).or_default().push(e.clone());
        }
        let peers: Vec<ClusterId> = case.links.iter().map(|(p, _)| cid(p)).collect();
        let linked: BTreeMap<&ClusterId, u64> = peers
            .iter()
            .zip(case.links.iter().map(|(_, at)| *at))
            .collect();
        let resolved = resolve(&case.local, &imports, &linked);
        assert_eq!(resolved.len(), 1, "{}", case.what);
        let r = resolved.values().next().unwrap();
        let (by, headless, ports, members, conflicts) = &case.want;
        let defined = match r.defined_by {
            DefinedBy::Local(_) => "local".to_owned(),
            DefinedBy::Peer(p) => p.to_string(),
        };
        assert_eq!(&defined, by, "{}: defined by", case.what);
        assert_eq!(r.headless, *headless, "{}: headless", case.what);
        let got_ports: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(&got_ports, ports, "{}: ports", case.what);
        let got_members: Vec<&str> = r.members.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(&got_members, members, "{}: members", case.what);
        assert_eq!(&r.conflicts, conflicts, "{}: conflicts", case.what);
    }
}

#[test]
fn conflicts_read_as_sentences() {
    assert_eq!(
        conflict_headless("west", true).to_string(),
        "west exports it as headless"
    );
    assert_eq!(
        conflict_port("west", "http").to_string(),
        "west exports port http differently"
    );
}
