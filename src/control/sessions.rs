//! What this cluster's gateways last said about each link session: round trip, when the
//! peer was last heard from, since when the link is up, the peer's certificate
//! fingerprints, and the last thing that went wrong. Shown by `ferry gateways` and
//! `ferry link status`; kept apart from the snapshot (it changes every second and no role
//! routes on it).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ferry_federation::ClusterId;

use super::ControlPlane;

/// One peer's link session, as last reported.
#[derive(Clone, Debug, Default)]
pub struct SessionView {
    pub rtt: Duration,
    /// When a gateway last reported the session alive.
    pub last_seen: Option<SystemTime>,
    /// When the session last came up (None while down).
    pub up_since: Option<SystemTime>,
    /// SHA-256 of the peer gateway's leaf certificate and of its cluster CA (hex).
    pub peer_cert: String,
    pub peer_ca: String,
    /// SHA-256 of each root of the peer's trust bundle (hex), from its hello.
    pub peer_roots: Vec<String>,
    /// The last failure and when.
    pub last_error: Option<(SystemTime, String)>,
}

/// Every peer's session view.
#[derive(Default)]
pub(super) struct Sessions(BTreeMap<ClusterId, SessionView>);

/// What a gateway reported about a live session.
pub struct SessionReport {
    pub rtt: Duration,
    pub peer_cert: String,
    pub peer_ca: String,
    pub peer_roots: Vec<String>,
}

impl ControlPlane {
    /// A gateway reports `peer`'s session alive.
    pub fn note_session(&self, peer: &ClusterId, report: SessionReport) {
        let now = SystemTime::now();
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let view = sessions.0.entry(peer.clone()).or_default();
        view.rtt = report.rtt;
        view.last_seen = Some(now);
        view.up_since.get_or_insert(now);
        if !report.peer_cert.is_empty() {
            view.peer_cert = report.peer_cert;
            view.peer_ca = report.peer_ca;
        }
        if !report.peer_roots.is_empty() {
            view.peer_roots = report.peer_roots;
        }
    }

    /// `peer`'s session is down, for `why`.
    pub fn note_session_down(&self, peer: &ClusterId, why: &str) {
        let mut sessions = self.sessions.lock().expect("sessions lock");
        let view = sessions.0.entry(peer.clone()).or_default();
        view.up_since = None;
        // The next session's hello says afresh which roots the peer holds.
        view.peer_roots.clear();
        view.last_error = Some((SystemTime::now(), why.to_string()));
    }

    /// The session view of `peer` (default when never reported).
    pub fn session(&self, peer: &ClusterId) -> SessionView {
        let sessions = self.sessions.lock().expect("sessions lock");
        sessions.0.get(peer).cloned().unwrap_or_default()
    }

    /// Forgets `peer` (its link was removed).
    pub fn forget_session(&self, peer: &ClusterId) {
        self.sessions.lock().expect("sessions lock").0.remove(peer);
    }
}
