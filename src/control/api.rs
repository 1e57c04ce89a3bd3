//! The control plane's gRPC API (tonic): admin verbs for the CLI and the calls the
//! cluster's roles make. Requests are parsed into validated types here, at the edge;
//! every user-facing refusal says what was wrong and what to do.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ferry_federation::{
    fingerprint_hex, verify_join_proof, ClusterId, EndpointAddr, ExportedService, Identity,
    LimitExceeded, LinkToken, NodeName, ServiceName, ServicePort, ServiceSpec,
};
use ferry_gateway::pki;
use ferry_gateway::tls::IdentityStore;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::domain::ControlError;
use super::policies;
use super::scope::{CallKind, Scope};
use super::{unix_now, unix_now_ms, ControlPlane};
use crate::pb::{self, control_server::Control};

/// How long `link join` waits for the first link session before it answers.
const JOIN_SESSION_WAIT: Duration = Duration::from_secs(5);

/// The tonic service over a shared [`ControlPlane`], as served on one socket.
pub struct ControlApi {
    cp: Arc<ControlPlane>,
    scope: Scope,
}

impl ControlApi {
    pub fn new(cp: Arc<ControlPlane>, scope: Scope) -> Self {
        ControlApi { cp, scope }
    }

    /// Refuses a call this socket does not serve, or a caller of another user.
    fn check<T>(&self, call: &str, kind: CallKind, request: &Request<T>) -> Result<(), Status> {
        super::scope::check(self.scope, &self.cp.cfg.socket, call, kind, request)
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "control plane error");
    Status::internal(e.to_string())
}

/// The lease a role asked for on a report, kept between 1 s and 60 s: a role cannot make
/// its report outlive it by much, nor expire before its next refresh.
fn reported_lease(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(1000, 60_000))
}

