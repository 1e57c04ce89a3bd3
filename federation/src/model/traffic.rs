//! A service's traffic policy, set in the calling cluster: where its calls may go (the
//! split), header routes for canaries, the timeout and retries. Parsed from the text a user
//! types (`--weights east=90,west=10`, `--route 'x-canary=1 -> west'`, `--retry-on
//! 5xx,reset`) into validated values; nothing here decides a request.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{shorten, ClusterId, InvalidName, ServiceName};

/// Most clusters one weighted split may name.
pub const MAX_WEIGHTED_CLUSTERS: usize = 16;
/// Largest weight of one cluster (weights are relative; percentages fit).
pub const MAX_WEIGHT: u32 = 10_000;
/// Most header routes of one service.
pub const MAX_ROUTES: usize = 16;
/// Most retries of one request.
pub const MAX_RETRIES: u8 = 5;
/// Longest header value a route matches.
pub const MAX_ROUTE_VALUE: usize = 256;
/// The longest timeout a policy may set.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(3600);

/// Where a service's calls may go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Healthy local endpoints first, then the other clusters that export the service,
    /// nearest first (the default).
    #[default]
    Failover,
    /// Only this cluster's endpoints.
    LocalOnly,
    /// Only the named cluster's endpoints (this cluster's name means local endpoints).
    Pinned(ClusterId),
    /// Each call goes to one of these clusters in proportion to its weight, among those
    /// with a healthy endpoint; the others are its failover. Weight 0 makes a cluster
    /// failover only.
    Weights(BTreeMap<ClusterId, u32>),
}

/// What may be retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryOn {
    /// A 5xx response (HTTP), when the request is safe to send again.
    #[serde(rename = "5xx")]
    ServerError,
    /// The connection reset or closed before a response, when the request is safe to send
    /// again.
    Reset,
    /// gRPC `UNAVAILABLE`: the server says it did not process the call.
    Unavailable,
}

impl RetryOn {
    /// Every condition, in their text order.
    pub const ALL: [RetryOn; 3] = [RetryOn::ServerError, RetryOn::Reset, RetryOn::Unavailable];

    /// The name used in config and on the command line.
    pub fn as_str(&self) -> &'static str {
        match self {
            RetryOn::ServerError => "5xx",
            RetryOn::Reset => "reset",
            RetryOn::Unavailable => "unavailable",
        }
    }
}

/// A canary route: requests whose `header` is exactly `value` go to `cluster` only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRoute {
    /// The header's name, lowercase.
    pub header: String,
    /// The value it must have, byte for byte.
    pub value: String,
    /// Where matching requests go (this cluster's name means local endpoints).
    pub cluster: ClusterId,
}

/// A service's whole policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficPolicy {
    /// The service it applies to.
    pub service: ServiceName,
    /// Where calls may go.
    #[serde(default)]
    pub split: Split,
    /// Header routes, tried in order before the split.
    #[serde(default)]
    pub routes: Vec<HeaderRoute>,
    /// The longest a whole request may take (retries included); `None`: no limit.
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// How many times a failed request may be sent again (within the retry budget).
    #[serde(default)]
    pub retries: u8,
    /// Which failures are retried.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<RetryOn>,
}

fn default_retry_on() -> Vec<RetryOn> {
    vec![RetryOn::Reset, RetryOn::Unavailable]
}

impl TrafficPolicy {
    /// The default policy of `service`: failover, no routes, no timeout, no retries of
    /// requests that reached a server (a connection that could not be made is always tried
    /// elsewhere).
    pub fn new(service: ServiceName) -> TrafficPolicy {
        TrafficPolicy {
            service,
            split: Split::Failover,
            routes: Vec::new(),
            timeout: None,
            retries: 0,
            retry_on: default_retry_on(),
        }
    }

    /// Checks the bounds a policy read from a store or a request must keep (what the
    /// parsers below already ensure for typed input).
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if let Split::Weights(w) = &self.split {
            check_weights(w)?;
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(InvalidPolicy::TooManyRoutes(self.routes.len()));
        }
        for route in &self.routes {
            check_header(&route.header)?;
            check_value(&route.value)?;
        }
        if let Some(t) = self.timeout {
            check_timeout(t)?;
        }
        if self.retries > MAX_RETRIES {
            return Err(InvalidPolicy::TooManyRetries(u32::from(self.retries)));
        }
        Ok(())
    }

    /// Whether `condition` is retried.
    pub fn retries_on(&self, condition: RetryOn) -> bool {
        self.retries > 0 && self.retry_on.contains(&condition)
    }
}

