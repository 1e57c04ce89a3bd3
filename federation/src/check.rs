//! `ferry check`: what is wrong with a cluster, as findings with stable codes and a
//! one-line fix each. Pure: the control plane gathers the facts (certificates, the
//! snapshot, what roles reported, a DNS probe) and this module judges them, so every rule
//! is a table test.
//!
//! Codes are stable and never reused: `FERRY1xx` trust, `2xx` links, `3xx` services and
//! DNS, `4xx` data plane.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::snapshot::MeshSnapshot;

/// Days of validity a CA must have left.
pub const CA_MIN_DAYS: i64 = 60;
/// How long roles may take to pick up a new snapshot before they count as out of sync.
pub const SYNC_GRACE_SECS: i64 = 5;

/// The group a check belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    Trust,
    Links,
    Services,
    DataPlane,
}

impl Group {
    pub fn as_str(self) -> &'static str {
        match self {
            Group::Trust => "trust",
            Group::Links => "links",
            Group::Services => "services",
            Group::DataPlane => "data_plane",
        }
    }
}

/// How a check came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "fail",
        })
    }
}

/// One finding: a check's result for one subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub group: Group,
    /// The stable code of the check (`FERRY101`), whatever its status.
    pub code: String,
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it (empty when ok).
    pub fix: String,
}

/// A certificate's validity, in Unix seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

/// A certificate the control plane issued to a role, the last one per role instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleCert {
    /// "gateway" or "node <name>".
    pub role: String,
    pub validity: Validity,
}

/// The snapshot version a role last reported, and when (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleVersion {
    /// "gateway <addr>" or "node <name>".
    pub role: String,
    pub version: u64,
}

/// What a probe of the cluster's DNS server found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DnsProbe {
    /// The cluster runs no DNS server (`[dns] enabled = false`, or none recorded).
    NotRunning,
    /// It answered `dns-version.<zone>` TXT with this version.
    Answered(String),
    /// It did not answer properly.
    Failed(String),
}

/// Everything the checks judge.
pub struct Facts<'a> {
    pub now: i64,
    /// The roots of the trust bundle.
    pub roots: Vec<Validity>,
    pub cluster_ca: Validity,
    /// Whether the cluster CA is signed by one of the bundle's roots.
    pub ca_chained: bool,
    pub role_certs: Vec<RoleCert>,
    pub snapshot: &'a MeshSnapshot,
    /// When `snapshot` was published (Unix seconds).
    pub published_at: i64,
    /// `VIP:port: error (node n)` for listeners a node proxy cannot bind.
    pub listen_failures: Vec<String>,
    /// Names left without a VIP.
    pub without_vip: Vec<String>,
    pub dns: DnsProbe,
    pub role_versions: Vec<RoleVersion>,
    /// SHA-256 (hex) of each root of this cluster's bundle.
    pub local_roots: Vec<String>,
    /// The roots each peer's hello named (a peer missing here has not said).
    pub peer_roots: std::collections::BTreeMap<crate::ClusterId, Vec<String>>,
}

struct Findings(Vec<Finding>);

impl Findings {
    /// A check that passes when it found no `problems`, and fails naming them otherwise.
    fn none_of(
        &mut self,
        group: Group,
        code: &str,
        problems: &[String],
        ok: String,
        failed: impl FnOnce(&[String]) -> String,
        fix: &str,
    ) {
        match problems.is_empty() {
            true => self.push(group, code, Status::Ok, ok, fix),
            false => self.push(group, code, Status::Fail, failed(problems), fix),
        }
    }

    fn push(&mut self, group: Group, code: &str, status: Status, detail: String, fix: &str) {
        let fix = match status {
            Status::Ok => String::new(),
            _ => fix.to_string(),
        };
        self.0.push(Finding {
            group,
            code: code.to_string(),
            status,
            detail,
            fix,
        });
    }
}

/// Whole days a CA has left, and whether that is enough ([`CA_MIN_DAYS`]).
fn remaining(now: i64, v: &Validity) -> (i64, Status) {
    let days = (v.not_after - now).div_euclid(86_400);
    let status = if days < CA_MIN_DAYS {
        Status::Fail
    } else {
        Status::Ok
    };
    (days, status)
}

/// Judges `facts`: findings in group order, every check present (ok ones included).
pub fn evaluate(facts: &Facts<'_>) -> Vec<Finding> {
    let mut f = Findings(Vec::new());
    trust(facts, &mut f);
    links(facts, &mut f);
    services(facts, &mut f);
    data_plane(facts, &mut f);
    f.0
}

/// Whether nothing failed (warnings allowed).
pub fn passed(findings: &[Finding]) -> bool {
    findings.iter().all(|f| f.status != Status::Fail)
}

