//! The issuing side: answer one join connection by asking the control plane to redeem the
//! token (through the gateway's events) and replying with the outcome.

use std::sync::Arc;
use std::time::Duration;

use ferry_federation::{encode_frame, Identity, JoinMessage};
use tokio::sync::oneshot;

use super::{binding, read_message, ExchangeError, JOIN_TIMEOUT};
use crate::server::{GatewayEvent, RedeemRequest, Shared};

/// Answers one join connection on the issuing gateway.
pub(crate) async fn serve(shared: Arc<Shared>, conn: quinn::Connection, caller: Identity) {
    let answer = async {
        let Identity::Gateway { cluster } = &caller else {
            return Err(ExchangeError::NotAGateway);
        };
        let binding = binding(&conn)?;
        let (mut send, mut recv) = conn.accept_bi().await?;
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
        send.write_all(&encode_frame(&reply)).await?;
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