/// A policy, or part of one, that breaks its rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPolicy {
    /// A weights list that could not be read.
    #[error(
        "weights {value:?}: {why}; write them as cluster=weight pairs separated by commas, \
         e.g. east=90,west=10"
    )]
    Weights {
        /// The (shortened) input.
        value: String,
        /// What was wrong.
        why: String,
    },
    /// A weights list naming a cluster twice.
    #[error("weights name cluster {0} twice; give each cluster one weight")]
    DuplicateWeight(ClusterId),
    /// Every weight is zero, or none is given.
    #[error("weights send nothing anywhere; give at least one cluster a weight above 0")]
    NoWeight,
    /// Too many clusters in a weighted split.
    #[error("weights name {0} clusters, more than {MAX_WEIGHTED_CLUSTERS}; split between fewer")]
    TooManyWeights(usize),
    /// A route that could not be read.
    #[error(
        "route {value:?}: {why}; write it as 'header=value -> cluster', e.g. \
         'x-canary=1 -> west'"
    )]
    Route {
        /// The (shortened) input.
        value: String,
        /// What was wrong.
        why: String,
    },
    /// Too many header routes.
    #[error("{0} header routes, more than {MAX_ROUTES}; remove some")]
    TooManyRoutes(usize),
    /// An unknown retry condition.
    #[error("retry condition {0:?} is not one of 5xx, reset, unavailable")]
    RetryOn(String),
    /// Too many retries.
    #[error("{0} retries is more than {MAX_RETRIES}; a retry storm hurts more than it helps")]
    TooManyRetries(u32),
    /// A timeout out of range.
    #[error("timeout {0:?} must be above 0 and at most an hour")]
    Timeout(Duration),
    /// A cluster name that broke its rules.
    #[error(transparent)]
    Cluster(#[from] InvalidName),
}

impl FromStr for Split {
    type Err = InvalidPolicy;

    /// Reads `failover`, `local-only`, `pinned=<cluster>` or `weights=<east=90,west=10>`
    /// (the config file's `split` key).
    fn from_str(s: &str) -> Result<Split, InvalidPolicy> {
        match s.trim() {
            "failover" => Ok(Split::Failover),
            "local-only" => Ok(Split::LocalOnly),
            other => match other.split_once('=') {
                Some(("pinned", cluster)) => Ok(Split::Pinned(cluster.trim().parse()?)),
                Some(("weights", weights)) => parse_weights(weights),
                _ => Err(InvalidPolicy::Weights {
                    value: shorten(s),
                    why: "expected failover, local-only, pinned=<cluster> or \
                          weights=<cluster=weight,...>"
                        .into(),
                }),
            },
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Split::Failover => f.write_str("failover"),
            Split::LocalOnly => f.write_str("local-only"),
            Split::Pinned(c) => write!(f, "pinned={c}"),
            Split::Weights(w) => {
                f.write_str("weights=")?;
                for (i, (c, n)) in w.iter().enumerate() {
                    write!(f, "{}{c}={n}", if i > 0 { "," } else { "" })?;
                }
                Ok(())
            }
        }
    }
}

/// Reads `east=90,west=10` into a weighted split.
pub fn parse_weights(s: &str) -> Result<Split, InvalidPolicy> {
    let bad = |why: &str| InvalidPolicy::Weights {
        value: shorten(s),
        why: why.into(),
    };
    let mut weights = BTreeMap::new();
    for pair in s.split(',').map(str::trim) {
        let (cluster, weight) = pair
            .split_once('=')
            .ok_or_else(|| bad(&format!("{:?} has no '='", shorten(pair))))?;
        let cluster: ClusterId = cluster.trim().parse()?;
        let weight: u32 = weight
            .trim()
            .parse()
            .ok()
            .filter(|w| *w <= MAX_WEIGHT)
            .ok_or_else(|| bad(&format!("the weight of {cluster} is not 0 to {MAX_WEIGHT}")))?;
        if weights.insert(cluster.clone(), weight).is_some() {
            return Err(InvalidPolicy::DuplicateWeight(cluster));
        }
    }
    check_weights(&weights)?;
    Ok(Split::Weights(weights))
}

fn check_weights(weights: &BTreeMap<ClusterId, u32>) -> Result<(), InvalidPolicy> {
    if weights.len() > MAX_WEIGHTED_CLUSTERS {
        return Err(InvalidPolicy::TooManyWeights(weights.len()));
    }
    if weights.values().any(|w| *w > MAX_WEIGHT) {
        return Err(InvalidPolicy::Weights {
            value: String::new(),
            why: format!("a weight is above {MAX_WEIGHT}"),
        });
    }
    if weights.values().all(|w| *w == 0) {
        return Err(InvalidPolicy::NoWeight);
    }
    Ok(())
}

