//! `ferry control`: the cluster's control plane.
//!
//! Owns the registry of local services, exports, links and VIPs (durable, in
//! [`store`]), the cluster CA that issues short-lived certificates to gateways and node
//! proxies, and the live state reported by gateways (imports, link liveness). Every
//! change is folded into one immutable [`MeshSnapshot`] published on a watch channel;
//! roles receive it over the `Watch` RPC and never call back on the request path.

pub mod api;
mod check;
pub mod domain;
mod health;
pub mod policies;
pub mod scope;
pub mod sessions;
pub mod store;
mod vips;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use ferry_federation::snapshot::{build_snapshot_resolved, linked_peers, resolved_endpoint_keys};
use ferry_federation::{
    resolve, ClusterId, ExportedService, ImportStore, LimitExceeded, LinkRecord, LocalService,
    MeshSnapshot, ServiceName, SnapshotInputs, TrustDomain,
};
use ferry_gateway::pki::Ca;
use ferry_gateway::tls::TrustStore;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use scope::Scope;
use store::{Store, StoreError};

/// Default lease for imports reported by a gateway and for gateway registrations.
pub const REPORT_LEASE: Duration = Duration::from_secs(5);

/// Loaded trust material of the cluster: its CA and the mesh bundle.
pub struct ClusterTrust {
    pub ca: Ca,
    pub bundle_pem: String,
    pub trust: Arc<TrustStore>,
    pub fingerprint: [u8; 32],
}

impl ClusterTrust {
    /// Loads `ca.crt`, `ca.key` and `bundle.crt` from `ferry trust issue`'s output directory.
    pub fn load(cfg: &Config) -> anyhow::Result<ClusterTrust> {
        let dir = &cfg.trust_dir;
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).with_context(|| {
                format!(
                    "cannot read {}; run `ferry trust issue --root <root-dir> --cluster {} --out {}` first",
                    dir.join(name).display(),
                    cfg.cluster,
                    dir.display()
                )
            })
        };
        let ca = Ca::from_pem(&read("ca.crt")?, &read("ca.key")?)
            .with_context(|| format!("invalid cluster CA in {}", dir.display()))?;
        match ca.cluster() {
            Some(c) if c == &cfg.cluster => {}
            Some(c) => anyhow::bail!(
                "the CA in {} is cluster `{c}`'s, but this config is for cluster `{}`; point trust.dir at {}'s CA",
                dir.display(),
                cfg.cluster,
                cfg.cluster
            ),
            None => anyhow::bail!(
                "{} holds a root CA; a cluster runs on its own CA from `ferry trust issue`",
                dir.display()
            ),
        }
        let bundle_pem = read("bundle.crt")?;
        let trust =
            TrustStore::from_pem(ca.trust_domain().clone(), &bundle_pem).with_context(|| {
                format!("invalid trust bundle {}", dir.join("bundle.crt").display())
            })?;
        let fingerprint = ferry_federation::bundle_fingerprint(&trust.roots_der());
        Ok(ClusterTrust {
            ca,
            bundle_pem,
            trust: Arc::new(trust),
            fingerprint,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        self.ca.trust_domain()
    }

    /// SHA-256 (hex) of each root of the bundle: what link hellos carry.
    pub fn root_fingerprints(&self) -> Vec<String> {
        let roots = self.trust.roots_der();
        roots
            .iter()
            .map(|r| ferry_gateway::tls::sha256_hex(r))
            .collect()
    }
}

/// State that lives only in memory: reported by gateways and health checks.
struct Live {
    imports: ImportStore,
    connected: BTreeMap<ClusterId, (bool, Instant)>,
    /// The bounds each peer is over, as its link session last reported.
    limited: BTreeMap<ClusterId, Vec<LimitExceeded>>,
    gateways: BTreeMap<SocketAddr, Instant>,
    health: BTreeMap<ServiceName, Vec<bool>>,
    /// Per node proxy: the VIP:ports it cannot listen on, under a lease.
    listen_failures: BTreeMap<String, (Vec<(SocketAddr, String)>, Instant)>,
}

