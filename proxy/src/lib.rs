//! `ferry node`: the node proxy.
//!
//! Listens on `VIP:port` for every local and imported service in the snapshot, and on
//! every endpoint VIP of a headless service for each of the service's ports; decides
//! each connection with the pure `ferry_federation::plan` (healthy local endpoints
//! first, then remote clusters whose exported service is healthy; exactly the named
//! endpoint for an endpoint VIP) and forwards it:
//! directly over TCP to a local endpoint, or as one stream on a pooled QUIC connection
//! to the remote cluster's gateway. Refusals and dead ends reach the application as a
//! reset connection. Reads only the snapshot; never calls the control plane per request.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_federation::{plan, Hop, MeshSnapshot, Protocol, Target, TunnelHeader};
use ferry_gateway::relay::{relay_quic, relay_tcp, RelayEnd};
use ferry_gateway::tunnel::{TunnelClient, TunnelError};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const LOCAL_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How often listeners that could not be bound are tried again.
const RETRY_LISTEN_EVERY: Duration = Duration::from_secs(2);

/// `VIP:port`s the proxy should listen on but cannot, with the reason.
pub type ListenFailures = BTreeMap<SocketAddr, String>;

/// The node proxy: listeners reconciled against the snapshot.
pub struct NodeProxy {
    shared: Arc<Shared>,
    failures: watch::Sender<ListenFailures>,
}

struct Shared {
    snapshots: watch::Receiver<Arc<MeshSnapshot>>,
    tunnel: Arc<TunnelClient>,
    pick: AtomicU64,
    /// A proxied connection with no bytes either way for this long is closed.
    idle: Duration,
    /// Proxied connections open right now (drained on shutdown).
    active: AtomicUsize,
}

/// Counts one proxied connection for as long as it lives.
struct Active(Arc<Shared>);

