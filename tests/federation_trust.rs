//! What a linked peer must never be able to do, played by real `ferry up` clusters on
//! loopback: take over a name another cluster exports, or make this cluster dial where it
//! chooses. (Bounds on what a peer may send are proven in ferry-federation's link tests.)

mod common;

use std::time::Duration;

use common::dns::dig;
use common::*;

/// `west` exports `db.prod` as a plain service; later `rogue` exports the same name as a
/// headless service whose endpoint is its own server. East keeps west's definition: the name
/// answers west's VIP, calls reach west's backend only, and the conflict is shown, logged and
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_export_cannot_take_over_a_name() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.81.0.0/16");
    let west_def = mesh.cluster("west", "127.82.0.0/16");
    let rogue_def = mesh.cluster("rogue", "127.83.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let _rogue = rogue_def.up().await;

    let real = Echo::start().await;
    let evil = Echo::start().await;
    let real_ep = real.addr.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "db.prod",
        "--port",
        "tcp=7000",
        "--endpoint",
        &real_ep,
        "--export",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("db.prod", "west").await;

    let evil_ep = format!("evil-0={}", evil.addr);
    rogue_def.cli_ok(&[
        "service",
        "add",
        "db.prod",
        "--port",
        "tcp=7000",
        "--endpoint",
        &evil_ep,
        "--headless",
        "--export",
    ]);
    link(&east_def, &rogue_def);
    wait_until(
        &east_def,
        "rogue's conflicting export",
        Duration::from_secs(20),
        |east| {
            east.service("db.prod")
                .is_some_and(|s| !s["conflicts"].as_array().unwrap().is_empty())
        },
    )
    .await;

    let svc = east_def.service("db.prod").unwrap();
    assert_eq!(svc["headless"], false, "{svc}");
    assert_eq!(svc["endpoints"].as_array().unwrap().len(), 0, "{svc}");
    let remotes: Vec<&str> = svc["remote"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(remotes, ["west"], "rogue's export is not merged: {svc}");
    assert_eq!(svc["conflicts"][0]["cluster"], "rogue");
    assert_eq!(
        svc["conflicts"][0]["reason"],
        "rogue exports it as headless"
    );
    let table = east_def.cli_ok(&["services"]);
    assert!(
        table.contains("CONFLICTS") && table.contains("rogue exports it as headless"),
        "{table}"
    );
    assert_eq!(east_def.metric("ferry_import_conflicts", ""), 1);
    assert!(
        east_def
            .log()
            .contains("export conflicts with the service's definition"),
        "the conflict is logged"
    );

    // The name still means west's service: its VIP, and west's backend behind it.
    let dns = east_def.dns_addr().await;
    let vip = svc["vip"].as_str().unwrap();
    assert_eq!(
        dig(dns, &["+short", "db.prod.svc.clusterset.local"]).trim(),
        vip
    );
    let addr = east_def.vip("db.prod", 7000);
    wait_listening(addr).await;
    for _ in 0..5 {
        assert_eq!(echo_roundtrip(addr, b"ping").await.unwrap(), b"ping");
    }
    assert!(real.accepted() >= 5);
    assert_eq!(evil.accepted(), 0, "no call reached the rogue's server");

    // Rogue's own view is its own business: it defines db.prod locally.
    assert_eq!(rogue_def.service("db.prod").unwrap()["headless"], true);
}

/// A token whose gateways are loopback addresses is refused, with the way out, by a cluster
/// that does not allow loopback gateways; nothing is dialled and no link is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_gateways_are_refused_unless_allowed() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.84.0.0/16");
    let west_def = mesh.cluster("west", "127.85.0.0/16");
    west_def.federation_config("allow_loopback_gateways = false");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let token = east_def.token_for("west", &[]);
    let out = west_def.cli(&["link", "join", &token]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not a unicast address this cluster may dial")
            && err.contains("allow_loopback_gateways"),
        "{err}"
    );
    assert!(west_def.links().is_empty());
}

/// A TCP server that writes zeros to every client until the client goes away.
async fn firehose() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let chunk = vec![0u8; 64 * 1024];
                while sock.write_all(&chunk).await.is_ok() {}
            });
        }
    });
    addr
}

/// West exports `blob.shop` (port `tcp=7000`), backed by a [`firehose`]; east imports it.
async fn export_firehose(east_def: &ClusterDef, west_def: &ClusterDef) {
    let origin = firehose().await.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "blob.shop",
        "--port",
        "tcp=7000",
        "--endpoint",
        &origin,
        "--export",
    ]);
    link(east_def, west_def);
    east_def.wait_imported("blob.shop", "west").await;
}

