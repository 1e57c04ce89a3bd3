//! The live side of balancing: per hop (a local endpoint or a remote cluster) a peak-EWMA
//! latency estimate, the calls in flight and a failure record, and the order in which one
//! call tries the hops of a [`Decision`]. The choices themselves are
//! `ferry_federation::traffic`'s (P2C, ejection); this module only keeps the numbers and
//! draws the random ones.
//!
//! It must not decide policy, and it never blocks: one short lock per call.

use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_federation::traffic::{pick, Decision, Load, Outlier, OutlierConfig, PeakEwma};
use ferry_federation::{ClusterId, Hop, MeshSnapshot, RemoteState, ServiceName};

/// Stats of hops unused this long are dropped (the set of hops follows the snapshot).
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// The stats table is swept when it grows past this many hops.
const SWEEP_ABOVE: usize = 4096;

/// What a hop's stats are kept under: a local endpoint by its address (whatever service
/// reaches it), a remote cluster per service (one service failing there must not eject the
/// cluster for the others).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum HopKey {
    Local(std::net::SocketAddr),
    Remote(ClusterId, ServiceName),
}

impl HopKey {
    pub(crate) fn of(service: &ServiceName, hop: &Hop) -> HopKey {
        match hop {
            Hop::Local(addr) => HopKey::Local(*addr),
            Hop::Remote { cluster, .. } => HopKey::Remote(cluster.clone(), service.clone()),
        }
    }
}

struct Stats {
    ewma: PeakEwma,
    in_flight: u32,
    outlier: Outlier,
    last_used: Instant,
}

impl Stats {
    fn new(now: Instant) -> Stats {
        Stats {
            ewma: PeakEwma::new(now),
            in_flight: 0,
            outlier: Outlier::default(),
            last_used: now,
        }
    }
}

/// Per-hop statistics shared by every call of this node proxy.
pub(crate) struct Balancer {
    stats: Mutex<HashMap<HopKey, Stats>>,
    outlier: OutlierConfig,
    /// Calls one hop may have in flight (circuit breaking).
    max_in_flight: u32,
}

impl Balancer {
    pub(crate) fn new(outlier: OutlierConfig, max_in_flight: u32) -> Arc<Balancer> {
        Arc::new(Balancer {
            stats: Mutex::new(HashMap::default()),
            outlier,
            max_in_flight,
        })
    }

    /// The hops of `decision` in the order one call tries them: group by group (groups
    /// with every hop ejected last), each group drawn by P2C without replacement (so the
    /// next try within a group is the next best of what is left). Hops at their in-flight limit are left out; empty when every
    /// hop is.
    pub(crate) fn order(
        &self,
        service: &ServiceName,
        decision: &Decision,
        now: Instant,
    ) -> Vec<Hop> {
        let mut stats = self.stats.lock().expect("balancer lock");
        if stats.len() > SWEEP_ABOVE {
            stats.retain(|_, s| s.in_flight > 0 || now.duration_since(s.last_used) < FORGET_AFTER);
        }
        let load = |hop: &Hop| match stats.get(&HopKey::of(service, hop)) {
            Some(s) => Load {
                cost: s.ewma.cost(now, s.in_flight),
                ejected: s.outlier.is_ejected(now),
                full: s.in_flight >= self.max_in_flight,
            },
            None => Load {
                cost: PeakEwma::new(now).cost(now, 0),
                ejected: false,
                full: false,
            },
        };
        // Only the ejection record: no latency estimate to compute.
        let ejected = |hop: &Hop| {
            stats
                .get(&HopKey::of(service, hop))
                .is_some_and(|s| s.outlier.is_ejected(now))
        };
        let mut order = Vec::with_capacity(decision.groups.iter().map(Vec::len).sum());
        if let [group] = decision.groups.as_slice() {
            if let [hop] = group.as_slice() {
                // One candidate (one endpoint, or one cluster): nothing to draw; it is
                // tried unless it is full.
                if !load(hop).full {
                    order.push(hop.clone());
                }
                return order;
            }
        }
        // A group whose every hop is ejected goes after the others (a dead nearest cluster
        // is not tried first on every call), but stays: ejection never removes the last
        // candidates. The sort is stable: groups keep their order otherwise.
        let mut groups: Vec<(bool, &Vec<Hop>)> = decision
            .groups
            .iter()
            .map(|group| (group.iter().all(ejected), group))
            .collect();
        groups.sort_by_key(|(ejected, _)| *ejected);
        let (mut left, mut loads): (Vec<&Hop>, Vec<Load>) = (Vec::new(), Vec::new());
        for (_, group) in groups {
            left.clear();
            left.extend(group);
            while !left.is_empty() {
                loads.clear();
                loads.extend(left.iter().map(|hop| load(hop)));
                // None: what is left of the group is full.
                let Some(i) = pick(&loads, fastrand::u32(..), fastrand::u32(..)) else {
                    break;
                };
                order.push(left.swap_remove(i).clone());
            }
        }
        order
    }

