//! Outlier detection: a hop (a local endpoint or a remote cluster) that fails several calls
//! in a row is ejected for a while, longer each time it is ejected again, as Envoy does.
//! Whether an ejected hop may still be used when nothing else is left is the balancer's
//! rule ([`super::balance::pick`]), not this one's.
//!
//! Pure: the shell keeps one [`Outlier`] per hop and passes the time in.

use std::time::{Duration, Instant};

/// When a hop is ejected and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutlierConfig {
    /// Failures in a row (connect failures, resets, 5xx) that eject a hop.
    pub consecutive: u32,
    /// The first ejection's length; each further one doubles it.
    pub base: Duration,
    /// The longest ejection.
    pub max: Duration,
}

impl Default for OutlierConfig {
    fn default() -> OutlierConfig {
        OutlierConfig {
            consecutive: 5,
            base: Duration::from_secs(5),
            max: Duration::from_secs(60),
        }
    }
}

/// One hop's failure record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outlier {
    consecutive: u32,
    /// Ejections in a row, without a success between.
    ejections: u32,
    until: Option<Instant>,
}

impl Outlier {
    /// Records a call's outcome at `now`; returns the end of a new ejection if this
    /// failure started one.
    pub fn record(&mut self, now: Instant, ok: bool, config: &OutlierConfig) -> Option<Instant> {
        if ok {
            self.consecutive = 0;
            self.ejections = 0;
            return None;
        }
        if self.is_ejected(now) {
            // A call that went to an ejected hop (nothing else was left) does not stretch
            // the ejection.
            return None;
        }
        self.consecutive += 1;
        if self.consecutive < config.consecutive.max(1) {
            return None;
        }
        self.consecutive = 0;
        let factor = 1u32 << self.ejections.min(16);
        let length = config.base.saturating_mul(factor).min(config.max);
        self.ejections = self.ejections.saturating_add(1);
        let until = now + length;
        self.until = Some(until);
        Some(until)
    }

    /// Whether the hop is ejected at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.until.is_some_and(|until| now < until)
    }
}