/// The control plane: store, CA and live state behind one lock-light handle.
pub struct ControlPlane {
    pub cfg: Config,
    pub trust: ClusterTrust,
    store: Store,
    live: Mutex<Live>,
    /// Held for a whole republish, so snapshots are built and published one at a time.
    publishing: Mutex<()>,
    /// Set once the coalescing publisher runs (`spawn_background`); until then reports
    /// republish in place.
    coalescing: AtomicBool,
    /// Wakes the coalescing publisher: live state changed.
    publish_wanted: Notify,
    unallocated: Mutex<Vec<String>>,
    snapshot_tx: watch::Sender<Arc<MeshSnapshot>>,
    /// Wakes the health checker when the set of services changes.
    pub services_changed: Notify,
    /// Certificates issued to roles and the snapshot versions they run (for `ferry check`).
    roles: Mutex<check::RoleReports>,
    /// When the current snapshot was published (Unix seconds).
    published_at: std::sync::atomic::AtomicU64,
    /// Each peer's link session as the gateways last reported it.
    sessions: Mutex<sessions::Sessions>,
}

/// The shortest time between two republishes that reports caused.
const MIN_PUBLISH_GAP: Duration = Duration::from_millis(100);
/// A folded republish waits this many times as long as the previous one took: every
/// published snapshot is also parsed by each role and rebuilt into DNS zones and listeners,
/// which together cost a few times the republish itself.
const PUBLISH_GAP_FACTOR: u32 = 4;

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl ControlPlane {
    /// Opens the store, loads the CA, applies the services declared in the config.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<ControlPlane>> {
        let trust = ClusterTrust::load(&cfg)?;
        for declared in &cfg.services {
            domain::not_an_admin_listener(&cfg, &declared.spec)
                .map_err(|e| anyhow::anyhow!("[[service]] {}: {e}", declared.spec.name))?;
        }
        let store = Store::open(&cfg.data_dir)?;
        apply_declared(&cfg, &store)?;
        policies::apply_declared_policies(&cfg, &store)?;
        let empty = MeshSnapshot {
            version: 0,
            cluster: cfg.cluster.clone(),
            trust_domain: trust.trust_domain().clone(),
            services: Vec::new(),
            links: Vec::new(),
            gateways: Vec::new(),
            policies: Vec::new(),
        };
        let (snapshot_tx, _) = watch::channel(Arc::new(empty));
        let cp = Arc::new(ControlPlane {
            cfg,
            trust,
            store,
            live: Mutex::new(Live {
                imports: ImportStore::new(),
                connected: BTreeMap::new(),
                limited: BTreeMap::new(),
                gateways: BTreeMap::new(),
                health: BTreeMap::new(),
                listen_failures: BTreeMap::new(),
            }),
            publishing: Mutex::new(()),
            coalescing: AtomicBool::new(false),
            publish_wanted: Notify::new(),
            unallocated: Mutex::new(Vec::new()),
            snapshot_tx,
            services_changed: Notify::new(),
            roles: Mutex::new(check::RoleReports::default()),
            published_at: std::sync::atomic::AtomicU64::new(0),
            sessions: Mutex::new(sessions::Sessions::default()),
        });
        cp.republish()?;
        Ok(cp)
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<MeshSnapshot>> {
        self.snapshot_tx.subscribe()
    }

    pub fn snapshot(&self) -> Arc<MeshSnapshot> {
        self.snapshot_tx.borrow().clone()
    }

    /// Rebuilds the snapshot from the store and live state; publishes it if it changed.
    ///
    /// Republishes run one at a time (so snapshots never go backwards); the live-state lock
    /// that RPC handlers take is held only to copy that state, never across store I/O. Every
    /// VIP change of one republish is one store transaction.
    pub fn republish(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.publishing.lock().expect("publish lock");
        let services = self.store.services()?;
        let links = self.store.links()?;
        let policies = self.store.policies()?;
        let (imports, health, connected, limited, gateways) = {
            let live = self.live.lock().expect("control state lock");
            (
                live.imports.current(),
                live.health.clone(),
                live.connected.clone(),
                live.limited.clone(),
                live.gateways.keys().copied().collect::<Vec<SocketAddr>>(),
            )
        };
        let local: Vec<LocalService> = services
            .values()
            .map(|doc| {
                let health = health
                    .get(&doc.spec.name)
                    .filter(|h| h.len() == doc.spec.endpoints.len())
                    .cloned()
                    .unwrap_or_else(|| vec![false; doc.spec.endpoints.len()]);
                LocalService {
                    spec: doc.spec.clone(),
                    exported: doc.exported,
                    exported_at_ms: doc.exported_at_ms,
                    health,
                }
            })
            .collect();
        let link_records: Vec<LinkRecord> = links
            .iter()
            .map(|l| LinkRecord {
                peer: l.peer.clone(),
                gateways: l.gateways.clone(),
                connected: connected.get(&l.peer).map(|c| c.0).unwrap_or(false),
                created_at_unix: l.created_at_unix,
                limited: limited.get(&l.peer).cloned().unwrap_or_default(),
            })
            .collect();
        // Every local and imported service, and every endpoint of a headless one, gets a
        // stable VIP before it is published.
        let linked = linked_peers(&self.cfg.cluster, &link_records);
        let resolved = resolve(&local, &imports, &linked);
        let mut wanted: BTreeSet<String> = resolved
            .keys()
            .map(|name| vips::service_key(name))
            .collect();
        wanted.extend(
            resolved_endpoint_keys(&self.cfg.cluster, &resolved)
                .iter()
                .map(vips::endpoint_key),
        );
        let now = unix_now();
        let quarantine = self.cfg.vip_quarantine.as_secs();
        let range = self.cfg.vip_range;
        let plan = self
            .store
            .sync_vips(|table| vips::plan(table, &wanted, now, quarantine, range))?;
        self.note_unallocated(plan.exhausted);
        let (vips, endpoint_vips) = vips::split(&plan.assigned);
        let inputs = SnapshotInputs {
            cluster: &self.cfg.cluster,
            trust_domain: self.trust.trust_domain(),
            local: &local,
            imports: &imports,
            links: &link_records,
            gateways: &gateways,
            vips: &vips,
            endpoint_vips: &endpoint_vips,
        };
        let current = self.snapshot_tx.borrow().clone();
        let mut next = build_snapshot_resolved(current.version, &inputs, &resolved);
        // Sorted by service (the store's order), as `MeshSnapshot::policy` expects.
        next.policies = policies.into_values().map(|d| d.policy).collect();
        if *current == next {
            return Ok(());
        }
        next.version = current.version + 1;
        report_conflicts(&current, &next);
        tracing::debug!(
            version = next.version,
            services = next.services.len(),
            "snapshot published"
        );
        record_link_metrics(&current, &next);
        self.published_at.store(unix_now(), Ordering::Relaxed);
        self.snapshot_tx.send_replace(Arc::new(next));
        Ok(())
    }

    /// Names that got no VIP because the range is full: logged when the set changes, shown
    /// by `ferry status`.
    fn note_unallocated(&self, names: Vec<String>) {
        let mut current = self.unallocated.lock().expect("unallocated lock");
        if *current != names {
            if let Some(first) = names.first() {
                tracing::warn!(
                    count = names.len(), first = %first, range = %self.cfg.vip_range,
                    "VIP range exhausted: these names have no VIP and are left out of DNS and routing; widen control.vip_range"
                );
            } else if !current.is_empty() {
                tracing::info!("every name has a VIP again");
            }
            *current = names;
        }
    }

    /// Names (services, or `service/cluster/hostname` endpoints) without a VIP.
    pub fn unallocated(&self) -> Vec<String> {
        self.unallocated.lock().expect("unallocated lock").clone()
    }

    /// Records the health of a local service's endpoints; republishes on change.
    pub fn set_health(&self, name: &ServiceName, health: Vec<bool>) -> Result<(), StoreError> {
        let changed = {
            let mut live = self.live.lock().expect("control state lock");
            live.health.insert(name.clone(), health.clone()) != Some(health)
        };
        if changed {
            self.live_changed()?;
        }
        Ok(())
    }

    /// A gateway reports the current imports from `peer` (or that they were withdrawn), and
    /// the bounds the peer is over.
    pub fn report_imports(
        &self,
        peer: ClusterId,
        services: Option<Vec<ExportedService>>,
        connected: bool,
        limited: Vec<LimitExceeded>,
        lease: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        // A lease refresh that changes nothing (the common case: every gateway re-reports
        // each second) does no republish: the work is proportional to what changed.
        let changed = {
            let mut live = self.live.lock().expect("control state lock");
            let was_connected = live
                .connected
                .insert(peer.clone(), (connected, now + lease))
                .map(|(c, _)| c);
            let mut changed = was_connected != Some(connected);
            match services {
                Some(list) => {
                    if live.limited.get(&peer) != Some(&limited) {
                        live.limited.insert(peer.clone(), limited);
                        changed = true;
                    }
                    changed |= live.imports.handle_report(now, peer, list, lease);
                }
                None => changed |= live.imports.withdraw(&peer),
            }
            changed
        };
        tracing::debug!(%changed, "imports report");
        if changed {
            self.live_changed()?;
        }
        Ok(())
    }

    /// A node proxy reports the VIP:ports it cannot listen on (empty: all fine).
    pub fn report_node_status(
        &self,
        node: String,
        failures: Vec<(SocketAddr, String)>,
        lease: Duration,
    ) {
        let mut live = self.live.lock().expect("control state lock");
        live.listen_failures
            .insert(node, (failures, Instant::now() + lease));
    }

    /// Every VIP:port some node proxy cannot listen on: (address, error, node).
    pub fn listen_failures(&self) -> Vec<(SocketAddr, String, String)> {
        let now = Instant::now();
        let live = self.live.lock().expect("control state lock");
        live.listen_failures
            .iter()
            .filter(|(_, (_, until))| *until > now)
            .flat_map(|(node, (list, _))| {
                list.iter()
                    .map(move |(addr, e)| (*addr, e.clone(), node.clone()))
            })
            .collect()
    }

    /// A gateway announces (and refreshes) its reachable address.
    pub fn register_gateway(&self, addr: SocketAddr, lease: Duration) -> Result<(), StoreError> {
        let is_new = {
            let mut live = self.live.lock().expect("control state lock");
            live.gateways.insert(addr, Instant::now() + lease).is_none()
        };
        if is_new {
            tracing::info!(%addr, "gateway registered");
            self.live_changed()?;
        }
        Ok(())
    }

    /// Expires imports, link liveness and gateway registrations whose leases ran out.
    pub fn expire(&self) -> Result<(), StoreError> {
        let now = Instant::now();
        let changed = {
            let mut live = self.live.lock().expect("control state lock");
            let expired = live.imports.handle_timeout(now);
            for peer in &expired {
                tracing::warn!(%peer, "imports withdrawn: no report from any gateway within the lease");
            }
            let before = live.gateways.len() + live.connected.len();
            live.gateways.retain(|addr, until| {
                let keep = *until > now;
                if !keep {
                    tracing::warn!(%addr, "gateway registration expired");
                }
                keep
            });
            live.connected.retain(|_, (_, until)| *until > now);
            !expired.is_empty() || before != live.gateways.len() + live.connected.len()
        };
        if changed {
            self.live_changed()?;
        }
        Ok(())
    }

    /// Forgets live state about a peer (after its link was removed).
    pub fn forget_peer(&self, peer: &ClusterId) {
        let mut live = self.live.lock().expect("control state lock");
        live.imports.withdraw(peer);
        live.connected.remove(peer);
        live.limited.remove(peer);
    }

    /// Live state that others report (imports, health, gateways, leases) changed: asks for
    /// a republish. Once the publisher runs, these coalesce (see [`Self::run_publisher`]),
    /// so however fast a peer or a flapping endpoint changes things, rebuilding the
    /// snapshot takes a bounded share of the control plane's time. Commands (`service
    /// add`, `link remove`, ...) still republish before they answer.
    fn live_changed(&self) -> Result<(), StoreError> {
        if self.coalescing.load(Ordering::Acquire) {
            self.publish_wanted.notify_one();
            Ok(())
        } else {
            self.republish()
        }
    }

    /// The coalescing publisher: the first change after a quiet spell is published at once;
    /// changes that arrive while a republish runs or just ran are folded into the next one,
    /// which waits at least [`MIN_PUBLISH_GAP`] and [`PUBLISH_GAP_FACTOR`] times as long as
    /// the previous republish took. However fast reports change, publishing and what it
    /// sets off in the roles stay a bounded share of the machine.
    async fn run_publisher(self: Arc<Self>) {
        loop {
            self.publish_wanted.notified().await;
            let started = tokio::time::Instant::now();
            let cp = self.clone();
            match tokio::task::spawn_blocking(move || cp.republish()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "republish failed; retrying");
                    self.publish_wanted.notify_one();
                }
                Err(e) => tracing::error!(error = %e, "republish panicked"),
            }
            let took = started.elapsed();
            tokio::time::sleep((took * PUBLISH_GAP_FACTOR).max(MIN_PUBLISH_GAP)).await;
        }
    }

    /// Runs the control plane's background work: the coalescing publisher, lease expiry
    /// and health checks.
    pub fn spawn_background(self: &Arc<Self>) {
        self.coalescing.store(true, Ordering::Release);
        tokio::spawn(self.clone().run_publisher());
        let cp = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if let Err(e) = cp.expire() {
                    tracing::error!(error = %e, "lease expiry failed");
                }
            }
        });
        tokio::spawn(health::run(self.clone()));
    }
}

