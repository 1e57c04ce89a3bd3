//! Mesh DNS against real `ferry` processes: a golden table over UDP and TCP (and real
//! `dig`), live export/unexport/kill across two clusters, forwarding, truncation, malformed
//! packets and the per-source rate limit.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::dns::{addresses, ask, dig, exchange_raw, query, Transport};
use common::*;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

const Z: &str = "svc.clusterset.local.";

/// Waits until `q` gets `want` from the server at `dns`.
async fn wait_rcode(
    dns: SocketAddr,
    q: &Message,
    want: ResponseCode,
    timeout: Duration,
    what: &str,
) {
    wait_for(what, timeout, || {
        let q = q.clone();
        async move { ask(dns, &q, Transport::Udp).await.metadata.response_code == want }
    })
    .await;
}

/// One row of the golden table: question, expected rcode, expected answer data (sorted),
/// expected authority owner (the SOA's zone) and additional data.
struct Row {
    name: String,
    rtype: RecordType,
    rcode: ResponseCode,
    answers: Vec<String>,
    soa: Option<&'static str>,
    additionals: Vec<String>,
}

fn row(name: impl Into<String>, rtype: RecordType, rcode: ResponseCode) -> Row {
    Row {
        name: name.into(),
        rtype,
        rcode,
        answers: vec![],
        soa: None,
        additionals: vec![],
    }
}

impl Row {
    fn answers(mut self, a: &[&str]) -> Row {
        self.answers = a.iter().map(|s| s.to_string()).collect();
        self.answers.sort();
        self
    }
    fn soa(mut self, zone: &'static str) -> Row {
        self.soa = Some(zone);
        self
    }
    fn additionals(mut self, a: &[&str]) -> Row {
        self.additionals = a.iter().map(|s| s.to_string()).collect();
        self
    }
}