    /// Counts a call to `hop` as in flight until the returned guard is dropped.
    pub(crate) fn start(
        self: &Arc<Self>,
        service: &ServiceName,
        hop: &Hop,
        now: Instant,
    ) -> Attempt {
        let key = HopKey::of(service, hop);
        let mut stats = self.stats.lock().expect("balancer lock");
        let s = stats.entry(key.clone()).or_insert_with(|| Stats::new(now));
        s.in_flight += 1;
        s.last_used = now;
        Attempt {
            balancer: self.clone(),
            key,
            started: now,
        }
    }

    /// Clears the failure records of hops that `next` shows healthy again after `previous`
    /// did not: fresh health evidence outweighs past failures, so traffic returns to a
    /// recovered endpoint (or cluster) as soon as its probe passes, not when an ejection
    /// would have ended.
    pub(crate) fn forgive_recovered(&self, previous: &MeshSnapshot, next: &MeshSnapshot) {
        let mut recovered = Vec::new();
        for service in &next.services {
            let before = previous.service(&service.name);
            for endpoint in service.local.iter().filter(|e| e.healthy) {
                let was_healthy = before
                    .is_some_and(|b| b.local.iter().any(|e| e.addr == endpoint.addr && e.healthy));
                if !was_healthy {
                    recovered.extend(
                        service
                            .ports
                            .iter()
                            .map(|p| HopKey::Local(endpoint.addr.target(p))),
                    );
                }
            }
            for remote in &service.remote {
                let healthy = |r: &RemoteState| r.healthy.values().any(|n| *n > 0);
                let was_healthy = before.is_some_and(|b| {
                    b.remote
                        .iter()
                        .any(|r| r.cluster == remote.cluster && healthy(r))
                });
                if healthy(remote) && !was_healthy {
                    recovered.push(HopKey::Remote(remote.cluster.clone(), service.name.clone()));
                }
            }
        }
        if recovered.is_empty() {
            return;
        }
        let mut stats = self.stats.lock().expect("balancer lock");
        for key in recovered {
            if let Some(s) = stats.get_mut(&key) {
                s.outlier = Outlier::default();
            }
        }
    }

    /// Runs `f` on the stats of `key`, if it still has them.
    fn with(&self, key: &HopKey, f: impl FnOnce(&mut Stats)) {
        let mut stats = self.stats.lock().expect("balancer lock");
        if let Some(s) = stats.get_mut(key) {
            f(s);
        }
    }
}

/// One call's use of one hop: in flight from [`Balancer::start`] until dropped.
pub(crate) struct Attempt {
    balancer: Arc<Balancer>,
    key: HopKey,
    started: Instant,
}

impl Attempt {
    /// The hop answered (connected, or admitted the stream): its latency counts toward the
    /// estimate and its failure run ends. The call stays in flight until dropped.
    pub(crate) fn answered(&self, now: Instant) {
        let latency = now.saturating_duration_since(self.started);
        let config = self.balancer.outlier;
        self.balancer.with(&self.key, |s| {
            s.ewma.observe(now, latency);
            s.outlier.record(now, true, &config);
        });
    }

