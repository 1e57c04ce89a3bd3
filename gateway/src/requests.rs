//! Per-request metrics of a mesh hop: the node proxy's outbound requests and the gateway's
//! inbound ones. Every label value is bounded: service names and clusters come from the
//! local snapshot, status codes are three digits, gRPC codes 0–16, results a fixed set.
//! Handles are kept per service and outcome, so a request records its metrics without
//! building label strings or looking the key up in the recorder.

use foldhash::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use ferry_federation::{ClusterId, ServiceName};
use metrics::{Counter, Histogram};

/// Outcomes remembered per service; past that (an upstream answering with many status
/// codes) outcomes are recorded through the recorder's own lookup.
const MAX_OUTCOMES_PER_SERVICE: usize = 64;

/// How one request ended, as its labels.
pub struct Outcome<'a> {
    pub service: &'a ServiceName,
    pub source: &'a ClusterId,
    /// The cluster that served it; `None` when no hop answered.
    pub destination: Option<&'a ClusterId>,
    pub status: u16,
    pub grpc_status: Option<u8>,
    pub result: &'static str,
}

pub struct RequestMetrics {
    /// `outbound` (node proxy) or `inbound` (gateway).
    direction: &'static str,
    services: Mutex<HashMap<ServiceName, ServiceMetrics>>,
}

struct ServiceMetrics {
    duration: Histogram,
    outcomes: Vec<(OutcomeKey, Counter)>,
}

#[derive(PartialEq, Eq)]
struct OutcomeKey {
    source: ClusterId,
    destination: Option<ClusterId>,
    status: u16,
    grpc_status: Option<u8>,
    result: &'static str,
}

impl OutcomeKey {
    fn matches(&self, o: &Outcome<'_>) -> bool {
        self.status == o.status
            && self.result == o.result
            && self.grpc_status == o.grpc_status
            && self.destination.as_ref() == o.destination
            && &self.source == o.source
    }
}

impl RequestMetrics {
    /// Request metrics labelled `direction`.
    pub fn new(direction: &'static str) -> RequestMetrics {
        RequestMetrics {
            direction,
            services: Mutex::default(),
        }
    }

    /// Counts one request (`ferry_requests_total`) and its duration
    /// (`ferry_request_duration_seconds`).
    pub fn record(&self, outcome: &Outcome<'_>, took: Duration) {
        let mut services = self.services.lock().expect("metrics lock");
        if !services.contains_key(outcome.service) {
            let duration = metrics::histogram!(
                "ferry_request_duration_seconds",
                "direction" => self.direction,
                "service" => outcome.service.to_string()
            );
            services.insert(
                outcome.service.clone(),
                ServiceMetrics {
                    duration,
                    outcomes: Vec::new(),
                },
            );
        }
        let entry = services
            .get_mut(outcome.service)
            .expect("inserted just above");
        entry.duration.record(took.as_secs_f64());
        if let Some((_, counter)) = entry.outcomes.iter().find(|(k, _)| k.matches(outcome)) {
            counter.increment(1);
            return;
        }
        let counter = requests_counter(self.direction, outcome);
        counter.increment(1);
        if entry.outcomes.len() < MAX_OUTCOMES_PER_SERVICE {
            let key = OutcomeKey {
                source: outcome.source.clone(),
                destination: outcome.destination.cloned(),
                status: outcome.status,
                grpc_status: outcome.grpc_status,
                result: outcome.result,
            };
            entry.outcomes.push((key, counter));
        }
    }
}

fn requests_counter(direction: &'static str, o: &Outcome<'_>) -> Counter {
    let labels = [
        ("direction", direction.to_string()),
        ("service", o.service.to_string()),
        ("source_cluster", o.source.to_string()),
        (
            "destination_cluster",
            o.destination.map(ToString::to_string).unwrap_or_default(),
        ),
        ("status_code", o.status.to_string()),
        (
            "grpc_status",
            o.grpc_status.map(|c| c.to_string()).unwrap_or_default(),
        ),
        ("result", o.result.to_string()),
    ];
    metrics::counter!("ferry_requests_total", &labels)
}
