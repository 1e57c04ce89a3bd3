//! Upstream HTTP connections: to a local endpoint over TCP, or to a remote cluster as a
//! tunnel stream through its gateway (admitted by the same `admit` as any stream). Pooled
//! per hop and HTTP version and used for one request at a time, so concurrent requests
//! ride separate QUIC streams and never wait behind each other.

use foldhash::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use ferry_federation::{Carries, ClusterId, Hop, Label, PortName, Refusal, ServiceName};
use ferry_gateway::tunnel::{TunnelClient, TunnelError};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use super::forward::{SendFailed, Upstream};
use super::Body;
use crate::balance::Attempt;
use crate::route::{connect_local, tunnel_header};
use ferry_gateway::http::handshake;
pub(crate) use ferry_gateway::http::{Proto, Sender};
use http_body_util::BodyExt as _;

/// Bounds of the wait for a gateway's status on a new tunnel stream.
const STATUS_WAIT_MIN: Duration = Duration::from_millis(250);
const STATUS_WAIT_MAX: Duration = Duration::from_secs(2);
/// The wait when no round trip to the cluster has been measured yet (a first dial).
const STATUS_WAIT_UNMEASURED: Duration = Duration::from_secs(2);
/// Idle connections kept per hop and version.
const MAX_IDLE_PER_HOP: usize = 64;

/// What an idle connection can serve: a local endpoint's connection any request to that
/// address, a tunnel stream only the service, port and endpoint it was admitted for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum PoolKey {
    Local(std::net::SocketAddr, Proto),
    Remote {
        cluster: ClusterId,
        service: ServiceName,
        port: PortName,
        endpoint: Option<Label>,
        proto: Proto,
    },
}

impl PoolKey {
    fn of(service: &ServiceName, hop: &Hop, proto: Proto) -> PoolKey {
        match hop {
            Hop::Local(addr) => PoolKey::Local(*addr, proto),
            Hop::Remote {
                cluster,
                port,
                endpoint,
                ..
            } => PoolKey::Remote {
                cluster: cluster.clone(),
                service: service.clone(),
                port: port.clone(),
                endpoint: endpoint.clone(),
                proto,
            },
        }
    }
}

/// Idle upstream connections.
#[derive(Default)]
pub(crate) struct Pool {
    idle: Mutex<HashMap<PoolKey, Vec<Sender>>>,
}