/// Unexporting a service cuts its open tunnel streams within 2 s: a download that would
/// never end stops, and new connections are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unexport_cuts_open_streams() {
    use tokio::io::AsyncReadExt;
    let ew = east_west("127.86.0.0/16", "127.87.0.0/16").await;
    let (east_def, west_def) = (ew.east_def.clone(), ew.west_def.clone());
    export_firehose(&east_def, &west_def).await;
    let addr = east_def.vip("blob.shop", 7000);
    wait_listening(addr).await;
    let mut download = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0usize;
    while got < 1 << 20 {
        got += download.read(&mut buf).await.unwrap();
    }
    west_def.cli_ok(&["unexport", "blob.shop"]);
    let cut_at = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            match download.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the download kept flowing 2 s after unexport"
    );
    eprintln!("stream cut {:?} after unexport", cut_at.elapsed());
    assert!(
        west_def.metric("ferry_gateway_streams_cut_total", "not_exported") >= 1,
        "the cut is counted"
    );
}

/// Links `rogue` to `east`, waits until east's gateway holds a session with rogue's real
/// gateway (so it knows the link), then stops rogue's processes and dials east as rogue's
/// gateway with a real certificate: the test speaks for the rogue from here on.
async fn impersonate(
    east_def: &ClusterDef,
    rogue_def: &ClusterDef,
    mut rogue: Cluster,
) -> common::rogue::RoguePeer {
    link(east_def, rogue_def);
    wait_until(
        east_def,
        &format!("a link session with {}", rogue_def.name),
        Duration::from_secs(20),
        |east| link_of(east, &rogue_def.name)["connected"] == true,
    )
    .await;
    let identity = common::rogue::gateway_identity(rogue_def).await;
    rogue.kill();
    let gateway = east_def.gateways()[0];
    common::rogue::RoguePeer::connect(identity, "east", gateway).await
}

/// The link `name` in `def`'s `link list -o json`.
fn link_of(def: &ClusterDef, name: &str) -> serde_json::Value {
    def.links()
        .into_iter()
        .find(|l| l["peer"] == name)
        .unwrap_or_else(|| panic!("no link to {name} in {}", def.name))
}

fn many_services(n: usize) -> Vec<ferry_federation::ExportedService> {
    (0..n)
        .map(|i| ferry_federation::ExportedService {
            name: format!("s{i:04}.flood").parse().unwrap(),
            ports: vec!["tcp=7000".parse().unwrap()],
            healthy: [("tcp".parse().unwrap(), 1)].into_iter().collect(),
            headless: false,
            endpoints: vec![],
            exported_at_ms: 0,
        })
        .collect()
}