impl ControlPlane {
    /// Records the gateway addresses a peer announced, if they changed.
    pub fn update_peer_gateways(
        &self,
        peer: &ClusterId,
        gateways: Vec<SocketAddr>,
    ) -> Result<(), StoreError> {
        if gateways.is_empty() {
            return Ok(());
        }
        let Some(mut link) = self.store.links()?.into_iter().find(|l| &l.peer == peer) else {
            return Ok(());
        };
        let (mut merged, _) = ferry_federation::check_gateways(&gateways, &self.cfg.limits);
        if merged.is_empty() {
            return Ok(());
        }
        merged.sort();
        if link.gateways != merged {
            tracing::info!(%peer, gateways = ?merged, "peer gateways updated");
            link.gateways = merged;
            self.store.put_link(&link)?;
            self.republish()?;
        }
        Ok(())
    }
}

/// The config file is the source of truth for the services it declares (the CLI refuses to
/// change them): at start each declared service is stored exactly as the file says, and a
/// service the file declared before but no longer does is removed. Services added with the
/// CLI are the CLI's and are left alone. An export keeps its original time while it lasts,
/// so a restart never makes it look newer than a peer's.
fn apply_declared(cfg: &Config, store: &Store) -> Result<(), StoreError> {
    let stored = store.services()?;
    for declared in &cfg.services {
        let name = &declared.spec.name;
        let existing = stored.get(name);
        let exported_at_ms = match existing {
            Some(old) if old.exported && declared.export && old.exported_at_ms > 0 => {
                old.exported_at_ms
            }
            _ if declared.export => unix_now_ms(),
            _ => 0,
        };
        let doc = store::ServiceDoc {
            spec: declared.spec.clone(),
            exported: declared.export,
            exported_at_ms,
            declared: true,
        };
        if existing.is_some_and(|old| !old.declared) {
            tracing::info!(service = %name, "service added with the CLI is now declared in the config file; the file's definition applies");
        }
        if existing != Some(&doc) {
            store.put_service(&doc)?;
        }
    }
    for (name, doc) in &stored {
        if doc.declared && !cfg.services.iter().any(|d| &d.spec.name == name) {
            tracing::info!(service = %name, "service no longer declared in the config file: removed");
            store.remove_service(name)?;
        }
    }
    Ok(())
}

