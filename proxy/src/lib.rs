//! `ferry node`: the node proxy.
//!
//! Listens on `VIP:port` for every local and imported service in the snapshot, and on
//! every endpoint VIP of a headless service for each of the service's ports, and hands
//! each connection to its port's handler ([`tcp`]). Modules, one job each: this one the
//! listeners (reconciled against the snapshot) and draining; `tcp` one connection to one
//! hop, as the pure `ferry_federation::plan` and the service's policy
//! (`ferry_federation::traffic::decide`) allow; `balance` the per-hop statistics the
//! balancer reads. Reads only the snapshot; never calls the control plane per call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferry_federation::traffic::OutlierConfig;
use ferry_federation::{MeshSnapshot, Protocol, ServiceName};
use ferry_gateway::tunnel::TunnelClient;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument as _;

mod balance;
mod http;
mod metrics;
mod route;
mod tcp;

use balance::Balancer;

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
    /// Rotates each remote cluster's gateway list from call to call.
    pick: AtomicU64,
    /// Per-hop latency, load and failure records.
    balancer: Arc<Balancer>,
    /// Upstream HTTP connections and retry budgets.
    http: http::HttpState,
    /// Per-request metric handles.
    requests: metrics::RequestMetrics,
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
                balancer: Balancer::new(OutlierConfig::default(), u32::MAX),
                http: http::HttpState::default(),
                requests: metrics::RequestMetrics::new("outbound"),
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

    /// Sets how many calls may be open to one hop (endpoint or remote cluster) at once;
    /// past that a hop is skipped, and when every hop is full the caller gets a 503
    /// (`ferry-error: circuit_open`) or a reset.
    pub fn with_max_in_flight(mut self, max: u32) -> NodeProxy {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.balancer = Balancer::new(OutlierConfig::default(), max);
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
        let mut previous: Option<Arc<MeshSnapshot>> = None;
        loop {
            let snapshot = rx.borrow_and_update().clone();
            if let Some(previous) = &previous {
                self.shared.balancer.forgive_recovered(previous, &snapshot);
            }
            previous = Some(snapshot.clone());
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

/// The service and the protocol of the port behind `addr` (a service VIP or an endpoint
/// VIP).
fn port_of(snapshot: &MeshSnapshot, addr: SocketAddr) -> Option<(ServiceName, Protocol)> {
    let service = snapshot
        .by_vip(addr.ip())
        .or_else(|| snapshot.by_endpoint_vip(addr.ip()).map(|(s, _)| s))?;
    let port = service.ports.iter().find(|p| p.port == addr.port())?;
    Some((service.name.clone(), port.protocol))
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, addr: SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((client, peer)) => {
                let shared = shared.clone();
                let port = port_of(&shared.snapshots.borrow(), addr);
                // One span per proxied connection: the service it was made to, and by whom.
                // On HTTP ports only while request spans are made (spans exported or debug
                // logs on): entered at every poll of a connection that carries many
                // requests, it would cost each of them, and their log lines name the
                // service and the caller themselves.
                let http = matches!(port, Some((_, Protocol::Http | Protocol::Grpc)));
                let span = match &port {
                    _ if http && !ferry_gateway::trace::request_spans() => tracing::Span::none(),
                    Some((service, _)) => {
                        tracing::info_span!("proxy", %service, vip = %addr, client = %peer)
                    }
                    None => tracing::info_span!("proxy", vip = %addr, client = %peer),
                };
                let protocol = port.map(|(_, p)| p);
                tokio::spawn(
                    async move {
                        match protocol {
                            Some(Protocol::Http) => {
                                http::serve(shared, client, addr, peer, false).await
                            }
                            Some(Protocol::Grpc) => {
                                http::serve(shared, client, addr, peer, true).await
                            }
                            _ => tcp::handle(shared, client, addr).await,
                        }
                    }
                    .instrument(span),
                );
            }
            Err(e) => {
                tracing::warn!(%addr, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