/// A linked peer that exports more than its bound, announces gateways it may not, floods
/// messages and asks for snapshots it never reads gets what fits and no more: the link
/// shows why, counters move, and another peer's imports and calls are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_over_its_bounds_gets_what_fits_and_nothing_else_moves() {
    use ferry_federation::LinkMessage;
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.88.0.0/16");
    let west_def = mesh.cluster("west", "127.89.0.0/16");
    let rogue_def = mesh.cluster("rogue", "127.90.0.0/16");
    east_def.federation_config("max_imported_services = 40\nmax_link_messages_per_second = 20");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let rogue = rogue_def.up().await;
    let echo = Echo::start().await;
    west_def.add_exported_echo(&echo);
    link(&east_def, &west_def);
    east_def.wait_imported("echo.shop", "west").await;
    let mut peer = impersonate(&east_def, &rogue_def, rogue).await;
    let mut announced: Vec<std::net::SocketAddr> = vec!["224.0.0.1:4433".parse().unwrap()];
    announced.extend((1..=20).map(|i| std::net::SocketAddr::from(([127, 0, 0, i], 4433))));
    peer.hello(announced).await;
    assert!(
        peer.send(&LinkMessage::Snapshot {
            seq: 1,
            services: many_services(60),
        })
        .await
    );
    wait_until(
        &east_def,
        "rogue's link shown as limited",
        Duration::from_secs(20),
        |east| {
            let l = link_of(east, "rogue");
            l["imported_services"] == 40
                && l["limited"].as_array().unwrap().iter().any(|x| {
                    x.as_str()
                        .unwrap()
                        .contains("peer exports 60 services, over the limit of 40")
                })
        },
    )
    .await;
    let l = link_of(&east_def, "rogue");
    let limited: Vec<&str> = l["limited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    assert!(
        limited.iter().any(|x| x.contains("224.0.0.1:4433 ignored")),
        "{limited:?}"
    );
    assert!(
        limited
            .iter()
            .any(|x| x.contains("announced 20 gateways, over the limit of 16")),
        "{limited:?}"
    );
    let gateways = l["gateways"].as_array().unwrap();
    assert!(gateways.len() <= 16, "{gateways:?}");
    assert!(!gateways.iter().any(|g| g == "224.0.0.1:4433"));
    let table = east_def.cli_ok(&["link", "list"]);
    assert!(table.contains("connected, limited:"), "{table}");

    // A flood of heartbeats and resyncs it never reads: dropped past the rate, at most one
    // snapshot queued; both counted.
    for _ in 0..300 {
        if !peer.send(&LinkMessage::Resync).await {
            break;
        }
    }
    wait_until(
        &east_def,
        "rogue's refused messages counted",
        Duration::from_secs(10),
        |east| {
            east.metric("ferry_link_refused_total", "limit=\"frame_rate\"") > 0
                && east.metric("ferry_link_refused_total", "limit=\"resync\"") > 0
        },
    )
    .await;
    assert!(east_def.metric("ferry_link_refused_total", "limit=\"services\"") >= 1);

    // Nothing else moved: west's service is still imported and reachable.
    let addr = east_def.vip("echo.shop", 7000);
    wait_listening(addr).await;
    assert_eq!(
        echo_roundtrip(addr, b"still here").await.unwrap(),
        b"still here"
    );
    assert_eq!(
        link_of(&east_def, "west")["limited"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

/// Resident memory of a process, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// A linked peer opens as many tunnel streams as it can, each to a backend that writes
/// without end, and never reads any of them: the serving gateway's memory stays bounded by
/// the connection's flow-control windows, not by what the backends send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_hoards_streams_and_never_reads_holds_bounded_memory() {
    let ew = east_west("127.105.0.0/16", "127.106.0.0/16").await;
    let (east_def, west_def) = (ew.east_def.clone(), ew.west_def.clone());
    export_firehose(&east_def, &west_def).await;
    let west_pid = ew.west.procs[0].id();
    let before = rss_kib(west_pid);

    let client = east_def.node_client().await;
    let gateways = west_def.gateways();
    let west: ferry_federation::ClusterId = "west".parse().unwrap();
    let header = tunnel_header("blob.shop", "tcp", None);
    // Streams until the connection's receive window is full of unread data: past that the
    // gateway cannot even send a new stream's status, so the hoarder starves itself.
    let mut hoard = Vec::new();
    while hoard.len() < 1000 {
        match client.open(&west, &gateways, &header).await {
            Ok(streams) => hoard.push(streams),
            Err(_) => break,
        }
    }
    assert!(hoard.len() >= 16, "only {} streams opened", hoard.len());
    // Let the backends push until every window is full.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(west_pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!(
        "west RSS {before} KiB -> {after} KiB with {} hoarded streams",
        hoard.len()
    );
    assert!(
        grown_mib < 96,
        "the gateway grew by {grown_mib} MiB for a peer that never reads"
    );
    drop(hoard);
}

/// A linked peer that keeps asking for snapshots and never reads them cannot block the
/// session: the write deadline closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_cut_off_by_the_write_deadline() {
    use ferry_federation::LinkMessage;
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.107.0.0/16");
    let rogue_def = mesh.cluster("rogue", "127.108.0.0/16");
    // Enough exports that a dozen snapshots fill the peer's stream window.
    let mut services = String::new();
    for i in 0..600 {
        services.push_str(&format!(
            "\n[[service]]\nname = \"padding-service-number-{i:04}.exported-namespace\"\nports = [\"http=8080/http\"]\nexport = true\n"
        ));
    }
    east_def.append_config(&services);
    let _east = east_def.up().await;
    let rogue = rogue_def.up().await;
    let mut peer = impersonate(&east_def, &rogue_def, rogue).await;
    peer.hello(vec![]).await;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        if !peer.send(&LinkMessage::Resync).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(20), peer.conn.closed())
        .await
        .expect("the session is closed, not left blocked");
    let took = started.elapsed();
    assert!(
        closed.to_string().contains("write deadline"),
        "closed for another reason: {closed}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(east_def.metric("ferry_link_write_timeouts_total", "rogue") >= 1);
}

/// `link join` dials every gateway of the token at once: a dead address first in the token
/// costs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tries_the_token_s_gateways_at_once() {
    let ew = east_west("127.109.0.0/16", "127.110.0.0/16").await;
    let token = ew.east_def.token_for("west", &[]);
    let mut token = ferry_federation::LinkToken::decode(&token).unwrap();
    // A UDP port nothing listens on: a handshake there only ends at the deadline.
    let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    token.gateways.insert(0, dead_addr);
    let started = std::time::Instant::now();
    let out = ew
        .west_def
        .cli_with_input(&["link", "join"], &format!("{}\n", token.encode()));
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < Duration::from_secs(2), "join took {took:?}");
    assert_eq!(ew.west_def.links().len(), 1);
}

/// User plus system CPU time of a process, from /proc, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}

