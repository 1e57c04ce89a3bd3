//! The control plane's store of imports reported by its gateways, each under a lease.
//!
//! Gateways run [`crate::link::LinkSync`] and report the peer's exports here; the store keeps
//! the latest report per peer until it is withdrawn or its lease runs out, and feeds
//! [`crate::snapshot::build_snapshot`]. It must not read the clock or talk to anyone: time is
//! passed in and expiries are found through `handle_timeout` / `poll_timeout`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::model::ClusterId;
use crate::model::ExportedService;

#[derive(Clone, Debug)]
struct Entry {
    services: Vec<ExportedService>,
    expires: Instant,
}

/// Imports per peer cluster, each valid until its lease runs out.
#[derive(Clone, Debug, Default)]
pub struct ImportStore {
    peers: BTreeMap<ClusterId, Entry>,
}

impl ImportStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `peer`'s complete exports, valid until `now + lease`. Returns whether the
    /// imports changed (a new peer, or different services); a refresh alone is not a change.
    pub fn handle_report(
        &mut self,
        now: Instant,
        peer: ClusterId,
        services: Vec<ExportedService>,
        lease: Duration,
    ) -> bool {
        let mut services = services;
        services.sort_by(|a, b| a.name.cmp(&b.name));
        services.dedup_by(|a, b| a.name == b.name);
        let expires = now + lease;
        match self.peers.get_mut(&peer) {
            Some(entry) => {
                entry.expires = expires;
                if entry.services == services {
                    return false;
                }
                entry.services = services;
                true
            }
            None => {
                self.peers.insert(peer, Entry { services, expires });
                true
            }
        }
    }

    /// Forgets `peer`'s imports; returns whether there were any.
    pub fn withdraw(&mut self, peer: &ClusterId) -> bool {
        self.peers.remove(peer).is_some()
    }

    /// Removes and returns the peers whose lease has run out at `now`.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<ClusterId> {
        let expired: Vec<ClusterId> = self
            .peers
            .iter()
            .filter(|(_, e)| e.expires <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &expired {
            self.peers.remove(p);
        }
        expired
    }

    /// When the earliest lease runs out, if any.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers.values().map(|e| e.expires).min()
    }

    /// The current imports per peer.
    pub fn current(&self) -> BTreeMap<ClusterId, Vec<ExportedService>> {
        self.peers
            .iter()
            .map(|(p, e)| (p.clone(), e.services.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, healthy: u32) -> ExportedService {
        ExportedService {
            name: name.parse().unwrap(),
            ports: vec!["http=80/http".parse().unwrap()],
            healthy: [("http".parse().unwrap(), healthy)].into_iter().collect(),
            headless: false,
            endpoints: Vec::new(),
            exported_at_ms: 0,
        }
    }

    fn cid(s: &str) -> ClusterId {
        s.parse().unwrap()
    }

    #[test]
    fn report_refresh_change_and_expiry() {
        let t0 = crate::testutil::t0();
        let lease = Duration::from_secs(5);
        let mut store = ImportStore::new();
        assert_eq!(store.poll_timeout(), None);
        assert!(store.handle_report(t0, cid("west"), vec![svc("web.shop", 1)], lease));
        assert!(!store.handle_report(
            t0 + Duration::from_secs(1),
            cid("west"),
            vec![svc("web.shop", 1)],
            lease
        ));
        assert_eq!(store.poll_timeout(), Some(t0 + Duration::from_secs(6)));
        assert!(store.handle_report(
            t0 + Duration::from_secs(2),
            cid("west"),
            vec![svc("web.shop", 2)],
            lease
        ));
        assert!(store.handle_report(
            t0 + Duration::from_secs(2),
            cid("north"),
            vec![],
            Duration::from_secs(1)
        ));
        assert_eq!(store.poll_timeout(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(
            store.handle_timeout(t0 + Duration::from_secs(2)),
            Vec::<ClusterId>::new()
        );
        assert_eq!(
            store.handle_timeout(t0 + Duration::from_secs(3)),
            vec![cid("north")]
        );
        assert_eq!(store.current().len(), 1);
        assert_eq!(store.current()[&cid("west")], vec![svc("web.shop", 2)]);
        assert_eq!(
            store.handle_timeout(t0 + Duration::from_secs(7)),
            vec![cid("west")]
        );
        assert!(store.current().is_empty());
        assert_eq!(store.poll_timeout(), None);
    }

    #[test]
    fn withdraw_and_order_independence() {
        let t0 = crate::testutil::t0();
        let lease = Duration::from_secs(5);
        let mut store = ImportStore::new();
        assert!(!store.withdraw(&cid("west")));
        assert!(store.handle_report(t0, cid("west"), vec![svc("b.ns", 1), svc("a.ns", 1)], lease));
        assert!(!store.handle_report(t0, cid("west"), vec![svc("a.ns", 1), svc("b.ns", 1)], lease));
        assert!(store.withdraw(&cid("west")));
        assert!(store.current().is_empty());
        assert!(store.handle_timeout(t0 + lease).is_empty());
    }
}