impl Active {
    fn new(shared: &Arc<Shared>) -> Active {
        shared.active.fetch_add(1, Ordering::Relaxed);
        Active(shared.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl NodeProxy {
    pub fn new(
        snapshots: watch::Receiver<Arc<MeshSnapshot>>,
        tunnel: Arc<TunnelClient>,
    ) -> NodeProxy {
        NodeProxy {
            shared: Arc::new(Shared {
                snapshots,
                tunnel,
                pick: AtomicU64::new(0),
                active: AtomicUsize::new(0),
                idle: ferry_gateway::server::DEFAULT_RELAY_IDLE,
            }),
            failures: watch::channel(ListenFailures::new()).0,
        }
    }

    /// Sets how long a proxied connection may stay silent both ways before it is closed.
    pub fn with_idle_timeout(mut self, idle: Duration) -> NodeProxy {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.idle = idle;
        }
        self
    }

    /// The `VIP:port`s the proxy cannot listen on right now, updated after every
    /// reconciliation (the first one included, so a caller can report failures at start).
    pub fn listen_failures(&self) -> watch::Receiver<ListenFailures> {
        self.failures.subscribe()
    }

    /// Runs until `stop` resolves (or the snapshot channel closes): opens listeners for new
    /// `VIP:port`s, closes those that left the snapshot, retries the ones it could not bind.
    /// On `stop` it closes every listener, then waits for open connections to finish, at
    /// most `drain`.
    pub async fn run(self, stop: impl Future<Output = ()>, drain: Duration) {
        tokio::pin!(stop);
        let mut rx = self.shared.snapshots.clone();
        let mut listeners: HashMap<SocketAddr, JoinHandle<()>> = HashMap::new();
        let mut retry = tokio::time::interval(RETRY_LISTEN_EVERY);
        loop {
            let snapshot = rx.borrow_and_update().clone();
            self.reconcile(&snapshot, &mut listeners).await;
            tokio::select! {
                changed = rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                }
                _ = retry.tick(), if !self.failures.borrow().is_empty() => {}
                _ = &mut stop => break,
            }
        }
        for (_, task) in listeners.drain() {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + drain;
        while self.shared.active.load(Ordering::Relaxed) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    open = self.shared.active.load(Ordering::Relaxed),
                    ?drain,
                    "drain deadline reached; closing the remaining connections"
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reconcile(
        &self,
        snapshot: &MeshSnapshot,
        listeners: &mut HashMap<SocketAddr, JoinHandle<()>>,
    ) {
        let wanted = listen_addrs(snapshot);
        listeners.retain(|addr, task| {
            let keep = wanted.contains(addr) && !task.is_finished();
            if !keep {
                task.abort();
                tracing::info!(%addr, "listener closed");
            }
            keep
        });
        let mut failures = ListenFailures::new();
        for addr in wanted {
            if listeners.contains_key(&addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, "listening");
                    let shared = self.shared.clone();
                    listeners.insert(addr, tokio::spawn(accept_loop(shared, listener, addr)));
                }
                Err(e) => {
                    if !self.failures.borrow().contains_key(&addr) {
                        tracing::error!(%addr, error = %e, "cannot listen on the service VIP; retrying every 2 s");
                    }
                    failures.insert(addr, e.to_string());
                }
            }
        }
        self.failures.send_replace(failures);
    }
}

/// Every `VIP:port` to listen on: each service's VIP, and each endpoint VIP of a headless
/// service, on every TCP port of the service.
fn listen_addrs(snapshot: &MeshSnapshot) -> HashSet<SocketAddr> {
    snapshot
        .services
        .iter()
        .flat_map(|s| {
            let vips = std::iter::once(s.vip).chain(s.endpoints.iter().map(|e| e.vip));
            vips.flat_map(move |vip| {
                s.ports
                    .iter()
                    .filter(|p| p.protocol != Protocol::Udp)
                    .map(move |p| SocketAddr::new(vip, p.port))
            })
        })
        .collect()
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, addr: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                let shared = shared.clone();
                tokio::spawn(async move { handle(shared, client, addr).await });
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Counts connections closed for being idle.
fn relay_ended(end: RelayEnd) {
    if let RelayEnd::Idle = end {
        metrics::counter!("ferry_proxy_idle_closed_total").increment(1);
    }
}

/// Drops the client connection with a TCP reset, so the application sees a refusal.
fn reset(client: TcpStream) {
    let _ = client.set_zero_linger();
    drop(client);
}

async fn handle(shared: Arc<Shared>, mut client: TcpStream, addr: SocketAddr) {
    let _active = Active::new(&shared);
    let _ = client.set_nodelay(true);
    let snapshot = shared.snapshots.borrow().clone();
    let target = Target {
        vip: addr.ip(),
        port: addr.port(),
    };
    let pick = shared.pick.fetch_add(1, Ordering::Relaxed);
    let route = match plan(&snapshot, &target, pick) {
        Ok(p) => p,
        Err(e) => {
            metrics::counter!("ferry_proxy_connections_total", "result" => "no_route").increment(1);
            tracing::warn!(%addr, reason = %e, "no route");
            return reset(client);
        }
    };
    // The caller's bytes a remote attempt took before its status: replayed if another
    // cluster gets the call after a refusal that allows it.
    let mut early = Vec::new();
    for hop in route.hops {
        match hop {
            Hop::Local(endpoint) => {
                match tokio::time::timeout(LOCAL_CONNECT_TIMEOUT, TcpStream::connect(endpoint))
                    .await
                {
                    Ok(Ok(mut upstream)) => {
                        let _ = upstream.set_nodelay(true);
                        if !early.is_empty() && upstream.write_all(&early).await.is_err() {
                            return reset(client);
                        }
                        metrics::counter!("ferry_proxy_connections_total", "result" => "local")
                            .increment(1);
                        relay_ended(relay_tcp(&mut client, &mut upstream, shared.idle).await);
                        return;
                    }
                    _ => tracing::debug!(%endpoint, "local endpoint failed; trying the next"),
                }
            }
            Hop::Remote {
                cluster,
                port,
                gateways,
                endpoint,
            } => {
                let header = TunnelHeader {
                    service: route.service.clone(),
                    port,
                    cluster: Some(cluster.clone()),
                    hops: 0,
                    traceparent: None,
                    endpoint,
                };
                match shared
                    .tunnel
                    .open_pipelined(&cluster, &gateways, &header, &mut client, &mut early)
                    .await
                {
                    Ok((mut send, mut recv)) => {
                        metrics::counter!("ferry_proxy_connections_total", "result" => "remote")
                            .increment(1);
                        relay_ended(
                            relay_quic(&mut client, &mut send, &mut recv, shared.idle).await,
                        );
                        return;
                    }
                    Err(e) if e.try_next_cluster() => {
                        tracing::debug!(%cluster, error = %e, "remote cluster failed; trying the next");
                    }
                    Err(e) => {
                        let result = match e {
                            TunnelError::Refused { .. } => "refused",
                            _ => "interrupted",
                        };
                        metrics::counter!("ferry_proxy_connections_total", "result" => result)
                            .increment(1);
                        tracing::warn!(service = %route.service, error = %e, "call failed");
                        return reset(client);
                    }
                }
            }
        }
    }
    metrics::counter!("ferry_proxy_connections_total", "result" => "unreachable").increment(1);
    tracing::warn!(service = %route.service, "no endpoint answered");
    reset(client)
}
