//! Retries: whether a failed attempt may be sent again ([`may_retry`]), within a budget
//! that bounds retries to a fraction of calls plus a few per second ([`RetryBudget`], as
//! Linkerd's), after a jittered backoff ([`backoff`]).
//!
//! Pure: time and random numbers are passed in.

use std::time::{Duration, Instant};

use crate::model::{RetryOn, TrafficPolicy};

/// What a request had done when its attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// The method is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE) or the call is
    /// gRPC (whose `UNAVAILABLE` promises the call was not processed).
    pub idempotent: bool,
    /// Some of the request's body had left for the server: it cannot be replayed unless
    /// the proxy kept it.
    pub body_sent: bool,
    /// The body can be sent again (the proxy kept all of it).
    pub replayable: bool,
}

/// How an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No connection or stream could be made: nothing reached a server.
    Connect,
    /// The connection or stream reset before a response.
    Reset,
    /// A response with this status (5xx).
    Status(u16),
    /// A gRPC response with this status code.
    Grpc(u32),
}

/// The gRPC `UNAVAILABLE` code.
pub const GRPC_UNAVAILABLE: u32 = 14;

/// Whether an attempt that failed with `failure` may be sent again under `policy`, not
/// counting the budget or the attempts left.
pub fn may_retry(policy: Option<&TrafficPolicy>, attempt: Attempt, failure: Failure) -> bool {
    let body_ok = !attempt.body_sent || attempt.replayable;
    match failure {
        // Nothing reached a server: always safe, and not a policy's choice.
        Failure::Connect => body_ok,
        _ if !body_ok => false,
        Failure::Reset => {
            attempt.idempotent && policy.is_some_and(|p| p.retries_on(RetryOn::Reset))
        }
        Failure::Status(s) => {
            (500..600).contains(&s)
                && attempt.idempotent
                && policy.is_some_and(|p| p.retries_on(RetryOn::ServerError))
        }
        Failure::Grpc(code) => {
            code == GRPC_UNAVAILABLE && policy.is_some_and(|p| p.retries_on(RetryOn::Unavailable))
        }
    }
}

/// Retries allowed per call over the window.
pub const BUDGET_RATIO: f64 = 0.2;
/// Retries allowed per second beyond the ratio, so a quiet service can still retry.
pub const BUDGET_MIN_PER_SECOND: u32 = 10;
/// The window the budget counts over.
pub const BUDGET_WINDOW: Duration = Duration::from_secs(10);
const SLOTS: usize = 10;

/// Bounds retries to [`BUDGET_RATIO`] of the calls of the last [`BUDGET_WINDOW`] plus
/// [`BUDGET_MIN_PER_SECOND`] per second of it, so retries cannot multiply the load on a
/// failing service.
#[derive(Clone, Debug)]
pub struct RetryBudget {
    start: Instant,
    /// Per slot of a second: (its index since `start`, calls, retries).
    slots: [(u64, u32, u32); SLOTS],
}

impl RetryBudget {
    /// An empty budget at `now`.
    pub fn new(now: Instant) -> RetryBudget {
        RetryBudget {
            start: now,
            slots: [(u64::MAX, 0, 0); SLOTS],
        }
    }

    /// Counts a call (not a retry) at `now`.
    pub fn deposit(&mut self, now: Instant) {
        let slot = self.slot(now);
        slot.1 = slot.1.saturating_add(1);
    }

    /// Takes one retry at `now` if the budget has room; `false` means do not retry.
    pub fn withdraw(&mut self, now: Instant) -> bool {
        let current = self.index(now);
        let live = |s: &&(u64, u32, u32)| {
            s.0 != u64::MAX && s.0 <= current && current - s.0 < SLOTS as u64
        };
        let calls: u64 = self.slots.iter().filter(live).map(|s| u64::from(s.1)).sum();
        let retries: u64 = self.slots.iter().filter(live).map(|s| u64::from(s.2)).sum();
        let allowed = (calls as f64 * BUDGET_RATIO) as u64
            + u64::from(BUDGET_MIN_PER_SECOND) * BUDGET_WINDOW.as_secs();
        if retries >= allowed {
            return false;
        }
        let slot = self.slot(now);
        slot.2 = slot.2.saturating_add(1);
        true
    }

    fn index(&self, now: Instant) -> u64 {
        let per_slot = BUDGET_WINDOW.as_nanos() / SLOTS as u128;
        (now.saturating_duration_since(self.start).as_nanos() / per_slot) as u64
    }

    fn slot(&mut self, now: Instant) -> &mut (u64, u32, u32) {
        let index = self.index(now);
        let slot = &mut self.slots[(index % SLOTS as u64) as usize];
        if slot.0 != index {
            *slot = (index, 0, 0);
        }
        slot
    }
}

/// The wait before retry number `n` (1 for the first): 25 ms doubling to at most 250 ms,
/// with "full jitter" from `random` (any `u32`), so retries of many callers spread out.
pub fn backoff(n: u32, random: u32) -> Duration {
    let ceiling = Duration::from_millis(25)
        .saturating_mul(1 << n.saturating_sub(1).min(4))
        .min(Duration::from_millis(250));
    ceiling.mul_f64(f64::from(random) / f64::from(u32::MAX))
}
