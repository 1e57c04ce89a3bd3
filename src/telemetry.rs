//! Process-wide logging and metrics setup.
//!
//! Logs go to stderr through `tracing` (filter with `RUST_LOG`); metrics go to an
//! in-process Prometheus recorder rendered by `ferry status -o json` (`metrics` field).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the log subscriber and the metrics recorder (idempotent).
pub fn init(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        let _ = metrics::set_global_recorder(recorder);
        handle
    });
}

/// The current metrics in Prometheus text format (empty if not initialised).
pub fn render() -> String {
    HANDLE.get().map(|h| h.render()).unwrap_or_default()
}