impl FromStr for HeaderRoute {
    type Err = InvalidPolicy;

    /// Reads `x-canary=1 -> west`.
    fn from_str(s: &str) -> Result<HeaderRoute, InvalidPolicy> {
        let bad = |why: &str| InvalidPolicy::Route {
            value: shorten(s),
            why: why.into(),
        };
        let (matcher, cluster) = s.split_once("->").ok_or_else(|| bad("no '->'"))?;
        let (header, value) = matcher
            .trim()
            .split_once('=')
            .ok_or_else(|| bad("no '=' between the header and its value"))?;
        let header = header.trim().to_ascii_lowercase();
        check_header(&header)?;
        let value = value.trim().to_string();
        check_value(&value)?;
        Ok(HeaderRoute {
            header,
            value,
            cluster: cluster.trim().parse()?,
        })
    }
}

impl fmt::Display for HeaderRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={} -> {}", self.header, self.value, self.cluster)
    }
}

/// An HTTP header name (RFC 9110 token), lowercase; pseudo-headers and hop-by-hop headers
/// cannot route.
fn check_header(header: &str) -> Result<(), InvalidPolicy> {
    let bad = |why: &str| InvalidPolicy::Route {
        value: shorten(header),
        why: why.into(),
    };
    if header.is_empty() || header.len() > 64 {
        return Err(bad("the header name must be 1 to 64 characters"));
    }
    let token =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.!#$%&'*+^`|~".contains(c);
    if let Some(c) = header.chars().find(|c| !token(*c)) {
        return Err(bad(&format!("the header name contains {c:?}")));
    }
    if matches!(
        header,
        "connection" | "keep-alive" | "te" | "trailer" | "transfer-encoding" | "upgrade" | "host"
    ) {
        return Err(bad("that header is about the connection, not the request"));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), InvalidPolicy> {
    let bad = |why: &str| InvalidPolicy::Route {
        value: shorten(value),
        why: why.into(),
    };
    if value.len() > MAX_ROUTE_VALUE {
        return Err(bad(&format!("the value is longer than {MAX_ROUTE_VALUE}")));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(bad(&format!("the value contains {c:?}")));
    }
    Ok(())
}

fn check_timeout(t: Duration) -> Result<(), InvalidPolicy> {
    if t.is_zero() || t > MAX_TIMEOUT {
        return Err(InvalidPolicy::Timeout(t));
    }
    Ok(())
}

/// Reads `5xx,reset,unavailable`.
pub fn parse_retry_on(s: &str) -> Result<Vec<RetryOn>, InvalidPolicy> {
    let mut on = Vec::new();
    for word in s.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let condition = RetryOn::ALL
            .into_iter()
            .find(|c| c.as_str() == word)
            .ok_or_else(|| InvalidPolicy::RetryOn(shorten(word)))?;
        if !on.contains(&condition) {
            on.push(condition);
        }
    }
    on.sort();
    Ok(on)
}

/// Checks a timeout and a retry count typed by a user.
pub fn checked_limits(timeout: Option<Duration>, retries: u32) -> Result<u8, InvalidPolicy> {
    if let Some(t) = timeout {
        check_timeout(t)?;
    }
    u8::try_from(retries)
        .ok()
        .filter(|r| *r <= MAX_RETRIES)
        .ok_or(InvalidPolicy::TooManyRetries(retries))
}

/// A change to a service's policy: what a `ferry policy set` or a config `[[policy]]`
/// says; what it leaves out stays as it was.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PolicyEdit {
    /// A new split.
    pub split: Option<Split>,
    /// New header routes (replacing all of them; empty clears them).
    pub routes: Option<Vec<HeaderRoute>>,
    /// A new timeout (`Some(None)` removes it).
    pub timeout: Option<Option<Duration>>,
    /// A new retry count.
    pub retries: Option<u8>,
    /// New retry conditions.
    pub retry_on: Option<Vec<RetryOn>>,
}

impl PolicyEdit {
    /// `base` with this change applied, checked as a whole.
    pub fn apply(self, mut base: TrafficPolicy) -> Result<TrafficPolicy, InvalidPolicy> {
        if let Some(split) = self.split {
            base.split = split;
        }
        if let Some(routes) = self.routes {
            base.routes = routes;
        }
        if let Some(timeout) = self.timeout {
            base.timeout = timeout;
        }
        if let Some(retries) = self.retries {
            base.retries = retries;
        }
        if let Some(retry_on) = self.retry_on {
            base.retry_on = retry_on;
        }
        base.validate()?;
        Ok(base)
    }

    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        *self == PolicyEdit::default()
    }
}
