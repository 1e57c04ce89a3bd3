//! Process-wide logging and metrics setup.
//!
//! Logs go to stderr through `tracing` (`--log-level` or `RUST_LOG`; `--log-format json`);
//! metrics go to an in-process Prometheus recorder served on the admin listener's
//! `/metrics` ([`crate::admin`]). Every metric Ferry records is in [`CATALOGUE`], with its
//! type and help text (a test keeps the two in step).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
/// How often histogram samples are folded into their buckets, and by which thread.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const UPKEEP_THREAD: &str = "ferry-metrics";

/// A metric's Prometheus type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric Ferry records: name, type, help. Labels are bounded: service and cluster
/// names this cluster knows, fixed reason and result sets, never a raw value from a peer or
/// a client.
pub const CATALOGUE: &[(&str, Kind, &str)] = &[
    ("ferry_build_info", Kind::Gauge, "Always 1; the version label is this build's."),
    // Requests (node proxy, HTTP and gRPC ports).
    ("ferry_requests_total", Kind::Counter, "Requests through the node proxy, by service, source and destination cluster, HTTP status, gRPC status and result."),
    ("ferry_request_duration_seconds", Kind::Histogram, "Time from a request's arrival at the node proxy to its response head, by service."),
    // TCP (node proxy outbound, gateway inbound).
    ("ferry_tcp_connections_opened_total", Kind::Counter, "Relayed TCP connections opened, by direction, service, source and destination cluster."),
    ("ferry_tcp_connections_closed_total", Kind::Counter, "Relayed TCP connections closed, by direction, service, source and destination cluster."),
    ("ferry_tcp_connections_open", Kind::Gauge, "Relayed TCP connections open now, by direction, service, source and destination cluster."),
    ("ferry_tcp_sent_bytes_total", Kind::Counter, "Bytes relayed from the caller toward the service."),
    ("ferry_tcp_received_bytes_total", Kind::Counter, "Bytes relayed from the service back to the caller."),
    ("ferry_proxy_connections_total", Kind::Counter, "Connections the node proxy accepted on TCP ports, by how they were routed (local, remote) or failed."),
    ("ferry_proxy_idle_closed_total", Kind::Counter, "Proxied connections closed for being idle."),
    ("ferry_proxy_ejections_total", Kind::Counter, "Endpoints or remote clusters ejected after consecutive failures."),
    ("ferry_tunnel_connections_total", Kind::Counter, "QUIC connections the node proxy dialled to peer gateways."),
    ("ferry_tunnel_silent_closed_total", Kind::Counter, "QUIC connections to peer gateways closed after going silent."),
    // Links and gateways.
    ("ferry_link_up", Kind::Gauge, "1 when a link session to the peer is connected, else 0."),
    ("ferry_link_rtt_seconds", Kind::Gauge, "Round-trip time of the link session to the peer's gateway."),
    ("ferry_imports", Kind::Gauge, "Services imported from the peer."),
    ("ferry_sync_updates_total", Kind::Counter, "Export updates received from the peer."),
    ("ferry_link_refused_total", Kind::Counter, "Link input from the peer refused by a limit, by limit."),
    ("ferry_link_write_timeouts_total", Kind::Counter, "Link sessions closed because the peer stopped reading."),
    ("ferry_gateway_link_sessions", Kind::Gauge, "Link sessions this gateway holds with the peer."),
    ("ferry_gateway_link_closures_total", Kind::Counter, "Link connections the gateway closed, by reason."),
    ("ferry_gateway_streams_total", Kind::Counter, "Tunnel streams the gateway admitted."),
    ("ferry_gateway_streams_active", Kind::Gauge, "Tunnel streams the gateway relays now."),
    ("ferry_gateway_streams_cut_total", Kind::Counter, "Open tunnel streams cut because what admitted them was withdrawn, by reason."),
    ("ferry_gateway_streams_idle_closed_total", Kind::Counter, "Tunnel streams closed for being idle."),
    ("ferry_gateway_refusals_total", Kind::Counter, "Tunnel streams and connections the gateway refused, by reason."),
    ("ferry_gateway_handshake_failures_total", Kind::Counter, "QUIC handshakes that failed at the gateway, by reason."),
    ("ferry_gateway_retries_total", Kind::Counter, "Connection attempts the gateway asked to retry (address validation)."),
    ("ferry_import_conflicts", Kind::Gauge, "Imported names claimed by more than one peer with different definitions."),
    ("ferry_snapshot_version", Kind::Gauge, "Version of the mesh snapshot the control plane publishes."),
    // Identity.
    ("ferry_cert_expiry_timestamp_seconds", Kind::Gauge, "When the role's certificate expires (Unix seconds), by role."),
    ("ferry_root_expiry_timestamp_seconds", Kind::Gauge, "When the earliest root of the trust bundle expires (Unix seconds)."),
    // DNS.
    ("ferry_dns_queries_total", Kind::Counter, "DNS queries answered, by query type and response code."),
    ("ferry_dns_ratelimited_total", Kind::Counter, "DNS queries dropped, truncated or refused by the per-client rate limit."),
    ("ferry_dns_dropped_total", Kind::Counter, "DNS packets dropped unanswered, by reason."),
    ("ferry_dns_refused_total", Kind::Counter, "DNS queries refused, by reason."),
    ("ferry_dns_forwarded_total", Kind::Counter, "Queries for names outside the mesh forwarded upstream, by result."),
    ("ferry_dns_zone_names", Kind::Gauge, "Names in the mesh DNS zone."),
    ("ferry_dns_snapshot_version", Kind::Gauge, "Version of the mesh snapshot the DNS server answers from."),
];

