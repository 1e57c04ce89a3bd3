//! Link sessions between gateways: the shell around `ferry_federation::LinkSync`.
//!
//! One long-lived QUIC connection per linked peer carries one control stream of framed
//! [`LinkMessage`]s: hello, export snapshot, deltas, heartbeats, goodbye. The cluster
//! whose name sorts first dials; the other waits a grace period and dials only if no
//! session exists (so a peer whose gateway moved is still found). A dialler spreads over
//! the peer's gateways and moves to a survivor when one dies. This module moves bytes
//! and runs timers; every decision is in `LinkSync`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ferry_federation::{
    encode_frame, ClusterId, FrameDecoder, LimitExceeded, LinkEvent, LinkMessage, LinkSync,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument as _;

use crate::dial::DialError;
use crate::server::{ConnKind, GatewayEvent, Shared, CLOSE_DONE, CLOSE_LINK_REMOVED};
use crate::tls::{self, PeerExpectation, ALPN_LINK};

/// How often a live session re-reports its imports to the control plane (lease refresh).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// The shortest time between two imports reports of one session: changes a peer sends
/// faster than this are folded into the next report (the latest state wins).
const MIN_REPORT_GAP: Duration = Duration::from_millis(100);
/// Lease the control plane gives our reports.
pub const REPORT_LEASE: Duration = Duration::from_secs(5);
/// How long the cluster that does not dial first waits for the peer to dial.
const DIAL_GRACE: Duration = Duration::from_secs(3);
/// How long one link message may take to leave: a peer that stops reading is cut off
/// rather than holding the session (and its queued snapshots) forever.
const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// At most one warning per peer and this interval about refused input.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Keeps one dialling task per linked peer, started and stopped as links come and go.
pub(crate) async fn manage_links(shared: Arc<Shared>) {
    let mut rx = shared.snapshots.clone();
    let mut tasks: HashMap<ClusterId, JoinHandle<()>> = HashMap::new();
    loop {
        let snapshot = rx.borrow_and_update().clone();
        // A removed link's task is not aborted: its session says goodbye and ends, and its
        // dial loop returns once it sees the link gone.
        tasks.retain(|_, task| !task.is_finished());
        for link in &snapshot.links {
            if !tasks.contains_key(&link.peer) {
                let task = tokio::spawn(
                    dial_loop(shared.clone(), link.peer.clone())
                        .instrument(tracing::info_span!("link", peer = %link.peer)),
                );
                tasks.insert(link.peer.clone(), task);
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn dial_loop(shared: Arc<Shared>, peer: ClusterId) {
    let local = shared.snapshot().cluster.clone();
    let dials_first = local.as_str() < peer.as_str();
    let mut attempt: usize = (shared.advertise.port() as usize) % 7;
    let mut backoff = Duration::from_millis(200);
    if !dials_first {
        tokio::time::sleep(DIAL_GRACE).await;
    }
    loop {
        let Some(link) = shared.snapshot().link(&peer).cloned() else {
            return;
        };
        if shared.has_link_session(&peer) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        if link.gateways.is_empty() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let addr = link.gateways[attempt % link.gateways.len()];
        attempt = attempt.wrapping_add(1);
        match dial(&shared, &peer, addr).await {
            Ok(conn) => {
                if !shared.register(&peer, ConnKind::Link, &conn) {
                    conn.close(CLOSE_DONE, b"too many connections");
                    tokio::time::sleep(backoff).await;
                    continue;
                }
                let began = Instant::now();
                match conn.open_bi().await {
                    Ok((send, recv)) => {
                        run_session(shared.clone(), conn, send, recv, peer.clone()).await
                    }
                    Err(e) => tracing::warn!(%addr, error = %e, "cannot open the link stream"),
                }
                // A session that ended at once (refused, peer not ready) backs off like a
                // failed dial; one that ran for a while reconnects straight away. Either
                // way the next attempt goes to the next gateway, so a dead one is skipped.
                if began.elapsed() < Duration::from_secs(2) {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                } else {
                    backoff = Duration::from_millis(200);
                }
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "link dial failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Why a link session could not be dialled.
#[derive(Debug, thiserror::Error)]
enum LinkDialError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Dial(#[from] DialError),
}

async fn dial(
    shared: &Shared,
    peer: &ClusterId,
    addr: std::net::SocketAddr,
) -> Result<quinn::Connection, LinkDialError> {
    let config = tls::client_config(
        shared.identity.clone(),
        shared.trust.clone(),
        PeerExpectation::Gateway(peer.clone()),
        ALPN_LINK,
    )?;
    Ok(crate::dial::dial(&shared.endpoint, config, addr, Duration::from_secs(3)).await?)
}

/// Serves a link connection a peer gateway dialled.
pub(crate) async fn accept_session(shared: Arc<Shared>, conn: quinn::Connection, peer: ClusterId) {
    match tokio::time::timeout(Duration::from_secs(5), conn.accept_bi()).await {
        Ok(Ok((send, recv))) => run_session(shared, conn, send, recv, peer).await,
        _ => conn.close(CLOSE_DONE, b"no link stream"),
    }
}

fn random_session() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u64::from_le_bytes(b)
}

/// Every live gateway of this cluster, so peers can spread over them and fail over.
fn cluster_gateways(
    shared: &Shared,
    snapshot: &ferry_federation::MeshSnapshot,
) -> Vec<std::net::SocketAddr> {
    let mut all = snapshot.gateways.clone();
    if !all.contains(&shared.advertise) {
        all.push(shared.advertise);
    }
    all.sort();
    all
}

/// The imports report of a session: everything the peer exports that passed the bounds.
fn imports_report(
    peer: &ClusterId,
    sync: &LinkSync,
    peer_gateways: &[std::net::SocketAddr],
    limited: &[LimitExceeded],
    conn: &quinn::Connection,
    peer_roots: &[String],
) -> GatewayEvent {
    let (peer_cert, peer_ca) = crate::tls::peer_fingerprints(conn).unwrap_or_default();
    GatewayEvent::Imports {
        peer: peer.clone(),
        services: sync.imports(),
        peer_gateways: peer_gateways.to_vec(),
        connected: true,
        limited: limited.to_vec(),
        session: crate::server::SessionInfo {
            rtt: conn.rtt(),
            peer_cert,
            peer_ca,
            peer_roots: peer_roots.to_vec(),
        },
    }
}

async fn emit(shared: &Shared, event: GatewayEvent) {
    let _ = shared.events.send(event).await;
}

async fn run_session(
    shared: Arc<Shared>,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: ClusterId,
) {
    let snapshot = shared.snapshot();
    let local = snapshot.cluster.clone();
    let mut sync = LinkSync::new(
        local,
        peer.clone(),
        random_session(),
        cluster_gateways(&shared, &snapshot),
        shared.link_config,
    )
    .with_roots(
        shared
            .trust
            .roots_der()
            .iter()
            .map(|root| crate::tls::sha256_hex(root))
            .collect(),
    );
    let start = Instant::now().into_std();
    sync.handle_connected(start);
    sync.set_local_exports(start, snapshot.local_exports());
    tracing::info!("link session up");
    metrics::gauge!("ferry_gateway_link_sessions", "peer" => peer.to_string()).increment(1.0);
    let mut rx = shared.snapshots.clone();
    rx.mark_unchanged();
    let mut decoder = FrameDecoder::<LinkMessage>::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut report = tokio::time::interval(REPORT_EVERY);
    let mut peer_gateways = Vec::new();
    let mut peer_roots = Vec::new();
    let mut removing = false;
    let mut withdrawn = false;
    let mut have_imports = false;
    let mut limited = Vec::new();
    let mut last_refusal_log: Option<Instant> = None;
    // An imports report waiting for MIN_REPORT_GAP since the previous one.
    let mut report_due = false;
    let mut next_report_at = Instant::now();
    loop {
        // Flush what the state machine wants to send, within the write deadline.
        while let Some(msg) = sync.poll_transmit() {
            match tokio::time::timeout(WRITE_DEADLINE, send.write_all(&encode_frame(&msg))).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::warn!(deadline = ?WRITE_DEADLINE, "peer stopped reading the link stream; closing the session");
                    metrics::counter!("ferry_link_write_timeouts_total", "peer" => peer.to_string()).increment(1);
                    conn.close(CLOSE_DONE, b"write deadline");
                    break;
                }
            }
        }
        if conn.close_reason().is_some() && !removing {
            break;
        }
        while let Some(event) = sync.poll_event() {
            match event {
                LinkEvent::PeerHello {
                    gateways,
                    session,
                    roots,
                    ..
                } => {
                    peer_gateways = gateways;
                    peer_roots = roots;
                    shared.note_peer_session(&peer, &conn, session);
                }
                LinkEvent::Imports { .. } => {
                    metrics::counter!("ferry_sync_updates_total", "peer" => peer.to_string())
                        .increment(1);
                    withdrawn = false;
                    have_imports = true;
                    report_due = true;
                }
                LinkEvent::Refused { limit, .. } => {
                    metrics::counter!("ferry_link_refused_total", "peer" => peer.to_string(), "limit" => limit.kind()).increment(1);
                    let now = Instant::now();
                    if last_refusal_log.is_none_or(|at| now >= at + REFUSAL_LOG_EVERY) {
                        last_refusal_log = Some(now);
                        tracing::warn!(limit = limit.kind(), detail = %limit, "refused input from the peer (further refusals for 10 s are counted, not logged)");
                    }
                }
                LinkEvent::LimitsChanged {
                    limited: now_limited,
                    ..
                } => {
                    limited = now_limited;
                    report_due |= have_imports && !withdrawn;
                }
                LinkEvent::ImportsWithdrawn { .. } => {
                    withdrawn = true;
                    report_due = false;
                    tracing::warn!("peer silent past its lease: imports withdrawn");
                    emit(&shared, GatewayEvent::Withdrawn { peer: peer.clone() }).await;
                }
                LinkEvent::PeerRemovedLink { .. } => {
                    tracing::warn!("peer removed the link");
                    emit(
                        &shared,
                        GatewayEvent::PeerRemovedLink { peer: peer.clone() },
                    )
                    .await;
                    conn.close(CLOSE_LINK_REMOVED, b"link removed by peer");
                }
            }
        }
        if report_due && !removing && Instant::now() >= next_report_at {
            report_due = false;
            next_report_at = Instant::now() + MIN_REPORT_GAP;
            tracing::debug!(services = sync.import_count(), "imports report");
            emit(
                &shared,
                imports_report(&peer, &sync, &peer_gateways, &limited, &conn, &peer_roots),
            )
            .await;
        }
        if removing {
            let _ = send.finish();
            let _ = tokio::time::timeout(Duration::from_millis(500), send.stopped()).await;
            conn.close(CLOSE_LINK_REMOVED, b"link removed");
            break;
        }
        let deadline = sync
            .poll_timeout()
            .map(Instant::from_std)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            read = recv.read(&mut buf) => match read {
                Ok(Some(n)) => {
                    decoder.push(&buf[..n]);
                    loop {
                        match decoder.next() {
                            Ok(Some(msg)) => {
                                if let Err(e) = sync.handle_message(Instant::now().into_std(), msg) {
                                    tracing::warn!(error = %e, "link protocol violation; closing");
                                    conn.close(CLOSE_DONE, b"protocol violation");
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                tracing::warn!(error = %e, "bad link frame; closing");
                                conn.close(CLOSE_DONE, b"bad frame");
                                break;
                            }
                        }
                    }
                }
                Ok(None) | Err(_) => break,
            },
            changed = rx.changed() => {
                if changed.is_err() {
                    break;
                }
                let snapshot = rx.borrow_and_update().clone();
                let now = Instant::now().into_std();
                if snapshot.link(&peer).is_none() {
                    sync.remove_link();
                    removing = true;
                } else {
                    sync.set_gateways(cluster_gateways(&shared, &snapshot));
                    sync.set_local_exports(now, snapshot.local_exports());
                }
            }
            _ = tokio::time::sleep_until(deadline) => sync.handle_timeout(Instant::now().into_std()),
            // A folded report whose gap is over: sent at the top of the loop.
            _ = tokio::time::sleep_until(next_report_at), if report_due => {}
            // The lease refresh.
            _ = report.tick() => {
                report_due |= have_imports && !withdrawn;
                metrics::gauge!("ferry_link_rtt_seconds", "peer" => peer.to_string())
                    .set(conn.rtt().as_secs_f64());
            }
        }
    }
    // A report folded behind the gap still goes out: the control plane must not keep the
    // older state for the rest of the lease.
    if report_due && !withdrawn && !removing {
        emit(
            &shared,
            imports_report(&peer, &sync, &peer_gateways, &limited, &conn, &peer_roots),
        )
        .await;
    }
    sync.handle_disconnected(Instant::now().into_std());
    metrics::gauge!("ferry_gateway_link_sessions", "peer" => peer.to_string()).decrement(1.0);
    tracing::info!(reason = ?conn.close_reason(), "link session down");
}