/// Logs every conflict that is new in `next` and sets the `ferry_import_conflicts` gauge.
fn report_conflicts(current: &MeshSnapshot, next: &MeshSnapshot) {
    let mut total = 0usize;
    for svc in &next.services {
        total += svc.conflicts.len();
        let before = current.service(&svc.name).map(|s| s.conflicts.as_slice());
        for c in &svc.conflicts {
            if !before.is_some_and(|b| b.contains(c)) {
                tracing::warn!(
                    service = %svc.name, peer = %c.cluster, conflict = %c,
                    "export conflicts with the service's definition (the local one, or the oldest export); not merged"
                );
            }
        }
    }
    metrics::gauge!("ferry_import_conflicts").set(total as f64);
}

/// Serves the control plane's API until `shutdown` on its three sockets (see [`scope`]):
/// admin (`control.socket`), role and watch, all owner-only.
pub async fn serve(
    cp: Arc<ControlPlane>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let admin = cp.cfg.socket.clone();
    if let Some(dir) = admin.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut listeners = Vec::new();
    for scope in [Scope::Admin, Scope::Role, Scope::Watch] {
        listeners.push((scope, bind_socket(&scope.path(&admin)).await?));
    }
    tracing::info!(socket = %admin.display(), cluster = %cp.cfg.cluster, "control plane listening");
    crate::admin::set_ready(crate::admin::Role::Control, true);
    cp.spawn_background();
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let mut servers = tokio::task::JoinSet::new();
    for (scope, listener) in listeners {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let mut stop = stop_rx.clone();
        let api = api::ControlApi::new(cp.clone(), scope);
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(crate::pb::control_server::ControlServer::new(api))
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await
        });
    }
    // Long-lived watch streams never finish by themselves: once asked to stop, in-flight
    // calls get SHUTDOWN_GRACE, then what is left is closed.
    let mut result = Ok(());
    let mut stopped = stop_rx.clone();
    let mut deadline: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            done = servers.join_next() => match done {
                None => break,
                Some(Ok(Err(e))) => result = Err(e.into()),
                Some(_) => {}
            },
            _ = stopped.wait_for(|s| *s), if deadline.is_none() => {
                deadline = Some(tokio::time::Instant::now() + SHUTDOWN_GRACE);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)), if deadline.is_some() => {
                servers.abort_all();
            }
        }
    }
    for scope in [Scope::Admin, Scope::Role, Scope::Watch] {
        let _ = std::fs::remove_file(scope.path(&admin));
    }
    result
}