fn check(row: &Row, reply: &Message, how: &str) -> Option<String> {
    let want_additionals = row.additionals.clone();
    let mut answers: Vec<String> = reply.answers.iter().map(|r| r.data.to_string()).collect();
    answers.sort();
    let soa = reply
        .authorities
        .iter()
        .find(|r| r.record_type() == RecordType::SOA)
        .map(|r| r.name.to_string());
    let additionals: Vec<String> = reply
        .additionals
        .iter()
        .map(|r| r.data.to_string())
        .collect();
    let ok = reply.metadata.response_code == row.rcode
        && answers == row.answers
        && soa.as_deref() == row.soa
        && additionals == want_additionals
        && !reply.metadata.truncation;
    (!ok).then(|| {
        format!(
            "{} {} over {how}: got {} answers={answers:?} soa={soa:?} additionals={additionals:?} tc={}; want {} answers={:?} soa={:?} additionals={:?}",
            row.name,
            row.rtype,
            reply.metadata.response_code,
            reply.metadata.truncation,
            row.rcode,
            row.answers,
            row.soa,
            want_additionals
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn golden_table_over_udp_tcp_and_dig() {
    let ew = east_west("127.41.0.0/16", "127.42.0.0/16").await;
    let (east_def, west_def) = (ew.east_def.clone(), ew.west_def.clone());
    let echo = Echo::start().await;
    let ep = echo.addr.ip().to_string();
    let port = |spec: &str| {
        let (name, proto) = spec.split_once('/').unwrap_or((spec, "tcp"));
        format!("{name}:{}/{proto}", echo.addr.port())
    };
    let (http, grpc, redis, pg, stats) = (
        port("http=8080/http"),
        port("grpc=9090/grpc"),
        port("redis=6379"),
        port("pg=5432"),
        port("stats=8125/udp"),
    );
    // api: runs here, exported. cache: runs here, not exported. db: runs only in west.
    east_def.cli_ok(&[
        "service",
        "add",
        "api.shop",
        "--port",
        &http,
        "--port",
        &grpc,
        "--endpoint",
        &ep,
        "--export",
    ]);
    east_def.cli_ok(&[
        "service",
        "add",
        "cache.shop",
        "--port",
        &redis,
        "--endpoint",
        &ep,
    ]);
    west_def.cli_ok(&[
        "service",
        "add",
        "db.shop",
        "--port",
        &pg,
        "--port",
        &stats,
        "--endpoint",
        &ep,
        "--export",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("db.shop", "west").await;
    let dns = east_def.dns_addr().await;
    let api = east_def.vip("api.shop", 8080).ip().to_string();
    let db = east_def.vip("db.shop", 5432).ip().to_string();
    let cache = east_def.vip("cache.shop", 6379).ip().to_string();
    // Wait until api's endpoint passed a health check (the zone lists healthy services only)
    // and the DNS server has the snapshot with db's import.
    for name in ["api", "db"] {
        let probe = query(&format!("{name}.shop.{Z}"), RecordType::A, false);
        wait_rcode(
            dns,
            &probe,
            ResponseCode::NoError,
            Duration::from_secs(10),
            name,
        )
        .await;
    }

    let reverse = |ip: &str| {
        let o: Vec<&str> = ip.split('.').collect();
        format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
    };
    use RecordType::*;
    use ResponseCode::*;
    let table = vec![
        row(format!("api.shop.{Z}"), A, NoError).answers(&[&api]),
        row(format!("API.SHOP.{Z}"), A, NoError).answers(&[&api]),
        // Remote-only: resolves here, same name as in west.
        row(format!("db.shop.{Z}"), A, NoError).answers(&[&db]),
        row(format!("api.shop.{Z}"), AAAA, NoError).soa("clusterset.local."),
        row(format!("api.shop.{Z}"), TXT, NoError).soa("clusterset.local."),
        // Not exported anywhere: no clusterset name.
        row(format!("cache.shop.{Z}"), A, NXDomain).soa("clusterset.local."),
        row(format!("nope.shop.{Z}"), A, NXDomain).soa("clusterset.local."),
        row(format!("api.nons.{Z}"), A, NXDomain).soa("clusterset.local."),
        row(format!("east.api.shop.{Z}"), A, NXDomain).soa("clusterset.local."),
        row(format!("shop.{Z}"), A, NoError).soa("clusterset.local."),
        row(format!("_http._tcp.api.shop.{Z}"), SRV, NoError)
            .answers(&[&format!("0 100 8080 api.shop.{Z}")])
            .additionals(&[&api]),
        row(format!("_grpc._tcp.api.shop.{Z}"), SRV, NoError)
            .answers(&[&format!("0 100 9090 api.shop.{Z}")])
            .additionals(&[&api]),
        row(format!("_stats._udp.db.shop.{Z}"), SRV, NoError)
            .answers(&[&format!("0 100 8125 db.shop.{Z}")])
            .additionals(&[&db]),
        row(format!("_pg._udp.db.shop.{Z}"), SRV, NXDomain).soa("clusterset.local."),
        // Bare-name SRV: the first port (what the MCS conformance suite asks).
        row(format!("api.shop.{Z}"), SRV, NoError)
            .answers(&[&format!("0 100 8080 api.shop.{Z}")])
            .additionals(&[&api]),
        // `_tcp.<svc>` exists (SRV names sit below it): NODATA, not NXDOMAIN.
        row(format!("_tcp.api.shop.{Z}"), SRV, NoError).soa("clusterset.local."),
        row(format!("api.shop.{Z}"), ANY, NoError).answers(&[&api]),
        row("dns-version.clusterset.local.", TXT, NoError).answers(&["1.0.0"]),
        row(reverse(&api), PTR, NoError).answers(&[&format!("api.shop.{Z}")]),
        row(reverse(&db), PTR, NoError).answers(&[&format!("db.shop.{Z}")]),
        row(reverse(&cache), PTR, NXDomain).soa("41.127.in-addr.arpa."),
        // No upstream configured: other names are refused, not recursed.
        row("example.com.", A, Refused),
        row("api.shop.svc.cluster.local.", A, Refused),
    ];
    let mut failures = Vec::new();
    for r in &table {
        for (transport, edns) in [
            (Transport::Udp, false),
            (Transport::Udp, true),
            (Transport::Tcp, false),
        ] {
            let q = query(&r.name, r.rtype, edns);
            let reply = ask(dns, &q, transport).await;
            let how = format!("{transport:?} edns={edns}");
            if let Some(f) = check(r, &reply, &how) {
                failures.push(f);
            }
            let ours = r.rcode != Refused;
            if reply.metadata.authoritative != ours {
                failures.push(format!(
                    "{} {}: AA={} over {how}",
                    r.name, r.rtype, reply.metadata.authoritative
                ));
            }
            if edns != reply.edns.is_some() {
                failures.push(format!(
                    "{} {}: EDNS in reply={} over {how}",
                    r.name,
                    r.rtype,
                    reply.edns.is_some()
                ));
            }
            for rec in reply.answers.iter().chain(reply.authorities.iter()) {
                if rec.ttl > 5 {
                    failures.push(format!("{} {}: TTL {} over 5 s", r.name, r.rtype, rec.ttl));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "golden table mismatches:\n{}",
        failures.join("\n")
    );

    // The same answers through real dig.
    let short = dig(dns, &["+short", &format!("api.shop.{Z}")]);
    assert_eq!(short.trim(), api, "dig +short");
    let srv = dig(dns, &["+tcp", "SRV", &format!("_http._tcp.api.shop.{Z}")])
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        srv.contains("status: NOERROR") && srv.contains(&format!("8080 api.shop.{Z}")),
        "{srv}"
    );
    assert!(
        srv.contains(&format!("ADDITIONAL SECTION: api.shop.{Z} 5 IN A {api}")),
        "SRV additional:\n{srv}"
    );
    let nx = dig(dns, &[&format!("nope.shop.{Z}")]);
    assert!(
        nx.contains("status: NXDOMAIN") && nx.contains("IN\tSOA"),
        "{nx}"
    );
    let version = dig(dns, &["+short", "TXT", "dns-version.clusterset.local"]);
    assert_eq!(version.trim(), "\"1.0.0\"");
    let ptr = dig(dns, &["+short", "-x", &api]);
    assert_eq!(ptr.trim(), format!("api.shop.{Z}"));
    let refused = dig(dns, &["example.com"]);
    assert!(refused.contains("status: REFUSED"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_unexport_and_peer_loss_show_in_dns() {
    let mut ew = east_west("127.43.0.0/16", "127.44.0.0/16").await;
    let (east_def, west_def) = (ew.east_def.clone(), ew.west_def.clone());
    let echo = Echo::start().await;
    west_def.add_echo(&echo, false);
    link(&east_def, &west_def);
    let dns = east_def.dns_addr().await;
    let name = format!("echo.shop.{Z}");
    let q = query(&name, RecordType::A, false);
    // Not exported yet: NXDOMAIN (after SERVFAIL until east's DNS has its first snapshot).
    wait_rcode(
        dns,
        &q,
        ResponseCode::NXDomain,
        Duration::from_secs(10),
        "NXDOMAIN",
    )
    .await;
    // Let west's health check pass first, so the export carries a healthy endpoint.
    west_def.wait_local_healthy("echo.shop").await;

    let t = Instant::now();
    west_def.cli_ok(&["export", "echo.shop"]);
    wait_rcode(
        dns,
        &q,
        ResponseCode::NoError,
        Duration::from_secs(1),
        "echo.shop resolves in east",
    )
    .await;
    eprintln!("export visible in east's DNS after {:?}", t.elapsed());
    let reply = ask(dns, &q, Transport::Udp).await;
    assert_eq!(
        addresses(&reply),
        vec![east_def.vip("echo.shop", 7000).ip().to_string()]
    );
    // The VIP it answers carries the call across.
    let vip: SocketAddr = format!("{}:7000", addresses(&reply)[0]).parse().unwrap();
    assert_eq!(echo_roundtrip(vip, b"by name").await.unwrap(), b"by name");

    let t = Instant::now();
    west_def.cli_ok(&["unexport", "echo.shop"]);
    wait_rcode(
        dns,
        &q,
        ResponseCode::NXDomain,
        Duration::from_secs(1),
        "echo.shop gone from east's DNS",
    )
    .await;
    eprintln!("unexport visible in east's DNS after {:?}", t.elapsed());

    west_def.cli_ok(&["export", "echo.shop"]);
    wait_rcode(
        dns,
        &q,
        ResponseCode::NoError,
        Duration::from_secs(1),
        "echo.shop back",
    )
    .await;
    // Kill west outright: no goodbye. The name stays while the import lease runs, then goes.
    let t = Instant::now();
    ew.west.kill();
    wait_rcode(
        dns,
        &q,
        ResponseCode::NXDomain,
        Duration::from_secs(15),
        "echo.shop gone after west died",
    )
    .await;
    let gone = t.elapsed();
    eprintln!("dead peer's service left east's DNS after {gone:?}");
    assert!(
        gone >= Duration::from_secs(2),
        "withdrawn by the lease, not at once ({gone:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servfail_until_the_first_snapshot_then_answers() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("solo", "127.45.0.0/16");
    let echo = Echo::start().await;
    def.append_config(&format!(
        "[[service]]\nname = \"api.shop\"\nports = [\"http=8080/http\"]\nendpoints = [\"{}\"]\nexport = true\n",
        echo.addr
    ));
    // The DNS server alone, with no control plane to talk to yet.
    let mut cluster = Cluster {
        def: def.clone(),
        procs: vec![],
    };
    def.spawn(&mut cluster, "dns");
    let dns = def.dns_addr().await;
    let q = query(&format!("api.shop.{Z}"), RecordType::A, false);
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = ask(dns, &q, transport).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::ServFail,
            "{transport:?}: never NXDOMAIN before the mesh is known"
        );
    }
    let other = ask(
        dns,
        &query("example.com.", RecordType::A, false),
        Transport::Udp,
    )
    .await;
    assert_eq!(other.metadata.response_code, ResponseCode::Refused);

    def.spawn(&mut cluster, "control");
    wait_for(
        "api.shop resolves once the control plane is up",
        Duration::from_secs(20),
        || {
            let q = q.clone();
            async move {
                ask(dns, &q, Transport::Udp).await.metadata.response_code == ResponseCode::NoError
            }
        },
    )
    .await;
    // The control plane goes away: the last snapshot keeps answering.
    cluster.kill_one(1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ask(dns, &q, Transport::Tcp).await.metadata.response_code,
        ResponseCode::NoError
    );
}

/// A fake upstream resolver on UDP and TCP: `big.example.` gets 60 A records, anything
/// else one (192.0.2.1).
async fn fake_upstream() -> SocketAddr {
    use hickory_proto::rr::{rdata::A, RData, Record};
    fn answer(raw: &[u8]) -> Option<Vec<u8>> {
        let q = Message::from_vec(raw).ok()?;
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.metadata.recursion_available = true;
        r.metadata.recursion_desired = q.metadata.recursion_desired;
        let question = q.queries.first()?.clone();
        let n = if question.name().to_ascii() == "big.example." {
            60
        } else {
            1
        };
        for i in 0..n {
            r.add_answer(Record::from_rdata(
                question.name().clone(),
                60,
                RData::A(A::new(192, 0, 2, 1 + i as u8)),
            ));
        }
        r.add_query(question);
        r.to_vec().ok()
    }
    // The same port on UDP and TCP: a port free on UDP may be taken on TCP, so try again.
    let (udp, tcp, addr) = loop {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if let Ok(tcp) = tokio::net::TcpListener::bind(addr).await {
            break (udp, tcp, addr);
        }
    };
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, src)) = udp.recv_from(&mut buf).await {
            if let Some(a) = answer(&buf[..n]) {
                let _ = udp.send_to(&a, src).await;
            }
        }
    });
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = tcp.accept().await {
            tokio::spawn(async move {
                let len = s.read_u16().await.ok()?;
                let mut buf = vec![0u8; usize::from(len)];
                s.read_exact(&mut buf).await.ok()?;
                let a = answer(&buf)?;
                let mut framed = (a.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&a);
                s.write_all(&framed).await.ok()
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_truncation_malformed_packets_and_rate_limit() {
    let mesh = Mesh::new("example.org");
    let def = mesh.cluster("solo", "127.46.0.0/16");
    let upstream = fake_upstream().await;
    def.append_config(&format!(
        "[dns]\nupstreams = [\"{upstream}\"]\nrate_limit = 100\nttl = \"3s\"\n"
    ));
    let _cluster = def.up().await;
    let dns = def.dns_addr().await;
    let echo = Echo::start().await;
    // A service with 40 named ports.
    let mut args = vec!["service".to_string(), "add".into(), "wide.shop".into()];
    for i in 0..40 {
        args.push("--port".into());
        args.push(format!("p{i}={}:{}", 1000 + i, echo.addr.port()));
    }
    args.extend([
        "--endpoint".into(),
        echo.addr.ip().to_string(),
        "--export".into(),
    ]);
    def.cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let wide = query(&format!("wide.shop.{Z}"), RecordType::A, false);
    wait_for("wide.shop resolves", Duration::from_secs(10), || {
        let q = wide.clone();
        async move { ask(dns, &q, Transport::Udp).await.metadata.response_code == ResponseCode::NoError }
    })
    .await;
    let a = ask(dns, &wide, Transport::Udp).await;
    assert_eq!(a.answers[0].ttl, 3, "configured TTL");
    // A headless service with 40 ready endpoints: its A answer cannot fit in 512 bytes.
    let mut backends = Vec::new();
    let mut args = vec![
        "service".to_string(),
        "add".into(),
        "many.shop".into(),
        "--port".into(),
        "tcp=7000".into(),
        "--headless".into(),
        "--export".into(),
    ];
    for i in 0..40 {
        let backend = Echo::start().await;
        args.push("--endpoint".into());
        args.push(format!("m-{i}={}", backend.addr));
        backends.push(backend);
    }
    def.cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let many = query(&format!("many.shop.{Z}"), RecordType::A, true);
    wait_for(
        "40 endpoints of many.shop resolve",
        Duration::from_secs(10),
        || {
            let q = many.clone();
            async move { ask(dns, &q, Transport::Tcp).await.answers.len() == 40 }
        },
    )
    .await;

    // Forwarded: answered by the upstream, RA set, not authoritative.
    for transport in [Transport::Udp, Transport::Tcp] {
        let reply = ask(dns, &query("example.com.", RecordType::A, true), transport).await;
        assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
        assert_eq!(addresses(&reply), vec!["192.0.2.1"]);
        assert!(reply.metadata.recursion_available && !reply.metadata.authoritative);
    }

    // Too big for UDP: TC over UDP (both for mesh and forwarded answers), complete over TCP.
    for (name, rtype, count) in [
        (format!("many.shop.{Z}"), RecordType::A, 40),
        ("big.example.".to_string(), RecordType::A, 60),
    ] {
        let q = query(&name, rtype, false);
        let raw_q = q.to_vec().unwrap();
        let raw = exchange_raw(dns, &raw_q, Transport::Udp, Duration::from_secs(3))
            .await
            .unwrap();
        let udp = Message::from_vec(&raw).unwrap();
        assert!(udp.metadata.truncation, "{name}: TC over UDP");
        assert!(
            raw.len() <= 512.min(4 * raw_q.len()),
            "{name}: UDP reply {} bytes for a {}-byte query",
            raw.len(),
            raw_q.len()
        );
        let tcp = ask(dns, &q, Transport::Tcp).await;
        assert!(!tcp.metadata.truncation);
        assert_eq!(tcp.answers.len(), count, "{name}: complete over TCP");
        let via_dig = dig(dns, &[&name, &rtype.to_string()]);
        assert!(
            via_dig.contains("Truncated, retrying in TCP mode")
                && via_dig.contains(&format!("ANSWER: {count}")),
            "{via_dig}"
        );
    }

    // Malformed input: FORMERR or silence, never a crash, never a big reply.
    let good = query(&format!("wide.shop.{Z}"), RecordType::A, false)
        .to_vec()
        .unwrap();
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0; 5],
        vec![0xff; 12],
        // One question claimed, 65535 answers claimed, 12 bytes sent.
        vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0xff, 0xff, 0, 0, 0, 0],
        // No question.
        vec![0x12, 0x34, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0],
        // A name with a compression loop.
        [&good[..12], &[0xc0, 0x0c, 0, 1, 0, 1][..]].concat(),
        // A label longer than 63.
        [
            &good[..12],
            &[70][..],
            &[b'a'; 70][..],
            &[0, 0, 1, 0, 1][..],
        ]
        .concat(),
        good[..good.len() - 3].to_vec(),
        vec![0u8; 4000],
    ];
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..50 {
        let mut c = good.clone();
        for _ in 0..4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed as usize) % c.len();
            c[i] = (seed >> 32) as u8;
        }
        cases.push(c);
    }
    for case in &cases {
        if let Some(reply) =
            exchange_raw(dns, case, Transport::Udp, Duration::from_millis(200)).await
        {
            assert!(
                reply.len() <= 4 * case.len().max(12),
                "reply of {} bytes to a {}-byte packet",
                reply.len(),
                case.len()
            );
            assert_eq!(reply[..2], case[..2], "reply carries the query ID");
        }
    }
    for case in [&cases[3], &cases[4]] {
        let reply = exchange_raw(dns, case, Transport::Udp, Duration::from_secs(1))
            .await
            .expect("FORMERR reply");
        assert_eq!(reply[3] & 0x0f, 1, "FORMERR");
        let reply = exchange_raw(dns, case, Transport::Tcp, Duration::from_secs(1))
            .await
            .expect("FORMERR reply over TCP");
        assert_eq!(reply[3] & 0x0f, 1, "FORMERR over TCP");
    }
    assert_eq!(
        ask(dns, &wide, Transport::Udp).await.metadata.response_code,
        ResponseCode::NoError,
        "still serving"
    );

    // Rate limit: one noisy source floods 2000 queries; most go unanswered, while another
    // source is served.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let noisy = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let raw = wide.to_vec().unwrap();
    for _ in 0..2000 {
        noisy.send_to(&raw, dns).await.unwrap();
    }
    let mut answered = 0;
    let mut buf = vec![0u8; 2048];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), noisy.recv_from(&mut buf)).await
    {
        if n > 12 && buf[3] & 0x0f == 0 && buf[2] & 0x02 == 0 {
            answered += 1;
        }
    }
    assert!(
        answered < 600,
        "rate limit 100/s (burst 200): {answered} of 2000 answered"
    );
    let quiet = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    quiet.send_to(&raw, dns).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), quiet.recv_from(&mut buf))
        .await
        .expect("another source is still served")
        .unwrap();
    assert_eq!(
        Message::from_vec(&buf[..n]).unwrap().metadata.response_code,
        ResponseCode::NoError
    );
}
