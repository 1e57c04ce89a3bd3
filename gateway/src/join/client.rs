//! The joining side: dial the token's gateways at once, prove the token, learn the issuer's
//! gateways. Knows nothing of the gateway's server side.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ferry_federation::{encode_frame, join_proof, ClusterId, JoinMessage, LinkToken};

use super::{binding, read_message, ExchangeError, JOIN_TIMEOUT};
use crate::dial::{dial, DialError, CLOSE_DONE};
use crate::tls::{self, IdentityStore, PeerExpectation, TrustStore, ALPN_JOIN};

/// How long `link join` waits for any of the token's gateways to answer.
pub const JOIN_DEADLINE: Duration = Duration::from_secs(5);

/// What a successful join learned about the issuer.
#[derive(Debug, Clone)]
pub struct JoinOutcome {
    pub issuer: ClusterId,
    pub gateways: Vec<SocketAddr>,
}

/// The token's gateways that could not be reached, and why.
#[derive(Debug, Default)]
pub struct Attempts(pub Vec<(SocketAddr, DialError)>);

impl fmt::Display for Attempts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return write!(
                f,
                "no gateway answered within {} s",
                JOIN_DEADLINE.as_secs()
            );
        }
        for (i, (addr, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{addr}: {e}")?;
        }
        Ok(())
    }
}

/// Why a join failed. Every message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cannot reach any gateway of `{issuer}` named in the token ({attempts}); check that it runs and that this host can reach it over UDP")]
    Unreachable {
        issuer: ClusterId,
        attempts: Attempts,
    },
    #[error("cannot open a local QUIC endpoint for the join: {0}")]
    Bind(#[source] std::io::Error),
    #[error("`{issuer}` refused the link: {reason}")]
    Refused { issuer: ClusterId, reason: String },
    #[error("join with `{issuer}` failed: {cause}")]
    Protocol {
        issuer: ClusterId,
        #[source]
        cause: ExchangeError,
    },
    #[error("TLS setup failed: {0}")]
    Tls(#[from] tls::TlsError),
}

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
        tls::endpoint("0.0.0.0:0".parse().expect("valid addr"), None).map_err(JoinError::Bind)?;
    let config = tls::client_config(
        identity,
        trust,
        PeerExpectation::Gateway(issuer.clone()),
        ALPN_JOIN,
    )?;
    let conn = first_answer(&endpoint, &config, &token.gateways)
        .await
        .map_err(|attempts| JoinError::Unreachable {
            issuer: issuer.clone(),
            attempts,
        })?;
    let exchange = async {
        let binding = binding(&conn)?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let request = JoinMessage::Request {
            token_id: token.id,
            joiner: joiner.clone(),
            proof: join_proof(&token.secret, &binding, joiner),
            gateways: own_gateways,
        };
        send.write_all(&encode_frame(&request)).await?;
        let _ = send.finish();
        read_message(&mut recv).await
    };
    let result = match tokio::time::timeout(JOIN_TIMEOUT, exchange).await {
        Ok(Ok(JoinMessage::Accepted {
            issuer: named,
            gateways,
        })) if named == issuer => Ok(JoinOutcome {
            issuer: named,
            gateways,
        }),
        Ok(Ok(JoinMessage::Accepted { issuer: named, .. })) => {
            Err(ExchangeError::WrongIssuer(named))
        }
        Ok(Ok(JoinMessage::Refused { reason })) => {
            finish(&endpoint, &conn).await;
            return Err(JoinError::Refused { issuer, reason });
        }
        Ok(Ok(JoinMessage::Request { .. })) => Err(ExchangeError::UnexpectedRequest),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ExchangeError::Timeout),
    };
    finish(&endpoint, &conn).await;
    result.map_err(|cause| JoinError::Protocol { issuer, cause })
}

/// Closes the join connection and every handshake still pending toward the token's other
/// gateways (a dead address would otherwise keep the endpoint busy until its timeout), then
/// lets the close frames leave.
async fn finish(endpoint: &quinn::Endpoint, conn: &quinn::Connection) {
    conn.close(CLOSE_DONE, b"join done");
    endpoint.close(CLOSE_DONE, b"join done");
    let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
}

/// Dials every address at once, under one deadline: the first handshake that completes
/// wins, so one dead address costs nothing.
async fn first_answer(
    endpoint: &quinn::Endpoint,
    config: &quinn::ClientConfig,
    addrs: &[SocketAddr],
) -> Result<quinn::Connection, Attempts> {
    let mut attempts = tokio::task::JoinSet::new();
    for &addr in addrs {
        let (endpoint, config) = (endpoint.clone(), config.clone());
        attempts.spawn(async move { (addr, dial(&endpoint, config, addr, JOIN_DEADLINE).await) });
    }
    let mut failed = Attempts::default();
    let deadline = tokio::time::sleep(JOIN_DEADLINE);
    tokio::pin!(deadline);
    let result = loop {
        tokio::select! {
            next = attempts.join_next() => match next {
                None => break Err(failed),
                Some(Ok((_, Ok(conn)))) => break Ok(conn),
                Some(Ok((addr, Err(e)))) => failed.0.push((addr, e)),
                Some(Err(_)) => {}
            },
            _ = &mut deadline => break Err(failed),
        }
    };
    attempts.abort_all();
    result
}