fn trust(facts: &Facts<'_>, f: &mut Findings) {
    let now = facts.now;
    match facts.roots.iter().min_by_key(|r| r.not_after) {
        None => f.push(
            Group::Trust,
            "FERRY101",
            Status::Fail,
            "the trust bundle holds no root certificate".into(),
            "reissue the cluster CA with `ferry trust issue` (it writes bundle.crt)",
        ),
        Some(root) => {
            let (days, status) = remaining(now, root);
            f.push(
                Group::Trust,
                "FERRY101",
                status,
                format!("mesh root valid for {days} more days (at least {CA_MIN_DAYS} wanted)"),
                "create a new root with `ferry trust init`, add it to every cluster's bundle.crt, then reissue the cluster CAs",
            );
        }
    }
    let (days, status) = remaining(now, &facts.cluster_ca);
    f.push(
        Group::Trust,
        "FERRY102",
        status,
        format!("cluster CA valid for {days} more days (at least {CA_MIN_DAYS} wanted)"),
        "issue a new cluster CA with `ferry trust issue` into a new directory, point [trust] dir at it and restart the control plane",
    );
    f.push(
        Group::Trust,
        "FERRY103",
        if facts.ca_chained {
            Status::Ok
        } else {
            Status::Fail
        },
        match facts.ca_chained {
            true => "cluster CA is signed by a root of the bundle".into(),
            false => {
                "cluster CA is not signed by any root in bundle.crt: peers will refuse this cluster"
                    .into()
            }
        },
        "reissue the cluster CA from the mesh root with `ferry trust issue --root <root-dir>`",
    );
    let mut stale = Vec::new();
    let mut expired = Vec::new();
    for cert in &facts.role_certs {
        let v = &cert.validity;
        let lifetime = (v.not_after - v.not_before).max(1);
        // Renewal happens at two thirds of the lifetime; less than a sixth left means it
        // has been missed.
        if v.not_after <= now {
            expired.push(cert.role.clone());
        } else if v.not_after - now < lifetime / 6 {
            stale.push(cert.role.clone());
        }
    }
    let (status, detail) = match (expired.is_empty(), stale.is_empty()) {
        (true, true) => (
            Status::Ok,
            format!("{} role certificates fresh", facts.role_certs.len()),
        ),
        (false, _) => (
            Status::Fail,
            format!("expired role certificates: {}", expired.join(", ")),
        ),
        (true, false) => (
            Status::Warn,
            format!("role certificates past their renewal: {}", stale.join(", ")),
        ),
    };
    f.push(
        Group::Trust,
        "FERRY104",
        status,
        detail,
        "check that those roles reach the control plane socket (their logs say why renewal failed), or restart them",
    );
}

fn links(facts: &Facts<'_>, f: &mut Findings) {
    let links = &facts.snapshot.links;
    if links.is_empty() {
        f.push(Group::Links, "FERRY201", Status::Ok, "no links".into(), "");
    }
    for link in links {
        f.push(
            Group::Links,
            "FERRY201",
            if link.connected { Status::Ok } else { Status::Fail },
            match link.connected {
                true => format!("link to {} up", link.peer),
                false => format!(
                    "link to {} down (its gateways: {})",
                    link.peer,
                    join(&link.gateways)
                ),
            },
            "check that this cluster reaches the peer's gateway over UDP and that both bundles share a root (`ferry link status`); the peer's logs name a refused handshake",
        );
    }
    for link in links {
        shared_root(facts, link, f);
    }
    for link in links.iter().filter(|l| !l.limited.is_empty()) {
        let limits: Vec<String> = link.limited.iter().map(|l| l.to_string()).collect();
        f.push(
            Group::Links,
            "FERRY202",
            Status::Warn,
            format!("{} is over limits: {}", link.peer, limits.join("; ")),
            "ask the peer to export less, or raise the bound under [federation] in this cluster's config",
        );
    }
}

