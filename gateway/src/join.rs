//! The join handshake: `ferry link join <token>` on the joining cluster, answered by
//! the issuing cluster's gateway.
//!
//! The joiner connects over QUIC with its own gateway identity, pins the issuer (its
//! gateway certificate must chain to our shared root and name the token's issuer),
//! and proves it holds the token's secret with an HMAC bound to this TLS session's
//! exported keying material, so a captured proof is useless on another connection.
//! The issuer's control plane checks and spends the token in one transaction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_federation::{
    encode_frame, join_proof, ClusterId, FrameDecoder, Identity, JoinMessage, LinkToken,
};
use tokio::sync::oneshot;

use crate::server::{GatewayEvent, RedeemRequest, Shared, CLOSE_DONE};
use crate::tls::{self, IdentityStore, PeerExpectation, TrustStore, ALPN_JOIN};

const BINDING_LABEL: &[u8] = b"EXPORTER-ferry-join";
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What a successful join learned about the issuer.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub issuer: ClusterId,
    pub gateways: Vec<SocketAddr>,
}

/// Why a join failed. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot reach any gateway of `{issuer}` named in the token ({detail}); check that it runs and that this host can reach it over UDP")]
    Unreachable { issuer: ClusterId, detail: String },
    #[error("`{issuer}` refused the link: {reason}")]
    Refused { issuer: ClusterId, reason: String },
    #[error("join with `{issuer}` failed: {detail}")]
    Protocol { issuer: ClusterId, detail: String },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] tls::TlsError),
}

fn binding(conn: &quinn::Connection) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; 32];
    conn.export_keying_material(&mut out, BINDING_LABEL, b"")
        .map_err(|_| "cannot export TLS keying material".to_string())?;
    Ok(out)
}

async fn read_message(recv: &mut quinn::RecvStream) -> Result<JoinMessage, String> {
    let mut decoder = FrameDecoder::<JoinMessage>::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(msg) = decoder.next().map_err(|e| e.to_string())? {
            return Ok(msg);
        }
        match recv.read(&mut buf).await {
            Ok(Some(n)) => decoder.push(&buf[..n]),
            Ok(None) => return Err("the stream ended before a message arrived".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How long `link join` waits for any of the token's gateways to answer.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(5);

/// Joins the cluster that issued `token`, as `joiner`, announcing `own_gateways`.
pub async fn join(
    identity: Arc<IdentityStore>,
    trust: Arc<TrustStore>,
    token: &LinkToken,
    joiner: &ClusterId,
    own_gateways: Vec<SocketAddr>,
) -> Result<JoinOutcome, JoinError> {
    let issuer = token.issuer.clone();
    let endpoint =
        quinn::Endpoint::client("0.0.0.0:0".parse().expect("valid addr")).map_err(|e| {
            JoinError::Unreachable {
                issuer: issuer.clone(),
                detail: e.to_string(),
            }
        })?;
    let config = tls::client_config(
        identity,
        trust,
        PeerExpectation::Gateway(issuer.clone()),
        ALPN_JOIN,
    )?;
    // Every gateway of the token at once, under one deadline: the first handshake that
    // completes wins, so one dead address costs nothing.
    let mut attempts = tokio::task::JoinSet::new();
    for &addr in &token.gateways {
        let endpoint = endpoint.clone();
        let config = config.clone();
        attempts.spawn(async move {
            let conn = async {
                endpoint
                    .connect_with(config, addr, tls::SERVER_NAME)
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
            };
            (addr, conn.await)
        });
    }
    let mut errors = Vec::new();
    let mut conn = None;
    let deadline = tokio::time::sleep(JOIN_DEADLINE);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            next = attempts.join_next() => match next {
                None => break,
                Some(Ok((_, Ok(c)))) => {
                    conn = Some(c);
                    break;
                }
                Some(Ok((addr, Err(e)))) => errors.push(format!("{addr}: {e}")),
                Some(Err(e)) => errors.push(e.to_string()),
            },
            _ = &mut deadline => {
                errors.push(format!("no gateway answered within {} s", JOIN_DEADLINE.as_secs()));
                break;
            }
        }
    }
    attempts.abort_all();
    let Some(conn) = conn else {
        return Err(JoinError::Unreachable {
            issuer,
            detail: errors.join("; "),
        });
    };
    let protocol = |detail: String| JoinError::Protocol {
        issuer: issuer.clone(),
        detail,
    };
    let exchange = async {
        let binding = binding(&conn).map_err(protocol)?;
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| protocol(e.to_string()))?;
        let request = JoinMessage::Request {
            token_id: token.id,
            joiner: joiner.clone(),
            proof: join_proof(&token.secret, &binding, joiner),
            gateways: own_gateways,
        };
        send.write_all(&encode_frame(&request))
            .await
            .map_err(|e| protocol(e.to_string()))?;
        let _ = send.finish();
        match read_message(&mut recv).await.map_err(protocol)? {
            JoinMessage::Accepted {
                issuer: named,
                gateways,
            } if named == issuer => Ok(JoinOutcome {
                issuer: named,
                gateways,
            }),
            JoinMessage::Accepted { issuer: named, .. } => Err(protocol(format!(
                "the gateway answered as `{named}`, not the token's issuer"
            ))),
            JoinMessage::Refused { reason } => Err(JoinError::Refused {
                issuer: issuer.clone(),
                reason,
            }),
            JoinMessage::Request { .. } => {
                Err(protocol("unexpected request from the issuer".into()))
            }
        }
    };
    let result = match tokio::time::timeout(JOIN_TIMEOUT, exchange).await {
        Ok(r) => r,
        Err(_) => Err(protocol("no answer within 5 s".into())),
    };
    conn.close(CLOSE_DONE, b"join done");
    endpoint.wait_idle().await;
    result
}

