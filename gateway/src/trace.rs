//! W3C trace context across the mesh: a span continues the caller's trace from its
//! `traceparent`, and a call leaving this process carries the current span's. Spans reach a
//! collector only when the process exports them (`[telemetry] otlp_endpoint`); without an
//! exporter, [`current_traceparent`] is `None` and callers fall back to passing on (or
//! starting) the header themselves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Says this process exports spans (set once the exporter is installed); until then the
/// functions below cost nothing on the request path.
pub fn set_exporting() {
    EXPORTING.store(true, Ordering::Relaxed);
}

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Whether each HTTP request gets a span of its own: when spans are exported, or when
/// debug logs are on somewhere. Otherwise a request costs no span (with the log formatter,
/// one allocation and field formatting each; the node proxy's HTTP connections then get
/// none either), and its log lines name what they are about themselves.
pub fn request_spans() -> bool {
    exporting() || tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG
}

/// Makes `span` a child of the trace `traceparent` names (ignored when malformed). Must be
/// called before the span is first entered.
pub fn continue_trace(span: &tracing::Span, traceparent: &str) {
    if !exporting() {
        return;
    }
    let mut carrier = HashMap::with_capacity(1);
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    let parent = TraceContextPropagator::new().extract(&carrier);
    let _ = span.set_parent(parent);
}

/// The `traceparent` of the current span, when spans are exported.
pub fn current_traceparent() -> Option<String> {
    if !exporting() {
        return None;
    }
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::with_capacity(1);
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}