/// Buckets of `ferry_request_duration_seconds`: 0.5 ms to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum BadFilter {
    #[error("invalid log filter `{filter}`: {reason}; use a level (error, warn, info, debug, trace) or targets like `ferry_proxy=debug,info`")]
    Filter { filter: String, reason: String },
    #[error("cannot export spans to telemetry.otlp_endpoint {endpoint}: {reason}; give an http://host:port OTLP/gRPC address")]
    Exporter { endpoint: String, reason: String },
}

/// Installs the log subscriber and the metrics recorder (idempotent). The filter is
/// `level` when given, else `RUST_LOG`, else `default_filter`; colours only when standard
/// error is a terminal.
/// Where and as what spans are exported (OTLP/gRPC).
pub struct Export {
    pub endpoint: String,
    /// This cluster (resource attribute `ferry.cluster`).
    pub cluster: String,
    /// The role of this process (resource attribute `ferry.role`).
    pub role: String,
}

static PROVIDER: OnceLock<opentelemetry_sdk::trace::SdkTracerProvider> = OnceLock::new();

/// How often batched spans leave for the collector.
const EXPORT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

fn tracer(export: &Export) -> Result<opentelemetry_sdk::trace::SdkTracer, BadFilter> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(&export.endpoint)
        .with_timeout(std::time::Duration::from_secs(3))
        .build()
        .map_err(|e| BadFilter::Exporter {
            endpoint: export.endpoint.clone(),
            reason: e.to_string(),
        })?;
    let processor = opentelemetry_sdk::trace::BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            opentelemetry_sdk::trace::BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("ferry")
        .with_attributes([
            opentelemetry::KeyValue::new("ferry.cluster", export.cluster.clone()),
            opentelemetry::KeyValue::new("ferry.role", export.role.clone()),
        ])
        .build();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("ferry");
    let _ = PROVIDER.set(provider);
    ferry_gateway::trace::set_exporting();
    Ok(tracer)
}

/// Sends the spans still batched (on the way out); at most a couple of seconds.
pub async fn flush() {
    if let Some(provider) = PROVIDER.get() {
        let flushed = tokio::task::spawn_blocking(|| {
            let _ = provider.force_flush();
        });
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), flushed).await;
    }
}

pub fn init(
    level: Option<&str>,
    default_filter: &str,
    format: crate::cli::LogFormat,
    export: Option<&Export>,
) -> Result<(), BadFilter> {
    use std::io::IsTerminal;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).map_err(|e| BadFilter::Filter {
            filter: level.to_string(),
            reason: e.to_string(),
        })?,
        None => {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter))
        }
    };
    // Spans go to the collector when one is configured (the same filter applies).
    let otel = match export {
        Some(export) => Some(tracing_opentelemetry::layer().with_tracer(tracer(export)?)),
        None => None,
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let _ = match format {
        crate::cli::LogFormat::Text => registry
            .with(fmt.with_ansi(std::io::stderr().is_terminal()))
            .try_init(),
        crate::cli::LogFormat::Json => registry
            .with(
                fmt.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
    };
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("ferry_request_duration_seconds".into()),
                REQUEST_BUCKETS,
            )
            .expect("the bucket list is not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Histograms keep each sample until an upkeep folds it into the buckets: without
        // one (nobody scraping `/metrics`), every request would hold memory for good.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name(UPKEEP_THREAD.into())
            .spawn(move || loop {
                std::thread::sleep(UPKEEP_EVERY);
                upkeep.run_upkeep();
            });
        if metrics::set_global_recorder(recorder).is_ok() {
            for (name, kind, help) in CATALOGUE {
                match kind {
                    Kind::Counter => metrics::describe_counter!(*name, *help),
                    Kind::Gauge => metrics::describe_gauge!(*name, *help),
                    Kind::Histogram => {
                        metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help)
                    }
                }
            }
        }
        handle
    });
    START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default()
    });
    metrics::gauge!("ferry_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(())
}

