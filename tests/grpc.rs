//! gRPC ports through the node proxy: a real tonic client calls a real tonic server
//! (grpc.health.v1) in another cluster over HTTP/2; the proxy's own failures are gRPC
//! statuses (`UNAVAILABLE`, `DEADLINE_EXCEEDED`) with a `ferry-error`, never HTTP errors.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::http::HttpBackend;
use common::*;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn health_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("shop.Cart", tonic_health::ServingStatus::Serving)
        .await;
    tokio::spawn(async move {
        let _keep = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

async fn check(vip: SocketAddr, service: &str) -> Result<ServingStatus, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{vip}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await?;
    Ok(reply.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_crosses_clusters_and_proxy_failures_are_grpc_statuses() {
    let mesh = Mesh::new("example.org");
    let east_def = mesh.cluster("east", "127.92.0.0/16");
    let west_def = mesh.cluster("west", "127.93.0.0/16");
    let _east = east_def.up().await;
    let _west = west_def.up().await;
    let server = health_server().await.to_string();
    west_def.cli_ok(&[
        "service",
        "add",
        "cart.shop",
        "--port",
        "grpc=50051/grpc",
        "--endpoint",
        &server,
        "--export",
    ]);
    link(&east_def, &west_def);
    east_def.wait_imported("cart.shop", "west").await;
    let vip = east_def.vip("cart.shop", 50051);

    assert_eq!(
        check(vip, "shop.Cart").await.unwrap(),
        ServingStatus::Serving
    );
    // The server's own status passes through untouched.
    let err = check(vip, "shop.Nothing").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.metadata().get("ferry-error").is_none());

    // Nowhere to go under the policy: UNAVAILABLE, with the reason.
    east_def.cli_ok(&["policy", "set", "cart.shop", "--pinned", "north"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let err = loop {
        match check(vip, "shop.Cart").await {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline, "the policy never applied"),
        }
    };
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("ferry-error")
            .and_then(|v| v.to_str().ok()),
        Some("no_allowed_endpoint")
    );
    east_def.cli_ok(&["policy", "clear", "cart.shop"]);

    // A call slower than the policy's timeout: DEADLINE_EXCEEDED (the backend is an h2c
    // server whose /slow answers after 2 s).
    let slow = HttpBackend::start("slow", false).await.addr.to_string();
    east_def.cli_ok(&[
        "service",
        "add",
        "slow.shop",
        "--port",
        "grpc=50052/grpc",
        "--endpoint",
        &slow,
    ]);
    east_def.wait_local_healthy("slow.shop").await;
    east_def.cli_ok(&["policy", "set", "slow.shop", "--timeout", "300ms"]);
    let slow_vip = east_def.vip("slow.shop", 50052);
    let out = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("curl")
                .args(["-sS", "-i", "--http2-prior-knowledge", "-X", "POST"])
                .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
                .arg(format!("http://{slow_vip}/slow"))
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
            if text.contains("grpc-status: 4") || Instant::now() > deadline {
                return text;
            }
        }
    })
    .await
    .unwrap();
    assert!(out.starts_with("http/2 200"), "{out}");
    assert!(
        out.contains("grpc-status: 4") && out.contains("ferry-error: timeout"),
        "{out}"
    );
}
