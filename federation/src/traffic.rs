//! Where each call of a service goes and what happens when it fails: the per-service
//! traffic policy (a domain type, [`crate::model::traffic`]), the decision that groups a plan's hops under it
//! ([`decide`]: header routes, the split, locality), the balancer that picks within a group
//! ([`balance`]: P2C over peak-EWMA), outlier ejection ([`outlier`]) and retries within a
//! budget ([`retry`]).
//!
//! Pure like the rest of the crate: the node proxy keeps the live statistics (estimates,
//! in-flight counts, failure records, budgets) and passes time, headers and random numbers
//! in. It must not do I/O.

pub mod balance;
pub mod decide;
pub mod outlier;
pub mod retry;

pub use crate::model::traffic as policy;
pub use crate::model::{HeaderRoute, InvalidPolicy, RetryOn, Split, TrafficPolicy};
pub use balance::{pick, Load, PeakEwma};
pub use decide::{decide, CallFacts, Decision, Reason, Unroutable};
pub use outlier::{Outlier, OutlierConfig};
pub use retry::{backoff, may_retry, Attempt, Failure, RetryBudget};

#[cfg(test)]
mod tests;