/// The current metrics in Prometheus text format (empty if not initialised), followed by
/// the process's own (CPU, memory, open files).
pub fn render() -> String {
    let Some(handle) = HANDLE.get() else {
        return String::new();
    };
    let mut text = handle.render();
    text.push_str(&process_metrics());
    text
}

/// The standard `process_*` metrics every Prometheus client library exports (their usual
/// names, so existing dashboards and alerts work), read from `/proc/self`.
fn process_metrics() -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: f64| {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        );
    };
    // utime and stime (fields 14 and 15) in USER_HZ, which Linux fixes at 100 for /proc.
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // The command name may hold spaces; the fields start after its closing parenthesis.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
        if let (Some(user), Some(system)) = (ticks(11), ticks(12)) {
            let cpu = (user + system) / 100.0;
            metric(
                "process_cpu_seconds_total",
                "counter",
                "User and system CPU time spent in seconds.",
                cpu,
            );
        }
    }
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        let kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok());
        if let Some(kib) = kib {
            metric(
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                kib * 1024.0,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        metric(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    if let Ok((soft, _)) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    {
        metric(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            soft as f64,
        );
    }
    if let Some(start) = START.get() {
        metric(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since the Unix epoch in seconds.",
            *start,
        );
    }
    out
}

/// When the process set up telemetry (Unix seconds): its start, for `process_start_time_seconds`.
static START: OnceLock<f64> = OnceLock::new();

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `counter!`, `gauge!` and `histogram!` in the workspace's sources, by name.
    fn recorded_in_sources() -> Vec<(String, Kind)> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut found = Vec::new();
        let mut dirs: Vec<std::path::PathBuf> = ["src", "proxy/src", "gateway/src", "dns/src"]
            .iter()
            .map(|d| root.join(d))
            .collect();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // Tests (this one included) may name metrics that are not recorded.
                let text = text.split("#[cfg(test)]").next().unwrap_or("");
                for (mac, kind) in [
                    ("counter!(", Kind::Counter),
                    ("gauge!(", Kind::Gauge),
                    ("histogram!(", Kind::Histogram),
                ] {
                    for (at, _) in text.match_indices(mac) {
                        let rest = text[at + mac.len()..].trim_start();
                        let Some(rest) = rest.strip_prefix('"') else {
                            continue; // a name passed in (the catalogue's own loop)
                        };
                        let name = &rest[..rest.find('"').unwrap()];
                        found.push((name.to_string(), kind));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn histogram_samples_are_folded_by_a_thread_of_their_own() {
        // Without it a process nobody scrapes keeps every request's duration sample.
        init(None, "warn", crate::cli::LogFormat::Text, None).unwrap();
        let names = || -> Vec<String> {
            std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
                .map(|comm| comm.trim().to_string())
                .collect()
        };
        // A new thread names itself once it runs: give it a moment.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !names().iter().any(|n| n == UPKEEP_THREAD) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let names = names();
        assert!(names.iter().any(|n| n == UPKEEP_THREAD), "{names:?}");
    }

    #[test]
    fn every_recorded_metric_is_in_the_catalogue_and_named_by_the_rules() {
        let recorded = recorded_in_sources();
        assert!(
            recorded.len() > 30,
            "the scan found the metrics: {recorded:?}"
        );
        for (name, kind) in &recorded {
            let entry = CATALOGUE.iter().find(|(n, _, _)| n == name);
            let Some((_, listed, help)) = entry else {
                panic!("{name} is recorded but not in telemetry::CATALOGUE");
            };
            assert_eq!(listed, kind, "{name}");
            assert!(!help.is_empty() && help.ends_with('.'), "{name}: {help}");
            assert!(name.starts_with("ferry_"), "{name}");
            assert_eq!(
                *kind == Kind::Counter,
                name.ends_with("_total"),
                "{name}: counters, and only counters, end in _total"
            );
        }
        for (name, _, _) in CATALOGUE {
            assert!(
                recorded.iter().any(|(n, _)| n == name),
                "{name} is in the catalogue but nothing records it"
            );
        }
    }
}
