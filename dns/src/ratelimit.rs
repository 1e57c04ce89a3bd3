//! Per-source query rate limit: a token bucket per client address (IPv4 /32, IPv6 /64).
//!
//! Over the limit, UDP queries are mostly dropped; every second one gets a tiny truncated
//! reply instead ("slip", as in BIND's response rate limiting), so a real client behind a
//! spoofed flood can still get through over TCP. The table of buckets is bounded: when it
//! fills, idle buckets are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Most sources tracked at once.
const MAX_SOURCES: usize = 65_536;
/// The bucket shared by new sources while the table is full of busy ones.
const OVERFLOW: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// What to do with one query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Under the limit: answer.
    Allow,
    /// Over the limit: send a header-only truncated reply.
    Slip,
    /// Over the limit: send nothing.
    Drop,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    over: u32,
}

/// Token buckets keyed by source.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl RateLimiter {
    /// `per_second` queries per source, with bursts of twice that. `None` when 0 (unlimited).
    pub fn new(per_second: u32) -> Option<RateLimiter> {
        (per_second > 0).then(|| RateLimiter {
            rate: f64::from(per_second),
            burst: 2.0 * f64::from(per_second),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Charges one query from `src` at `now`.
    pub fn check(&self, src: IpAddr, now: Instant) -> Verdict {
        let mut key = source_key(src);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_SOURCES && !buckets.contains_key(&key) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| refill(b, now, rate, burst) < burst);
            if buckets.len() >= MAX_SOURCES {
                // Every tracked source is busy: newcomers share one bucket rather than
                // resetting everyone's (which would let a wide flood reset its own limit).
                key = OVERFLOW;
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
            over: 0,
        });
        refill(bucket, now, self.rate, self.burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Verdict::Allow;
        }
        bucket.over = bucket.over.wrapping_add(1);
        if bucket.over.is_multiple_of(2) {
            Verdict::Slip
        } else {
            Verdict::Drop
        }
    }
}

fn refill(bucket: &mut Bucket, now: Instant, rate: f64, burst: f64) -> f64 {
    let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
    bucket.last = now;
    bucket.tokens
}

/// IPv4 sources count one by one (also when they arrive IPv4-mapped on an IPv6 socket);
/// IPv6 sources by /64, since one host holds a whole /64.
pub fn source_key(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(_) => src,
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            IpAddr::V4(v6.to_ipv4_mapped().expect("checked"))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn zero_means_unlimited() {
        assert!(RateLimiter::new(0).is_none());
    }

    #[test]
    fn a_noisy_source_is_limited_and_others_are_not() {
        let rl = RateLimiter::new(10).unwrap();
        let t = Instant::now();
        let noisy: IpAddr = "192.0.2.1".parse().unwrap();
        let quiet: IpAddr = "192.0.2.2".parse().unwrap();
        let allowed = (0..100)
            .filter(|_| rl.check(noisy, t) == Verdict::Allow)
            .count();
        assert_eq!(allowed, 20, "the burst is twice the rate");
        let verdicts: Vec<_> = (0..4).map(|_| rl.check(noisy, t)).collect();
        assert!(verdicts.contains(&Verdict::Slip) && verdicts.contains(&Verdict::Drop));
        assert_eq!(rl.check(quiet, t), Verdict::Allow);
        // Tokens come back with time.
        assert_eq!(
            rl.check(noisy, t + Duration::from_millis(200)),
            Verdict::Allow
        );
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let rl = RateLimiter::new(1).unwrap();
        let t = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(rl.check(a, t), Verdict::Allow);
        assert_eq!(rl.check(b, t), Verdict::Allow);
        assert_ne!(rl.check(a, t), Verdict::Allow);
    }

    #[test]
    fn the_table_stays_bounded() {
        let rl = RateLimiter::new(5).unwrap();
        let t = Instant::now();
        for i in 1..=(MAX_SOURCES as u32) {
            rl.check(IpAddr::V4(i.into()), t);
        }
        assert_eq!(rl.buckets.lock().unwrap().len(), MAX_SOURCES);
        // Newcomers now share the overflow bucket: its burst runs out.
        let newcomers = (0..100u32)
            .map(|i| rl.check(IpAddr::V4((0x7000_0000 + i).into()), t))
            .filter(|v| *v == Verdict::Allow)
            .count();
        assert_eq!(newcomers, 10);
        assert!(rl.buckets.lock().unwrap().len() <= MAX_SOURCES + 1);
    }

    #[test]
    fn ipv4_mapped_sources_are_keyed_as_ipv4() {
        let rl = RateLimiter::new(1).unwrap();
        let t = Instant::now();
        let a: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "::ffff:192.0.2.2".parse().unwrap();
        assert_eq!(rl.check(a, t), Verdict::Allow);
        assert_eq!(rl.check(a, t), Verdict::Allow);
        assert_ne!(rl.check(a, t), Verdict::Allow);
        assert_eq!(
            rl.check(b, t),
            Verdict::Allow,
            "another IPv4 client is not throttled"
        );
    }
}