/// FERRY203: the two bundles share a root, and the peer trusts every root of ours.
fn shared_root(facts: &Facts<'_>, link: &crate::snapshot::LinkRecord, f: &mut Findings) {
    const FIX: &str = "issue both clusters' CAs from one mesh root (`ferry trust init` once, `ferry trust issue` per cluster) and put that root in both bundle.crt files";
    let Some(theirs) = facts.peer_roots.get(&link.peer) else {
        if link.connected {
            f.push(
                Group::Links,
                "FERRY203",
                Status::Warn,
                format!(
                    "{} has not said which roots its bundle holds (an older Ferry?)",
                    link.peer
                ),
                "upgrade the peer's gateways so `ferry link status` can compare the bundles",
            );
        }
        return;
    };
    let shared = facts
        .local_roots
        .iter()
        .filter(|r| theirs.contains(r))
        .count();
    let missing = facts.local_roots.len() - shared;
    let (status, detail, fix) = match (shared, missing) {
        (0, _) => (
            Status::Fail,
            format!("{}'s trust bundle shares no root with this cluster's", link.peer),
            FIX,
        ),
        (_, 0) => (
            Status::Ok,
            format!("{} trusts this cluster's roots", link.peer),
            "",
        ),
        (_, n) => (
            Status::Warn,
            format!("{}'s bundle lacks {n} of this cluster's roots: certificates issued under them are refused there", link.peer),
            "add the new root to the peer's bundle.crt before issuing from it (a root rotation in progress?)",
        ),
    };
    f.push(Group::Links, "FERRY203", status, detail, fix);
}

fn services(facts: &Facts<'_>, f: &mut Findings) {
    let snapshot = facts.snapshot;
    let imports: Vec<_> = snapshot
        .services
        .iter()
        .filter(|s| !s.remote.is_empty())
        .collect();
    let dead: Vec<String> = imports
        .iter()
        .filter(|s| {
            let local = s.local.iter().any(|e| e.healthy);
            let remote = s.remote.iter().any(|r| r.healthy.values().any(|n| *n > 0));
            !local && !remote
        })
        .map(|s| s.name.to_string())
        .collect();
    f.none_of(
        Group::Services,
        "FERRY301",
        &dead,
        format!(
            "{} imported services have a healthy endpoint",
            imports.len()
        ),
        |dead| {
            format!(
                "imported services with no healthy endpoint anywhere: {}",
                dead.join(", ")
            )
        },
        "check the endpoints in the exporting clusters (`ferry services` there shows their health)",
    );
    let conflicts: Vec<String> = snapshot
        .services
        .iter()
        .flat_map(|s| s.conflicts.iter().map(move |c| format!("{} ({c})", s.name)))
        .collect();
    f.none_of(
        Group::Services,
        "FERRY302",
        &conflicts,
        "no import conflicts".into(),
        |c| format!("exports not merged: {}", c.join("; ")),
        "make the exporting clusters declare the service with the same ports and kind",
    );
    f.none_of(
        Group::Services,
        "FERRY303",
        &facts.without_vip,
        "every name has a VIP".into(),
        |names| format!("{} names have no VIP (first: {})", names.len(), names[0]),
        "widen control.vip_range",
    );
    let (status, detail) = match &facts.dns {
        DnsProbe::NotRunning => (Status::Warn, "no mesh DNS server recorded".to_string()),
        DnsProbe::Answered(v) => (Status::Ok, format!("mesh DNS answers dns-version {v}")),
        DnsProbe::Failed(e) => (Status::Fail, format!("mesh DNS does not answer: {e}")),
    };
    f.push(
        Group::Services,
        "FERRY304",
        status,
        detail,
        "start the DNS role (`ferry dns`, or [dns] enabled = true with `ferry up`) and check [dns] listen",
    );
}

fn data_plane(facts: &Facts<'_>, f: &mut Findings) {
    f.none_of(
        Group::DataPlane,
        "FERRY401",
        &facts.listen_failures,
        "every VIP listener is bound".into(),
        |failures| format!("VIP listeners not bound: {}", failures.join("; ")),
        "free the address (another process holds it) or move control.vip_range",
    );
    let current = facts.snapshot.version;
    let settled = facts.now - facts.published_at >= SYNC_GRACE_SECS;
    let behind: Vec<String> = facts
        .role_versions
        .iter()
        .filter(|r| r.version != current && settled)
        .map(|r| format!("{} at {} (current {current})", r.role, r.version))
        .collect();
    f.none_of(
        Group::DataPlane,
        "FERRY402",
        &behind,
        format!("{} roles on snapshot {current}", facts.role_versions.len()),
        |behind| format!("roles behind the control plane: {}", behind.join(", ")),
        "check that those roles reach the control plane's watch socket; restart them if they stay behind",
    );
    let gateways = &facts.snapshot.gateways;
    let status = match (gateways.is_empty(), facts.snapshot.links.is_empty()) {
        (false, _) => Status::Ok,
        (true, true) => Status::Warn,
        (true, false) => Status::Fail,
    };
    f.push(
        Group::DataPlane,
        "FERRY403",
        status,
        match gateways.is_empty() {
            false => format!("gateways registered: {}", join(gateways)),
            true => "no gateway registered".into(),
        },
        "start a gateway (`ferry gateway`, or `ferry up`) for this cluster",
    );
}

fn join(items: &[impl fmt::Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