fn bad(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

fn parse_service_name(s: &str) -> Result<ServiceName, Status> {
    s.parse().map_err(|e| {
        bad(format!(
            "invalid service name `{s}`: {e} (expected <name>.<namespace>, e.g. web.shop)"
        ))
    })
}

fn parse_peer(s: &str) -> Result<ClusterId, Status> {
    s.parse()
        .map_err(|e| bad(format!("invalid cluster name `{s}`: {e}")))
}

/// Converts a snapshot record to the wire form used by `ferry services`.
pub fn service_info(rec: &ferry_federation::ServiceRecord) -> pb::ServiceInfo {
    pb::ServiceInfo {
        name: rec.name.to_string(),
        vip: rec.vip.to_string(),
        ports: rec.ports.iter().map(|p| p.to_string()).collect(),
        exported: rec.exported,
        local: rec
            .local
            .iter()
            .map(|e| pb::EndpointInfo {
                addr: e.addr.to_string(),
                healthy: e.healthy,
            })
            .collect(),
        remote: rec
            .remote
            .iter()
            .map(|r| pb::RemoteInfo {
                cluster: r.cluster.to_string(),
                healthy: r.healthy.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            })
            .collect(),
        headless: rec.headless,
        endpoints: rec
            .endpoints
            .iter()
            .map(|e| pb::EndpointVipInfo {
                cluster: e.cluster.to_string(),
                hostname: e.hostname.to_string(),
                vip: e.vip.to_string(),
                healthy: e.healthy,
            })
            .collect(),
        conflicts: rec
            .conflicts
            .iter()
            .map(|c| pb::ConflictInfo {
                cluster: c.cluster.to_string(),
                reason: c.to_string(),
            })
            .collect(),
        replaced: String::new(),
        warning: String::new(),
        listen_errors: Vec::new(),
    }
}

impl ControlApi {
    /// Issues this control plane a short-lived gateway certificate for its own QUIC calls
    /// (the join handshake).
    fn self_identity(&self) -> Result<Arc<IdentityStore>, Status> {
        let req = pki::new_leaf_request().map_err(internal)?;
        let identity = Identity::Gateway {
            cluster: self.cp.cfg.cluster.clone(),
        };
        let leaf = pki::issue_leaf(
            &self.cp.trust.ca,
            &identity,
            &req.csr_pem,
            SystemTime::now(),
            Duration::from_secs(600),
        )
        .map_err(internal)?;
        let store =
            IdentityStore::from_pem(&leaf.chain_pem, &req.key_pem, self.cp.trust.trust_domain())
                .map_err(internal)?;
        Ok(Arc::new(store))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Control for ControlApi {
    async fn add_service(
        &self,
        request: Request<pb::AddServiceRequest>,
    ) -> Result<Response<pb::ServiceInfo>, Status> {
        self.check("AddService", CallKind::Admin, &request)?;
        let req = request.into_inner();
        let name = parse_service_name(&req.name)?;
        let ports = req
            .ports
            .iter()
            .map(|p| {
                p.parse::<ServicePort>().map_err(|e| {
                    bad(format!("invalid --port `{p}`: {e} (expected name=port[:target]/proto, e.g. http=8080/http)"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let endpoints = req
            .endpoints
            .iter()
            .map(|e| {
                e.parse::<EndpointAddr>().map_err(|err| {
                    bad(format!(
                        "invalid --endpoint `{e}`: {err} (expected ip, ip:port or hostname=ip[:port])"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let spec = ServiceSpec::with_headless(name.clone(), ports, endpoints, req.headless)
            .map_err(|e| bad(format!("invalid service `{name}`: {e}")))?;
        let (ports, headless) = (spec.ports.clone(), spec.headless);
        let outcome = self
            .cp
            .add_service(unix_now_ms(), spec, req.export)
            .map_err(status)?;
        let snapshot = self.cp.snapshot();
        let mut info = match snapshot.service(&name) {
            Some(rec) => service_info(rec),
            // Stored, but not published: the VIP range is full.
            None => pb::ServiceInfo {
                name: name.to_string(),
                ports: ports.iter().map(|p| p.to_string()).collect(),
                exported: req.export,
                headless,
                warning: format!(
                    "{name} is stored but has no VIP: control.vip_range {} is full; it gets one (and DNS and routing) once an address is free, or widen the range",
                    self.cp.cfg.vip_range
                ),
                ..Default::default()
            },
        };
        info.replaced = outcome.replaced.unwrap_or_default();
        Ok(Response::new(info))
    }

    async fn remove_service(
        &self,
        request: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("RemoveService", CallKind::Admin, &request)?;
        let name = parse_service_name(&request.into_inner().name)?;
        self.cp.remove_service(&name).map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn list_services(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::ServiceList>, Status> {
        self.check("ListServices", CallKind::Admin, &request)?;
        let snapshot = self.cp.snapshot();
        let failures = self.cp.listen_failures();
        let services = snapshot
            .services
            .iter()
            .map(|rec| {
                let mut info = service_info(rec);
                info.listen_errors = failures
                    .iter()
                    .filter(|(addr, _, _)| {
                        addr.ip() == rec.vip || rec.endpoints.iter().any(|e| e.vip == addr.ip())
                    })
                    .map(|(addr, e, node)| format!("{addr}: {e} (node {node})"))
                    .collect();
                info
            })
            .collect();
        Ok(Response::new(pb::ServiceList { services }))
    }

    async fn export(
        &self,
        request: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("Export", CallKind::Admin, &request)?;
        let name = parse_service_name(&request.into_inner().name)?;
        self.cp
            .set_exported(unix_now_ms(), &name, true)
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn unexport(
        &self,
        request: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("Unexport", CallKind::Admin, &request)?;
        let name = parse_service_name(&request.into_inner().name)?;
        self.cp
            .set_exported(unix_now_ms(), &name, false)
            .map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn set_policy(
        &self,
        request: Request<pb::SetPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        self.check("SetPolicy", CallKind::Admin, &request)?;
        let req = request.into_inner();
        let name = parse_service_name(&req.name)?;
        let edit = policies::edit_from_request(&req).map_err(bad)?;
        if edit.is_empty() {
            return Err(bad(format!(
                "`policy set {name}` changes nothing; give a split (--failover, --local-only, --pinned, --weights), --route, --timeout, --retries or --retry-on"
            )));
        }
        let policy = self.cp.set_policy(&name, edit).map_err(status)?;
        let known = self.cp.snapshot().service(&name).is_some();
        Ok(Response::new(policies::policy_info(&policy, false, known)))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::PolicyList>, Status> {
        self.check("ListPolicies", CallKind::Admin, &request)?;
        let wanted = request.into_inner().name;
        let wanted = match wanted.is_empty() {
            true => None,
            false => Some(parse_service_name(&wanted)?),
        };
        let snapshot = self.cp.snapshot();
        let policies = self
            .cp
            .policies()
            .map_err(status)?
            .into_iter()
            .filter(|d| wanted.as_ref().is_none_or(|w| *w == d.policy.service))
            .map(|d| {
                let known = snapshot.service(&d.policy.service).is_some();
                policies::policy_info(&d.policy, d.declared, known)
            })
            .collect();
        Ok(Response::new(pb::PolicyList { policies }))
    }

    async fn clear_policy(
        &self,
        request: Request<pb::ServiceRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("ClearPolicy", CallKind::Admin, &request)?;
        let name = parse_service_name(&request.into_inner().name)?;
        self.cp.clear_policy(&name).map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn create_link_token(
        &self,
        request: Request<pb::CreateLinkTokenRequest>,
    ) -> Result<Response<pb::LinkTokenReply>, Status> {
        self.check("CreateLinkToken", CallKind::Admin, &request)?;
        let req = request.into_inner();
        let peer = parse_peer(&req.peer)?;
        let token = self
            .cp
            .create_link_token(
                unix_now(),
                &mut system_random,
                peer,
                Duration::from_secs(req.ttl_seconds),
            )
            .map_err(status)?;
        Ok(Response::new(pb::LinkTokenReply {
            token: token.encode(),
            expires_at_unix: token.expires_at_unix,
        }))
    }

    async fn join_link(
        &self,
        request: Request<pb::JoinLinkRequest>,
    ) -> Result<Response<pb::LinkInfo>, Status> {
        self.check("JoinLink", CallKind::Admin, &request)?;
        let token =
            LinkToken::decode(&request.into_inner().token).map_err(|e| bad(e.to_string()))?;
        let cp = &self.cp;
        let token = cp.check_join_token(unix_now(), token).map_err(status)?;
        let own_gateways = cp.snapshot().gateways.clone();
        let identity = self.self_identity()?;
        let outcome = ferry_gateway::join::join(
            identity,
            cp.trust.trust.clone(),
            &token,
            &cp.cfg.cluster,
            own_gateways,
        )
        .await
        .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let doc = cp
            .record_joined_link(
                unix_now(),
                outcome.issuer,
                &outcome.gateways,
                &token.gateways,
            )
            .map_err(status)?;
        // The issuer dials as soon as it has spent the token: the answer waits (briefly)
        // for the session, so `link join` returning means the link is up, or says it is not.
        let mut snapshots = cp.subscribe();
        let up = snapshots.wait_for(|s| s.link(&doc.peer).is_some_and(|l| l.connected));
        let connected = matches!(tokio::time::timeout(JOIN_SESSION_WAIT, up).await, Ok(Ok(_)));
        Ok(Response::new(pb::LinkInfo {
            peer: doc.peer.to_string(),
            gateways: doc.gateways.iter().map(|g| g.to_string()).collect(),
            connected,
            created_at_unix: doc.created_at_unix,
            imported_services: 0,
            limited: Vec::new(),
            ..Default::default()
        }))
    }

    async fn list_links(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::LinkList>, Status> {
        self.check("ListLinks", CallKind::Admin, &request)?;
        let links = self.cp.links().map_err(status)?;
        let snapshot = self.cp.snapshot();
        let unix = |t: SystemTime| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        };
        let local_ca = ferry_gateway::tls::sha256_hex(self.cp.trust.ca.cert_der());
        let bundle = fingerprint_hex(&self.cp.trust.fingerprint);
        let local_roots = self.cp.trust.root_fingerprints();
        let exported = snapshot.services.iter().filter(|s| s.exported).count() as u32;
        let links = links
            .into_iter()
            .map(|l| {
                let session = self.cp.session(&l.peer);
                let (last_error_unix, last_error) = session
                    .last_error
                    .map(|(at, e)| (unix(at), e))
                    .unwrap_or_default();
                pb::LinkInfo {
                    peer: l.peer.to_string(),
                    gateways: l.gateways.iter().map(|g| g.to_string()).collect(),
                    connected: snapshot.link(&l.peer).map(|r| r.connected).unwrap_or(false),
                    created_at_unix: l.created_at_unix,
                    imported_services: snapshot
                        .services
                        .iter()
                        .filter(|s| s.remote.iter().any(|r| r.cluster == l.peer))
                        .count() as u32,
                    limited: snapshot
                        .link(&l.peer)
                        .map(|r| r.limited.iter().map(|x| x.to_string()).collect())
                        .unwrap_or_default(),
                    rtt_us: session.rtt.as_micros() as u64,
                    last_seen_unix: session.last_seen.map(unix).unwrap_or(0),
                    up_since_unix: session.up_since.map(unix).unwrap_or(0),
                    last_error,
                    last_error_unix,
                    peer_cert_sha256: session.peer_cert,
                    peer_ca_sha256: session.peer_ca,
                    local_ca_sha256: local_ca.clone(),
                    bundle_sha256: bundle.clone(),
                    exported_services: exported,
                    peer_roots_sha256: session.peer_roots,
                    local_roots_sha256: local_roots.clone(),
                }
            })
            .collect();
        Ok(Response::new(pb::LinkList { links }))
    }

    async fn remove_link(
        &self,
        request: Request<pb::LinkRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("RemoveLink", CallKind::Admin, &request)?;
        let peer = parse_peer(&request.into_inner().peer)?;
        self.cp.remove_link(&peer).map_err(status)?;
        self.cp.forget_session(&peer);
        Ok(Response::new(pb::Empty {}))
    }

    async fn status(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<pb::StatusReply>, Status> {
        self.check("Status", CallKind::Admin, &request)?;
        let snapshot = self.cp.snapshot();
        let data_dir = &self.cp.cfg.data_dir;
        let dns = std::fs::read_to_string(data_dir.join(crate::roles::dns::ADDR_FILE))
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Ok(Response::new(pb::StatusReply {
            cluster: self.cp.cfg.cluster.to_string(),
            trust_domain: self.cp.trust.trust_domain().to_string(),
            gateways: snapshot.gateways.iter().map(|g| g.to_string()).collect(),
            services: snapshot.services.len() as u32,
            links: snapshot.links.len() as u32,
            snapshot_version: snapshot.version,
            bundle_fingerprint: fingerprint_hex(&self.cp.trust.fingerprint),
            metrics: crate::telemetry::render(),
            without_vip: self.cp.unallocated(),
            listen_errors: self
                .cp
                .listen_failures()
                .iter()
                .map(|(addr, e, node)| format!("{addr}: {e} (node {node})"))
                .collect(),
            admin: crate::admin::recorded(data_dir)
                .into_iter()
                .map(|(role, addr)| pb::RoleAddr {
                    role: role.as_str().to_string(),
                    addr: addr.to_string(),
                })
                .collect(),
            dns,
            links_up: snapshot.links.iter().filter(|l| l.connected).count() as u32,
            exports: snapshot.services.iter().filter(|s| s.exported).count() as u32,
            imports: snapshot
                .services
                .iter()
                .filter(|s| !s.remote.is_empty())
                .count() as u32,
        }))
    }

    async fn check(&self, request: Request<pb::Empty>) -> Result<Response<pb::CheckReply>, Status> {
        self.check("Check", CallKind::Admin, &request)?;
        let findings = self.cp.check().await;
        Ok(Response::new(pb::CheckReply {
            passed: ferry_federation::check::passed(&findings),
            findings_json: serde_json::to_string(&findings).map_err(internal)?,
        }))
    }

    async fn issue_certificate(
        &self,
        request: Request<pb::IssueRequest>,
    ) -> Result<Response<pb::IssueReply>, Status> {
        self.check("IssueCertificate", CallKind::Role, &request)?;
        let req = request.into_inner();
        let cluster = self.cp.cfg.cluster.clone();
        let identity = match req.role.as_str() {
            "gateway" => Identity::Gateway { cluster },
            "node" => {
                let node: NodeName = req
                    .node
                    .parse()
                    .map_err(|e| bad(format!("invalid node name `{}`: {e}", req.node)))?;
                Identity::Node { cluster, node }
            }
            other => {
                return Err(bad(format!(
                    "unknown role `{other}`; expected gateway or node"
                )))
            }
        };
        let now = SystemTime::now();
        let leaf = self
            .cp
            .issue_certificate(now, &identity, &req.csr_pem)
            .map_err(status)?;
        Ok(Response::new(pb::IssueReply {
            chain_pem: leaf.chain_pem,
            bundle_pem: self.cp.trust.bundle_pem.clone(),
            trust_domain: self.cp.trust.trust_domain().to_string(),
            not_after_unix: leaf
                .not_after
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            cluster: self.cp.cfg.cluster.to_string(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::Empty>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.check("Watch", CallKind::Watch, &request)?;
        let rx = self.cp.subscribe();
        let stream = tokio_stream::wrappers::WatchStream::new(rx).map(|snapshot| {
            serde_json::to_string(&*snapshot)
                .map(|snapshot_json| pb::SnapshotMessage { snapshot_json })
                .map_err(internal)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn register_gateway(
        &self,
        request: Request<pb::RegisterGatewayRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("RegisterGateway", CallKind::Role, &request)?;
        let req = request.into_inner();
        let addr: SocketAddr = req
            .addr
            .parse()
            .map_err(|_| bad(format!("invalid gateway address `{}`", req.addr)))?;
        let lease = reported_lease(req.lease_ms);
        self.cp.register_gateway(addr, lease).map_err(internal)?;
        let instance = format!("gateway {addr}");
        self.cp
            .note_role_cert(&instance, req.cert_not_before_unix, req.cert_not_after_unix);
        self.cp
            .note_role_version(instance, req.snapshot_version, lease);
        Ok(Response::new(pb::Empty {}))
    }

    async fn report_imports(
        &self,
        request: Request<pb::ReportImportsRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("ReportImports", CallKind::Role, &request)?;
        let req = request.into_inner();
        let peer = parse_peer(&req.peer)?;
        let lease = reported_lease(req.lease_ms);
        let services = if req.withdrawn {
            None
        } else {
            let list: Vec<ExportedService> = serde_json::from_str(&req.services_json)
                .map_err(|e| bad(format!("invalid imports from gateway: {e}")))?;
            Some(list)
        };
        let peer_gateways = req
            .peer_gateways
            .iter()
            .filter_map(|g| g.parse::<SocketAddr>().ok())
            .collect();
        let limited: Vec<LimitExceeded> = if req.limits_json.is_empty() {
            Vec::new()
        } else {
            serde_json::from_str(&req.limits_json)
                .map_err(|e| bad(format!("invalid link limits from gateway: {e}")))?
        };
        self.cp
            .update_peer_gateways(&peer, peer_gateways)
            .map_err(internal)?;
        let hex = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        match (req.withdrawn, req.connected) {
            (true, _) => self
                .cp
                .note_session_down(&peer, "peer silent past its lease; imports withdrawn"),
            (false, true) => self.cp.note_session(
                &peer,
                crate::control::sessions::SessionReport {
                    rtt: Duration::from_micros(req.rtt_us.min(60_000_000)),
                    peer_cert: Some(req.peer_cert_sha256)
                        .filter(|s| hex(s))
                        .unwrap_or_default(),
                    peer_ca: Some(req.peer_ca_sha256)
                        .filter(|s| hex(s))
                        .unwrap_or_default(),
                    peer_roots: req
                        .peer_roots_sha256
                        .into_iter()
                        .filter(|s| hex(s))
                        .take(ferry_federation::link::MAX_PEER_ROOTS)
                        .collect(),
                },
            ),
            (false, false) => self.cp.note_session_down(&peer, "link connection lost"),
        }
        self.cp
            .report_imports(peer, services, req.connected, limited, lease)
            .map_err(internal)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn redeem_link_token(
        &self,
        request: Request<pb::RedeemRequest>,
    ) -> Result<Response<pb::RedeemReply>, Status> {
        self.check("RedeemLinkToken", CallKind::Role, &request)?;
        let req = request.into_inner();
        let id: [u8; 16] = req
            .token_id
            .as_slice()
            .try_into()
            .map_err(|_| bad("token id must be 16 bytes"))?;
        let joiner = parse_peer(&req.joiner)?;
        let offered = req
            .gateways
            .iter()
            .map(|g| g.parse::<SocketAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("invalid gateway address in join request"))?;
        let gateways = self
            .cp
            .redeem_link_token(unix_now(), &id, &joiner, &offered, |secret| {
                verify_join_proof(secret, &req.channel_binding, &joiner, &req.proof)
            })
            .map_err(status)?;
        Ok(Response::new(pb::RedeemReply {
            issuer: self.cp.cfg.cluster.to_string(),
            gateways: gateways.iter().map(|g| g.to_string()).collect(),
        }))
    }

    async fn peer_removed_link(
        &self,
        request: Request<pb::LinkRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("PeerRemovedLink", CallKind::Role, &request)?;
        let peer = parse_peer(&request.into_inner().peer)?;
        self.cp.peer_removed_link(&peer).map_err(status)?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn report_node_status(
        &self,
        request: Request<pb::NodeStatusRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check("ReportNodeStatus", CallKind::Role, &request)?;
        let req = request.into_inner();
        let node: NodeName = req
            .node
            .parse()
            .map_err(|e| bad(format!("invalid node name `{}`: {e}", req.node)))?;
        let failures = req
            .failures
            .iter()
            .take(4096)
            .filter_map(|f| Some((f.addr.parse().ok()?, f.error.chars().take(200).collect())))
            .collect();
        let lease = reported_lease(req.lease_ms);
        let instance = format!("node {node}");
        self.cp
            .note_role_cert(&instance, req.cert_not_before_unix, req.cert_not_after_unix);
        self.cp
            .note_role_version(instance, req.snapshot_version, lease);
        self.cp
            .report_node_status(node.to_string(), failures, lease);
        Ok(Response::new(pb::Empty {}))
    }
}

/// Fills `buf` from the system's secure random generator.
fn system_random(buf: &mut [u8]) {
    use ring::rand::SecureRandom;
    ring::rand::SystemRandom::new()
        .fill(buf)
        .expect("the system random generator works");
}

/// The gRPC status for a refused control-plane call.
fn status(e: ControlError) -> Status {
    match e {
        ControlError::Invalid(m) => Status::invalid_argument(m),
        ControlError::NotFound(m) => Status::not_found(m),
        ControlError::Precondition(m) => Status::failed_precondition(m),
        ControlError::Redeem(r) => Status::permission_denied(r.to_string()),
        ControlError::Pki(e) => Status::invalid_argument(e.to_string()),
        ControlError::Store(e) => internal(e),
    }
}
