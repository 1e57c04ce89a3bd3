//! Access logs: one line per proxied connection (node proxy and gateway) and per request on
//! L7 ports, at target `ferry::access`. What is logged is set once per process
//! ([`set_mode`], from `[telemetry] access_log`): failures only (refusals, resets,
//! unreachable hops, 5xx) by default, every call, or nothing.

use std::sync::atomic::{AtomicU8, Ordering};

/// Which calls get an access log line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// Calls that failed or were refused.
    #[default]
    Failures,
    /// Every call.
    All,
}

static MODE: AtomicU8 = AtomicU8::new(1);

/// Sets what this process logs.
pub fn set_mode(mode: Mode) {
    MODE.store(
        match mode {
            Mode::Off => 0,
            Mode::Failures => 1,
            Mode::All => 2,
        },
        Ordering::Relaxed,
    );
}

/// Whether a call that ended `ok` (or not) gets a line.
pub fn enabled(ok: bool) -> bool {
    match MODE.load(Ordering::Relaxed) {
        0 => false,
        1 => !ok,
        _ => true,
    }
}

/// One relayed TCP connection or tunnel stream.
pub struct TcpCall<'a> {
    pub direction: &'static str,
    /// The caller: its SPIFFE identity at a gateway, its address at a node proxy.
    pub source: &'a dyn std::fmt::Display,
    pub service: &'a dyn std::fmt::Display,
    pub destination: &'a dyn std::fmt::Display,
    pub sent: u64,
    pub received: u64,
    pub duration: std::time::Duration,
    /// `ok`, or why not (`idle`, `failed`, `refused`, a refusal reason, ...).
    pub result: &'a str,
}

/// Logs `call` if the mode asks for it.
pub fn tcp(call: &TcpCall<'_>) {
    let ok = call.result == "ok" || call.result == "idle";
    if !enabled(ok) {
        return;
    }
    tracing::info!(
        target: "ferry::access",
        kind = "tcp",
        direction = call.direction,
        source = %call.source,
        service = %call.service,
        destination = %call.destination,
        sent = call.sent,
        received = call.received,
        duration_ms = call.duration.as_millis() as u64,
        result = call.result,
        "access"
    );
}

/// One request on an L7 port (no path or query: they may carry secrets).
pub struct HttpCall<'a> {
    /// `outbound` at the caller's node proxy, `inbound` at the serving gateway.
    pub direction: &'static str,
    pub source: &'a dyn std::fmt::Display,
    pub service: &'a dyn std::fmt::Display,
    /// The cluster that answered; `None` when none did.
    pub destination: Option<&'a dyn std::fmt::Display>,
    pub method: &'a str,
    pub status: u16,
    pub grpc_status: Option<u8>,
    pub duration: std::time::Duration,
    /// `ok`, or the proxy's own error reason.
    pub result: &'a str,
}

/// Logs `call` if the mode asks for it: a 5xx, a failing gRPC status or a proxy error is
/// a failure.
pub fn http(call: &HttpCall<'_>) {
    let grpc_failed = matches!(call.grpc_status, Some(2 | 4 | 12 | 13 | 14));
    let ok = call.result == "ok" && call.status < 500 && !grpc_failed;
    if !enabled(ok) {
        return;
    }
    tracing::info!(
        target: "ferry::access",
        kind = "http",
        direction = call.direction,
        source = %call.source,
        service = %call.service,
        destination = %Or(call.destination),
        method = call.method,
        status = call.status,
        grpc_status = call.grpc_status.map(u64::from),
        duration_ms = call.duration.as_millis() as u64,
        result = call.result,
        "access"
    );
}

/// A value, or `-` when there is none.
struct Or<'a>(Option<&'a dyn std::fmt::Display>);

impl std::fmt::Display for Or<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}
