//! Headless services across clusters, as real processes on loopback: a headless exported
//! service `kafka.default` with two endpoints (two echo servers with their own hostnames) in
//! `west`. From `east`, each endpoint VIP reaches exactly its endpoint; the gateway admits
//! only named endpoints of exported headless services, and stops when the service is
//! unexported.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::dns::{self, dig};
use common::*;
use ferry_federation::{ClusterId, Refusal};
use ferry_gateway::tunnel::{TunnelClient, TunnelError};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const PORT: u16 = 9092;

/// `(cluster, hostname) -> (endpoint VIP:PORT, healthy)` of `service` as `def` lists it.
fn endpoint_vips(
    def: &ClusterDef,
    service: &str,
) -> BTreeMap<(String, String), (SocketAddr, bool)> {
    let Some(svc) = def.service(service) else {
        return BTreeMap::new();
    };
    assert_eq!(svc["headless"], true, "{svc}");
    svc["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let key = (
                e["cluster"].as_str().unwrap().to_owned(),
                e["hostname"].as_str().unwrap().to_owned(),
            );
            let vip = e["vip"].as_str().unwrap().parse().unwrap();
            (key, (SocketAddr::new(vip, PORT), e["healthy"] == true))
        })
        .collect()
}

/// Waits until `def` lists `service` with healthy endpoints `hostnames` in `cluster`.
async fn wait_endpoints(def: &ClusterDef, service: &str, cluster: &str, hostnames: &[&str]) {
    let (def2, service2) = (def.clone(), service.to_owned());
    let want: Vec<(String, String)> = hostnames
        .iter()
        .map(|h| (cluster.to_owned(), (*h).to_owned()))
        .collect();
    wait_for(
        &format!(
            "{service} endpoints {hostnames:?} of {cluster} in {}",
            def.name
        ),
        Duration::from_secs(20),
        || {
            let (def, service, want) = (def2.clone(), service2.clone(), want.clone());
            async move {
                let eps = endpoint_vips(&def, &service);
                want.iter().all(|k| eps.get(k).is_some_and(|(_, ok)| *ok))
            }
        },
    )
    .await;
}