/// Answers one join connection on the issuing gateway.
pub(crate) async fn serve(shared: Arc<Shared>, conn: quinn::Connection, caller: Identity) {
    let answer = async {
        let Identity::Gateway { cluster } = &caller else {
            return Err("only a cluster's gateway identity may join".to_string());
        };
        let binding = binding(&conn)?;
        let (mut send, mut recv) = conn.accept_bi().await.map_err(|e| e.to_string())?;
        let reply = match read_message(&mut recv).await? {
            JoinMessage::Request {
                token_id,
                joiner,
                proof,
                gateways,
            } => {
                if &joiner != cluster {
                    JoinMessage::Refused {
                        reason: format!(
                            "the join request names cluster `{joiner}` but its certificate is `{cluster}`'s"
                        ),
                    }
                } else {
                    let (tx, rx) = oneshot::channel();
                    let request = RedeemRequest {
                        token_id,
                        joiner,
                        proof,
                        channel_binding: binding,
                        gateways,
                    };
                    let _ = shared
                        .events
                        .send(GatewayEvent::Redeem { request, reply: tx })
                        .await;
                    match rx.await {
                        Ok(Ok(accepted)) => JoinMessage::Accepted {
                            issuer: accepted.issuer,
                            gateways: accepted.gateways,
                        },
                        Ok(Err(reason)) => JoinMessage::Refused { reason },
                        Err(_) => JoinMessage::Refused {
                            reason: "the control plane did not answer; try again".into(),
                        },
                    }
                }
            }
            _ => JoinMessage::Refused {
                reason: "expected a join request".into(),
            },
        };
        send.write_all(&encode_frame(&reply))
            .await
            .map_err(|e| e.to_string())?;
        let _ = send.finish();
        Ok(())
    };
    match tokio::time::timeout(JOIN_TIMEOUT, answer).await {
        Ok(Ok(())) => {
            let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "join failed"),
        Err(_) => tracing::warn!("join timed out"),
    }
}
