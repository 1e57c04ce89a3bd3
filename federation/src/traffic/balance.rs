//! Picking one hop of a group: power of two choices over a peak-EWMA latency estimate
//! weighted by the requests in flight, as Linkerd and Finagle balance. The estimate jumps
//! up to a slow response at once and decays back over [`DECAY`], so a struggling endpoint
//! is avoided quickly and tried again once it recovers.
//!
//! Pure: the shell keeps one [`PeakEwma`] and an in-flight count per hop and passes the
//! time and two random indices in.

use std::time::{Duration, Instant};

/// How fast an estimate forgets: the weight of the past halves about every 7 s.
pub const DECAY: Duration = Duration::from_secs(10);
/// The estimate of a hop that has not answered yet: cheap enough to be tried, not so
/// cheap that every call piles onto it.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// A peak-sensitive moving average of a hop's latency.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeakEwma {
    /// Nanoseconds.
    estimate: f64,
    stamp: Instant,
}

impl PeakEwma {
    /// A fresh estimate at `now`.
    pub fn new(now: Instant) -> PeakEwma {
        PeakEwma {
            estimate: DEFAULT_RTT.as_nanos() as f64,
            stamp: now,
        }
    }

    /// Takes in one observed latency (a response's, or a connection's setup): a slower
    /// one replaces the estimate, a faster one moves it by how long it has been since the
    /// last.
    pub fn observe(&mut self, now: Instant, rtt: Duration) {
        let rtt = rtt.as_nanos() as f64;
        if rtt > self.estimate {
            self.estimate = rtt;
        } else {
            let w = self.weight(now);
            self.estimate = self.estimate * w + rtt * (1.0 - w);
        }
        self.stamp = self.stamp.max(now);
    }

    /// The estimate at `now`, in nanoseconds: it decays toward zero while nothing is
    /// observed, so an idle hop gets tried again.
    pub fn estimate(&self, now: Instant) -> f64 {
        self.estimate * self.weight(now)
    }

    /// The cost of sending one more call to this hop with `in_flight` already there.
    pub fn cost(&self, now: Instant, in_flight: u32) -> f64 {
        // An estimate of zero would make every hop equal however loaded; one ns keeps the
        // in-flight count deciding.
        self.estimate(now).max(1.0) * (f64::from(in_flight) + 1.0)
    }

    fn weight(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.stamp).as_nanos() as f64;
        (-elapsed / DECAY.as_nanos() as f64).exp()
    }
}

/// What the balancer knows of one hop of a group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    /// [`PeakEwma::cost`] now.
    pub cost: f64,
    /// Whether outlier detection has ejected it.
    pub ejected: bool,
    /// Whether it is at its in-flight or pending limit (circuit breaking).
    pub full: bool,
}

/// Picks one of `loads` (the hops of a group) by two random draws `a` and `b`: the cheaper
/// of the two usable hops they land on. Ejected hops are skipped unless every hop of the
/// group is ejected (ejection never removes the last candidates); full hops are never
/// picked. `None` when every hop is full (the caller answers 503) or `loads` is empty.
pub fn pick(loads: &[Load], a: u32, b: u32) -> Option<usize> {
    let all_ejected = loads.iter().filter(|l| !l.full).all(|l| l.ejected);
    let usable: Vec<usize> = (0..loads.len())
        .filter(|i| !loads[*i].full && (all_ejected || !loads[*i].ejected))
        .collect();
    match usable.len() {
        0 => None,
        1 => Some(usable[0]),
        n => {
            let first = a as usize % n;
            // The second draw lands on a different hop.
            let second = (first + 1 + b as usize % (n - 1)) % n;
            let (x, y) = (usable[first], usable[second]);
            Some(if loads[y].cost < loads[x].cost { y } else { x })
        }
    }
}