/// Opens a tunnel stream to west and sends a byte; returns the gateway's refusal, if any.
async fn refusal(
    client: &TunnelClient,
    gateways: &[SocketAddr],
    service: &str,
    endpoint: &str,
) -> Option<Refusal> {
    let west: ClusterId = "west".parse().unwrap();
    let header = tunnel_header(service, "broker", Some(endpoint));
    match client.open(&west, gateways, &header).await {
        Ok((mut send, mut recv)) => {
            send.write_all(b"x").await.unwrap();
            send.finish().unwrap();
            assert_eq!(recv.read_to_end(16).await.unwrap(), b"x");
            None
        }
        Err(TunnelError::Refused { refusal, .. }) => Some(refusal),
        Err(e) => panic!("{service}/{endpoint}: expected an answer from the gateway, got {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_vip_reaches_exactly_its_endpoint() {
    let ew = east_west("127.71.0.0/16", "127.72.0.0/16").await;
    let (east_def, west_def) = (ew.east_def.clone(), ew.west_def.clone());

    let kafka0 = Echo::start().await;
    let kafka1 = Echo::start().await;
    let secret = Echo::start().await;
    let (ep0, ep1) = (
        format!("kafka-0={}", kafka0.addr),
        format!("kafka-1={}", kafka1.addr),
    );
    let port = format!("broker={PORT}");
    let added = west_def.cli_ok(&[
        "service",
        "add",
        "kafka.default",
        "--port",
        &port,
        "--endpoint",
        &ep0,
        "--endpoint",
        &ep1,
        "--headless",
        "--export",
        "-o",
        "json",
    ]);
    assert!(added.contains("\"headless\": true"), "{added}");
    let secret_ep = format!("s-0={}", secret.addr);
    west_def.cli_ok(&[
        "service",
        "add",
        "secret.default",
        "--port",
        &port,
        "--endpoint",
        &secret_ep,
        "--headless",
    ]);
    // Hostnames of a headless service must be unique; the CLI says so and how to fix it.
    let dup = west_def.cli(&[
        "service",
        "add",
        "dup.default",
        "--port",
        &port,
        "--endpoint",
        "k=127.0.0.1:1",
        "--endpoint",
        "k=127.0.0.2:1",
        "--headless",
    ]);
    let err = String::from_utf8_lossy(&dup.stderr);
    assert!(
        !dup.status.success() && err.contains("two endpoints named k"),
        "{err}"
    );

    link(&east_def, &west_def);
    wait_endpoints(&east_def, "kafka.default", "west", &["kafka-0", "kafka-1"]).await;
    let east_eps = endpoint_vips(&east_def, "kafka.default");
    assert_eq!(east_eps.len(), 2, "only west's endpoints: {east_eps:?}");
    let vip0 = east_eps[&("west".into(), "kafka-0".into())].0;
    let vip1 = east_eps[&("west".into(), "kafka-1".into())].0;
    let service_vip = east_def.vip("kafka.default", PORT);
    assert!(vip0 != vip1 && vip0 != service_vip && vip1 != service_vip);
    assert!(
        east_def.service("secret.default").is_none(),
        "unexported services stay invisible"
    );

    // East's DNS: the service name answers both endpoint VIPs, each endpoint has its own
    // name, `<cluster>.<svc>` does not exist, and SRV targets the endpoint names.
    let dns = east_def.dns_addr().await;
    let zone = "kafka.default.svc.clusterset.local.";
    let a = |name: String| async move {
        let reply = dns::ask(
            dns,
            &dns::query(&name, RecordType::A, false),
            dns::Transport::Udp,
        )
        .await;
        (reply.metadata.response_code, dns::addresses(&reply))
    };
    wait_for(
        "east's DNS has a snapshot",
        Duration::from_secs(10),
        || async move { a(zone.to_string()).await.0 != ResponseCode::ServFail },
    )
    .await;
    let (code, mut all) = a(zone.to_string()).await;
    all.sort();
    let mut want = vec![vip0.ip().to_string(), vip1.ip().to_string()];
    want.sort();
    assert_eq!((code, all), (ResponseCode::NoError, want));
    assert_eq!(
        a(format!("kafka-0.west.{zone}")).await,
        (ResponseCode::NoError, vec![vip0.ip().to_string()])
    );
    assert_eq!(a(format!("west.{zone}")).await.0, ResponseCode::NXDomain);
    assert_eq!(
        a(format!("kafka-0.east.{zone}")).await.0,
        ResponseCode::NXDomain
    );
    let srv = dns::ask(
        dns,
        &dns::query(&format!("_broker._tcp.{zone}"), RecordType::SRV, true),
        dns::Transport::Udp,
    )
    .await;
    let mut targets: Vec<String> = srv.answers.iter().map(|r| r.data.to_string()).collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            format!("0 50 {PORT} kafka-0.west.{zone}"),
            format!("0 50 {PORT} kafka-1.west.{zone}")
        ]
    );
    let dug = dig(dns, &["+short", &format!("kafka-1.west.{zone}")]);
    assert_eq!(dug.trim(), vip1.ip().to_string(), "dig");

    // Each endpoint VIP reaches exactly its endpoint, through west's gateway.
    wait_listening(vip0).await;
    wait_listening(vip1).await;
    for i in 0..3 {
        let payload = format!("to kafka-0, call {i}").into_bytes();
        assert_eq!(echo_roundtrip(vip0, &payload).await.unwrap(), payload);
    }
    assert_eq!((kafka0.accepted(), kafka1.accepted()), (3, 0));
    for i in 0..2 {
        let payload = format!("to kafka-1, call {i}").into_bytes();
        assert_eq!(echo_roundtrip(vip1, &payload).await.unwrap(), payload);
    }
    assert_eq!((kafka0.accepted(), kafka1.accepted()), (3, 2));
    // The service VIP still reaches some endpoint.
    assert_eq!(echo_roundtrip(service_vip, b"any").await.unwrap(), b"any");
    assert_eq!(kafka0.accepted() + kafka1.accepted(), 6);

    // In west, its own endpoint VIPs go straight to the local endpoint.
    let west_eps = endpoint_vips(&west_def, "kafka.default");
    let local1 = west_eps[&("west".into(), "kafka-1".into())].0;
    wait_listening(local1).await;
    let before = (kafka0.accepted(), kafka1.accepted());
    assert_eq!(echo_roundtrip(local1, b"local").await.unwrap(), b"local");
    assert_eq!(
        (kafka0.accepted(), kafka1.accepted()),
        (before.0, before.1 + 1)
    );

    // The gateway: a named endpoint of an exported headless service only.
    let client = east_def.node_client().await;
    let gateways = west_def.gateways();
    let before = (kafka0.accepted(), kafka1.accepted());
    for (service, endpoint, want) in [
        ("kafka.default", "kafka-7", Refusal::UnknownEndpoint),
        ("secret.default", "s-0", Refusal::NotExported),
        ("nothing.default", "kafka-0", Refusal::NotExported),
    ] {
        assert_eq!(
            refusal(&client, &gateways, service, endpoint).await,
            Some(want),
            "{service}/{endpoint}"
        );
    }
    assert_eq!(
        secret.accepted(),
        0,
        "the unexported backend was never reached"
    );
    assert_eq!((kafka0.accepted(), kafka1.accepted()), before);
    assert_eq!(
        refusal(&client, &gateways, "kafka.default", "kafka-0").await,
        None
    );
    assert_eq!(
        kafka0.accepted(),
        before.0 + 1,
        "the named endpoint, and only it"
    );
    assert!(
        west_def.metric(
            "ferry_gateway_refusals_total",
            "reason=\"unknown_endpoint\""
        ) >= 1
    );

    // Unexport: the gateway refuses the endpoint, and east forgets the service.
    west_def.cli_ok(&["unexport", "kafka.default"]);
    let (c, g) = (&client, &gateways);
    wait_for("west's gateway refuses kafka-0", Duration::from_secs(10), || async move {
        refusal(c, g, "kafka.default", "kafka-0").await == Some(Refusal::NotExported)
    })
    .await;
    let after_unexport = kafka0.accepted();
    assert_eq!(
        refusal(&client, &gateways, "kafka.default", "kafka-0").await,
        Some(Refusal::NotExported)
    );
    assert_eq!(
        kafka0.accepted(),
        after_unexport,
        "backend untouched once refused"
    );
    east_def
        .wait_service_gone("kafka.default", Duration::from_secs(10))
        .await;
    // East's DNS follows within moments (its own copy of the snapshot).
    wait_for(
        "kafka names gone from east's DNS",
        Duration::from_secs(2),
        || async move {
            a(zone.to_string()).await.0 == ResponseCode::NXDomain
                && a(format!("kafka-0.west.{zone}")).await.0 == ResponseCode::NXDomain
        },
    )
    .await;
}