impl Pool {
    /// An idle, open connection to `hop` for `service`, if there is one.
    pub(crate) fn take(&self, service: &ServiceName, hop: &Hop, proto: Proto) -> Option<Sender> {
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.get_mut(&PoolKey::of(service, hop, proto))?;
        while let Some(sender) = list.pop() {
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, key: PoolKey, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let list = idle.entry(key).or_default();
        list.retain(|s| !s.is_closed());
        if list.len() < MAX_IDLE_PER_HOP {
            list.push(sender);
        }
    }
}

/// Why no connection could be made; nothing of the request has left.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectError {
    #[error("connect: {0}")]
    Tcp(#[from] std::io::Error),
    #[error("connect: timed out")]
    Timeout,
    #[error(transparent)]
    Tunnel(#[from] TunnelError),
    #[error("handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

/// The proxy's upstream: its pool of idle connections and its dialer.
pub(crate) struct Live<'a> {
    pub(crate) pool: &'a Arc<Pool>,
    pub(crate) tunnel: &'a TunnelClient,
}

impl Upstream for Live<'_> {
    type Conn = Sender;
    type Body = Incoming;

    fn take(&self, service: &ServiceName, hop: &Hop, proto: Proto) -> Option<Sender> {
        self.pool.take(service, hop, proto)
    }

    /// Opens a new connection to `hop` for `service`; `fallback` says another hop could take
    /// the call instead (then a gateway slow to admit is given up early). A remote hop's
    /// connection is a tunnel stream the gateway serves request by request, or, for an
    /// `upgrade`, a byte stream (the upgraded connection is relayed under admission and the
    /// idle timeout like any TCP stream).
    async fn connect(
        &self,
        hop: &Hop,
        service: &ServiceName,
        proto: Proto,
        fallback: bool,
        upgrade: bool,
    ) -> Result<Sender, ConnectError> {
        let tunnel = self.tunnel;
        // Boxed: a new connection (a QUIC dial at worst) is rare next to pooled ones, and
        // its large future would otherwise make every request's future large to move.
        Box::pin(async move {
            match hop {
                Hop::Local(addr) => Ok(handshake(connect_local(*addr).await?, proto).await?),
                Hop::Remote {
                    cluster,
                    port,
                    gateways,
                    endpoint,
                } => {
                    let carries = match upgrade {
                        true => Carries::Bytes,
                        false => Carries::Http,
                    };
                    // Nothing of the request leaves before the gateway's status, so a gateway that
                    // does not answer in a few round trips is given up for the next hop: a dead
                    // one would otherwise hold the call until its connection times out.
                    let open = |carries| async move {
                        let header = tunnel_header(service, cluster, port, endpoint, carries);
                        let open = tunnel.open(cluster, gateways, &header);
                        match fallback {
                            false => Ok(open.await?),
                            true => {
                                let wait =
                                    tunnel.rtt(cluster).map_or(STATUS_WAIT_UNMEASURED, |rtt| {
                                        (rtt * 3 + Duration::from_millis(200))
                                            .clamp(STATUS_WAIT_MIN, STATUS_WAIT_MAX)
                                    });
                                Ok(tokio::time::timeout(wait, open)
                                    .await
                                    .map_err(|_| ConnectError::Timeout)??)
                            }
                        }
                    };
                    let (send, recv) = match open(carries).await {
                        // A gateway older than the stream kind refuses its header: the requests
                        // then go as bytes, relayed as before.
                        Err(ConnectError::Tunnel(TunnelError::Refused {
                            refusal: Refusal::BadHeader,
                            ..
                        })) if carries == Carries::Http => open(Carries::Bytes).await?,
                        opened => opened?,
                    };
                    Ok(handshake(tokio::io::join(recv, send), proto).await?)
                }
            }
        })
        .await
    }

    async fn ready(&self, conn: &mut Sender) -> Result<(), ConnectError> {
        Ok(conn.ready().await?)
    }

    async fn send(
        &self,
        conn: &mut Sender,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, SendFailed> {
        conn.send(req)
            .await
            .map_err(|(e, unsent)| (Box::new(e) as _, unsent))
    }

    fn answer(
        &self,
        response: http::Response<Incoming>,
        service: &ServiceName,
        hop: &Hop,
        conn: Sender,
        attempt: Attempt,
    ) -> http::Response<Body> {
        let proto = conn.proto();
        let pool = self.pool.clone();
        response.map(|b| PooledBody::new(b, pool, (service, hop, proto), conn, attempt).boxed())
    }
}

/// A response body on its way to the application: once read to the end, its connection
/// goes back to the pool and the call stops counting as in flight.
pub(crate) struct PooledBody {
    inner: Incoming,
    back: Option<(Arc<Pool>, PoolKey, Sender)>,
    attempt: Option<Attempt>,
}

impl PooledBody {
    pub(crate) fn new(
        inner: Incoming,
        pool: Arc<Pool>,
        (service, hop, proto): (&ServiceName, &Hop, Proto),
        sender: Sender,
        attempt: Attempt,
    ) -> PooledBody {
        let body = PooledBody {
            inner,
            back: Some((pool, PoolKey::of(service, hop, proto), sender)),
            attempt: Some(attempt),
        };
        if body.inner.is_end_stream() {
            let mut body = body;
            body.release();
            return body;
        }
        body
    }

    fn release(&mut self) {
        if let Some((pool, key, sender)) = self.back.take() {
            pool.put(key, sender);
        }
        self.attempt.take();
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => this.release(),
            // A failed body leaves its connection in an unknown state: not reused.
            Poll::Ready(Some(Err(_))) => {
                this.back.take();
                this.attempt.take();
            }
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
