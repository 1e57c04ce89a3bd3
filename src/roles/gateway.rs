//! `ferry gateway`: runs the QUIC gateway against the control plane.
//!
//! Registers the gateway's address (refreshed under a lease), forwards the gateway's
//! events (imports, withdrawals, link removals by peers, join redemptions) to the
//! control plane, and reuses the port it had before a restart when the config says
//! port 0, so peers that stored the address find it again.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_federation::{ClusterId, LinkConfig};
use ferry_gateway::server::{Gateway, GatewayEvent, JoinAccepted};
use tokio::sync::mpsc;

use crate::client::{self, Client};
use crate::config::Config;
use crate::pb;
use crate::roles::{identity, snapshots};

const REGISTER_LEASE: Duration = Duration::from_secs(5);

fn remembered_addr(data_dir: &Path) -> PathBuf {
    data_dir.join("gateway.addr")
}

/// Binds the gateway and runs it until the process ends.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let tls = identity::obtain(cfg.role_socket(), "gateway", String::new()).await?;
    let snapshots = snapshots::follow(cfg.role_socket()).await?;
    let (tx, rx) = mpsc::channel(256);
    let listen = if cfg.gateway_listen.port() == 0 {
        std::fs::read_to_string(remembered_addr(&cfg.data_dir))
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            .filter(|a| a.ip() == cfg.gateway_listen.ip())
            .unwrap_or(cfg.gateway_listen)
    } else {
        cfg.gateway_listen
    };
    let bind = |addr| {
        Gateway::bind(
            addr,
            cfg.gateway_advertise,
            tls.identity.clone(),
            tls.trust.clone(),
            snapshots.clone(),
            tx.clone(),
            LinkConfig {
                limits: cfg.limits,
                ..LinkConfig::default()
            },
        )
    };
    let gateway = match bind(listen) {
        Ok(g) => g,
        Err(e) if listen != cfg.gateway_listen => {
            tracing::info!(error = %e, "previous gateway port taken; binding a new one");
            bind(cfg.gateway_listen)?
        }
        Err(e) => return Err(e.into()),
    }
    .with_relay_idle_timeout(cfg.gateway_idle_timeout);
    let advertised = gateway.advertised();
    let _ = std::fs::create_dir_all(&cfg.data_dir);
    let _ = std::fs::write(
        remembered_addr(&cfg.data_dir),
        gateway.local_addr().to_string(),
    );
    tracing::info!(addr = %gateway.local_addr(), %advertised, "gateway listening");
    let c = client::connect(&cfg.role_socket()).await?;
    tokio::spawn(register_loop(
        cfg.role_socket(),
        advertised,
        snapshots.clone(),
        tls.held.clone(),
    ));
    tokio::spawn(forward_events(c, rx));
    crate::admin::set_ready(crate::admin::Role::Gateway, true);
    gateway.run().await;
    Ok(())
}

async fn register_loop(
    socket: PathBuf,
    addr: SocketAddr,
    snapshots: tokio::sync::watch::Receiver<std::sync::Arc<ferry_federation::MeshSnapshot>>,
    held: identity::Held,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut client: Option<Client> = None;
    loop {
        tick.tick().await;
        if client.is_none() {
            client = client::connect(&socket).await.ok();
        }
        let Some(c) = client.as_mut() else { continue };
        // One read: a renewal between two would pair one certificate's start with another's end.
        let cert = held.get();
        let req = pb::RegisterGatewayRequest {
            addr: addr.to_string(),
            lease_ms: REGISTER_LEASE.as_millis() as u64,
            snapshot_version: snapshots.borrow().version,
            cert_not_before_unix: cert.0,
            cert_not_after_unix: cert.1,
        };
        if let Err(e) = c.register_gateway(req).await {
            tracing::debug!(error = %e, "gateway registration failed; retrying");
            client = None;
        }
    }
}

async fn forward_events(mut c: Client, mut rx: mpsc::Receiver<GatewayEvent>) {
    while let Some(event) = rx.recv().await {
        let result = match event {
            GatewayEvent::Imports {
                peer,
                services,
                peer_gateways,
                connected,
                limited,
                session,
            } => c
                .report_imports(pb::ReportImportsRequest {
                    peer: peer.to_string(),
                    services_json: serde_json::to_string(&services).unwrap_or_else(|_| "[]".into()),
                    lease_ms: ferry_gateway::link::REPORT_LEASE.as_millis() as u64,
                    withdrawn: false,
                    connected,
                    peer_gateways: peer_gateways.iter().map(|g| g.to_string()).collect(),
                    limits_json: serde_json::to_string(&limited).unwrap_or_default(),
                    rtt_us: session.rtt.as_micros() as u64,
                    peer_cert_sha256: session.peer_cert,
                    peer_ca_sha256: session.peer_ca,
                    peer_roots_sha256: session.peer_roots,
                })
                .await
                .map(|_| ()),
            GatewayEvent::Withdrawn { peer } => c
                .report_imports(pb::ReportImportsRequest {
                    peer: peer.to_string(),
                    services_json: String::new(),
                    lease_ms: ferry_gateway::link::REPORT_LEASE.as_millis() as u64,
                    withdrawn: true,
                    connected: false,
                    peer_gateways: Vec::new(),
                    limits_json: String::new(),
                    rtt_us: 0,
                    peer_cert_sha256: String::new(),
                    peer_ca_sha256: String::new(),
                    peer_roots_sha256: Vec::new(),
                })
                .await
                .map(|_| ()),
            GatewayEvent::PeerRemovedLink { peer } => c
                .peer_removed_link(pb::LinkRef {
                    peer: peer.to_string(),
                })
                .await
                .map(|_| ()),
            GatewayEvent::Redeem { request, reply } => {
                let answer = c
                    .redeem_link_token(pb::RedeemRequest {
                        token_id: request.token_id.to_vec(),
                        joiner: request.joiner.to_string(),
                        proof: request.proof.to_vec(),
                        channel_binding: request.channel_binding.clone(),
                        gateways: request.gateways.iter().map(|g| g.to_string()).collect(),
                    })
                    .await;
                let out = match answer {
                    Ok(r) => {
                        let r = r.into_inner();
                        match r.issuer.parse::<ClusterId>() {
                            Ok(issuer) => Ok(JoinAccepted {
                                issuer,
                                gateways: r
                                    .gateways
                                    .iter()
                                    .filter_map(|g| g.parse().ok())
                                    .collect(),
                            }),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(status) => Err(status.message().to_owned()),
                };
                let _ = reply.send(out);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::warn!(error = %e, "control plane call failed");
        }
    }
}