    /// The hop failed the call (no connection, refused, cut before answering).
    pub(crate) fn failed(&self, now: Instant) {
        let config = self.balancer.outlier;
        self.balancer.with(&self.key, |s| {
            if let Some(until) = s.outlier.record(now, false, &config) {
                metrics::counter!("ferry_proxy_ejections_total").increment(1);
                tracing::info!(hop = ?self.key, ejected_for = ?until.saturating_duration_since(now), "hop ejected after consecutive failures");
            }
        });
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.balancer
            .with(&self.key, |s| s.in_flight = s.in_flight.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_federation::traffic::Reason;

    fn svc() -> ServiceName {
        "web.shop".parse().unwrap()
    }

    fn local(port: u16) -> Hop {
        Hop::Local(std::net::SocketAddr::from(([10, 0, 0, 1], port)))
    }

    fn remote(cluster: &str) -> Hop {
        Hop::Remote {
            cluster: cluster.parse().unwrap(),
            port: "tcp".parse().unwrap(),
            gateways: vec![std::net::SocketAddr::from(([192, 0, 2, 1], 4433))],
            endpoint: None,
        }
    }

    fn decision(groups: Vec<Vec<Hop>>) -> Decision {
        Decision {
            groups,
            reason: Reason::Failover,
        }
    }

    /// Gives `hop` one answered call of `latency` at `now`.
    fn answered(b: &Arc<Balancer>, hop: &Hop, now: Instant, latency: Duration) {
        let attempt = b.start(&svc(), hop, now);
        attempt.answered(now + latency);
    }

    #[test]
    fn groups_keep_their_order_and_every_hop_is_tried_once() {
        let b = Balancer::new(OutlierConfig::default(), u32::MAX);
        let d = decision(vec![
            vec![local(1), local(2), local(3)],
            vec![remote("west")],
        ]);
        let now = Instant::now();
        for _ in 0..50 {
            let order = b.order(&svc(), &d, now);
            assert_eq!(order.len(), 4);
            assert_eq!(order[3], remote("west"));
            let mut first: Vec<_> = order[..3].to_vec();
            first.sort_by_key(|h| format!("{h}"));
            assert_eq!(first, vec![local(1), local(2), local(3)]);
        }
    }

    #[test]
    fn the_slower_hop_and_the_busier_hop_go_second() {
        let b = Balancer::new(OutlierConfig::default(), u32::MAX);
        let d = decision(vec![vec![local(1), local(2)]]);
        let now = Instant::now();
        answered(&b, &local(1), now, Duration::from_millis(200));
        answered(&b, &local(2), now, Duration::from_millis(2));
        for _ in 0..20 {
            assert_eq!(b.order(&svc(), &d, now)[0], local(2), "lower latency first");
        }
        // In-flight calls weigh the estimate: 2 ms × 201 calls costs more than 200 ms × 1.
        let busy: Vec<Attempt> = (0..200).map(|_| b.start(&svc(), &local(2), now)).collect();
        assert_eq!(
            b.order(&svc(), &d, now)[0],
            local(1),
            "the fast hop is saturated"
        );
        drop(busy);
        assert_eq!(
            b.order(&svc(), &d, now)[0],
            local(2),
            "calls that ended no longer count"
        );
    }

    #[test]
    fn consecutive_failures_eject_a_hop_behind_the_others_but_not_out() {
        let config = OutlierConfig {
            consecutive: 3,
            base: Duration::from_secs(5),
            max: Duration::from_secs(30),
        };
        let b = Balancer::new(config, u32::MAX);
        let d = decision(vec![vec![local(1), local(2)]]);
        let now = Instant::now();
        // Local 1 is the faster one, until it fails three times in a row.
        answered(&b, &local(1), now, Duration::from_millis(1));
        answered(&b, &local(2), now, Duration::from_millis(50));
        assert_eq!(b.order(&svc(), &d, now)[0], local(1));
        for _ in 0..3 {
            b.start(&svc(), &local(1), now).failed(now);
        }
        for _ in 0..20 {
            assert_eq!(
                b.order(&svc(), &d, now),
                vec![local(2), local(1)],
                "ejected: last, still there"
            );
        }
        // The only hop of a group is used even while ejected.
        assert_eq!(
            b.order(&svc(), &decision(vec![vec![local(1)]]), now),
            vec![local(1)]
        );
        // The ejection ends.
        let later = now + Duration::from_secs(6);
        answered(&b, &local(1), later, Duration::from_millis(1));
        assert_eq!(b.order(&svc(), &d, later)[0], local(1));
    }

    #[test]
    fn a_hop_at_its_in_flight_limit_is_left_out_until_a_call_ends() {
        let b = Balancer::new(OutlierConfig::default(), 2);
        let d = decision(vec![vec![local(1), local(2)], vec![remote("west")]]);
        let now = Instant::now();
        let one: Vec<Attempt> = (0..2).map(|_| b.start(&svc(), &local(1), now)).collect();
        assert!(!b.order(&svc(), &d, now).contains(&local(1)));
        let two: Vec<Attempt> = (0..2).map(|_| b.start(&svc(), &local(2), now)).collect();
        assert_eq!(
            b.order(&svc(), &d, now),
            vec![remote("west")],
            "full hops: on to the next group"
        );
        let west: Vec<Attempt> = (0..2)
            .map(|_| b.start(&svc(), &remote("west"), now))
            .collect();
        assert!(
            b.order(&svc(), &d, now).is_empty(),
            "everything full: the caller answers 503"
        );
        drop((one, west));
        let order = b.order(&svc(), &d, now);
        assert_eq!(order, vec![local(1), remote("west")]);
        drop(two);
    }

    #[test]
    fn a_group_whose_every_hop_is_ejected_goes_last() {
        let config = OutlierConfig {
            consecutive: 2,
            ..OutlierConfig::default()
        };
        let b = Balancer::new(config, u32::MAX);
        let d = decision(vec![vec![remote("west")], vec![remote("north")]]);
        let now = Instant::now();
        assert_eq!(
            b.order(&svc(), &d, now),
            vec![remote("west"), remote("north")]
        );
        for _ in 0..2 {
            b.start(&svc(), &remote("west"), now).failed(now);
        }
        assert_eq!(
            b.order(&svc(), &d, now),
            vec![remote("north"), remote("west")]
        );
        // Both ejected: the decision's own order again, nothing removed.
        for _ in 0..2 {
            b.start(&svc(), &remote("north"), now).failed(now);
        }
        assert_eq!(
            b.order(&svc(), &d, now),
            vec![remote("west"), remote("north")]
        );
    }
}