/// `ferry_link_up{peer}` and `ferry_imports{peer}` from a published snapshot (a link
/// removed since `previous` reads 0), and `ferry_snapshot_version`. Peers are this
/// cluster's own links, so the label set is bounded by them.
fn record_link_metrics(previous: &MeshSnapshot, next: &MeshSnapshot) {
    for gone in previous
        .links
        .iter()
        .filter(|l| !next.links.iter().any(|n| n.peer == l.peer))
    {
        let peer = gone.peer.to_string();
        metrics::gauge!("ferry_link_up", "peer" => peer.clone()).set(0.0);
        metrics::gauge!("ferry_imports", "peer" => peer).set(0.0);
    }
    for link in &next.links {
        let imports = next
            .services
            .iter()
            .filter(|s| s.remote.iter().any(|r| r.cluster == link.peer))
            .count();
        let peer = link.peer.to_string();
        metrics::gauge!("ferry_link_up", "peer" => peer.clone()).set(if link.connected {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("ferry_imports", "peer" => peer).set(imports as f64);
    }
    metrics::gauge!("ferry_snapshot_version").set(next.version as f64);
}

/// How long in-flight API calls get to finish once the control plane is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);

/// Binds a Unix socket at `path`, replacing a stale one but never a live one. The socket
/// gets its final, owner-only mode from the process umask at bind time.
async fn bind_socket(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "another control plane already listens on {}; stop it or set control.socket to another path",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    tokio::net::UnixListener::bind(path)
        .with_context(|| format!("cannot listen on {}", path.display()))
}