/// A linked peer with 5000 exports that changes one of them at its full message rate (50
/// changes a second, inside its bounds) cannot make the importing cluster rebuild and
/// republish everything 50 times a second: its changes are folded, at most ten imports
/// reports a second, each folded republish waits as long as the last one took, the latest
/// state always lands, and commands still answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_churning_its_exports_cannot_monopolize_the_control_plane() {
    use ferry_federation::LinkMessage;
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.107.0.0/16");
    let rogue_def = mesh.cluster("rogue", "127.108.0.0/16");
    let east = east_def.up().await;
    let rogue = rogue_def.up().await;
    let mut peer = impersonate(&east_def, &rogue_def, rogue).await;
    peer.hello(vec![]).await;
    let mut services = many_services(5000);
    assert!(
        peer.send(&LinkMessage::Snapshot {
            seq: 1,
            services: services.clone(),
        })
        .await
    );
    wait_until(
        &east_def,
        "5000 services imported from rogue",
        Duration::from_secs(60),
        |east| link_of(east, "rogue")["imported_services"] == 5000,
    )
    .await;

    let pid = east.procs[0].id();
    let (version_before, cpu_before) = (
        east_def.status()["snapshot_version"].as_u64().unwrap(),
        cpu_seconds(pid),
    );
    let started = std::time::Instant::now();
    let changes = 300u64;
    let mut slowest_command = Duration::ZERO;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..changes {
        tick.tick().await;
        let svc = &mut services[(i % 5000) as usize];
        svc.healthy
            .insert("tcp".parse().unwrap(), 2 + (i % 7) as u32);
        assert!(
            peer.send(&LinkMessage::Delta {
                seq: 2 + i,
                upserts: vec![svc.clone()],
                removals: vec![],
            })
            .await,
            "east closed the link during the churn"
        );
        if i % 50 == 25 {
            let t = std::time::Instant::now();
            east_def.cli_ok(&["link", "list"]);
            slowest_command = slowest_command.max(t.elapsed());
        }
    }
    let last = (changes - 1) as usize;
    let want = 2 + ((changes - 1) % 7);
    let name = services[last].name.to_string();
    wait_until(
        &east_def,
        "the last change landed",
        Duration::from_secs(10),
        |east| {
            east.service(&name).is_some_and(|s| {
                s["remote"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["cluster"] == "rogue" && r["healthy"]["tcp"] == want)
            })
        },
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let published = east_def.status()["snapshot_version"].as_u64().unwrap() - version_before;
    let cpu = cpu_seconds(pid) - cpu_before;
    eprintln!(
        "{changes} changes in {elapsed:.1} s: {published} snapshots published, east used {cpu:.1} CPU s ({:.0} %), slowest command {slowest_command:?}",
        100.0 * cpu / elapsed
    );
    // Ten reports a second at most, over the churn and the wait for the last one.
    let bound = (10.0 * elapsed).ceil() as u64 + 5;
    assert!(
        published <= bound,
        "{published} snapshots for {changes} changes in {elapsed:.1} s (bound {bound})"
    );
    assert!(
        slowest_command < Duration::from_secs(3),
        "a command took {slowest_command:?} during the churn"
    );
}

/// A gateway of a cluster from the same root that is not linked: one of its link
/// connections at a time waits at most `LINK_GRACE` for a link that may be on its way (a
/// join in progress); the others are refused at once. All are refused in the end and
/// counted, and nothing it sends is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlinked_gateway_waits_a_bounded_grace_then_is_refused() {
    use ferry_gateway::server::LINK_GRACE;
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.113.0.0/16");
    let north_def = mesh.cluster("north", "127.114.0.0/16");
    let _east = east_def.up().await;
    let _north = north_def.up().await;
    let identity = common::rogue::gateway_identity(&north_def).await;
    let gateway = east_def.gateways()[0];

    let dials = 4;
    let started = std::time::Instant::now();
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..dials {
        let identity = identity.clone();
        calls.spawn(async move {
            let peer = common::rogue::RoguePeer::connect(identity, "east", gateway).await;
            let closed = peer.conn.closed().await;
            (started.elapsed(), closed.to_string())
        });
    }
    let (mut at_once, mut after_grace) = (0, 0);
    while let Some(done) = calls.join_next().await {
        let (after, why) = done.unwrap();
        assert!(
            why.contains("unknown_peer"),
            "refused as unknown_peer: {why}"
        );
        assert!(
            after < LINK_GRACE + Duration::from_secs(3),
            "refused within the grace: {after:?}"
        );
        if after < LINK_GRACE / 2 {
            at_once += 1;
        } else if after >= LINK_GRACE * 9 / 10 {
            after_grace += 1;
        }
    }
    assert_eq!(
        (after_grace, at_once),
        (1, dials - 1),
        "one connection waits out the grace, the others are refused at once"
    );
    assert!(
        east_def.metric("ferry_gateway_refusals_total", "reason=\"unknown_peer\"") >= dials as u64,
        "every refusal is counted"
    );
}
