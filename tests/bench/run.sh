#!/usr/bin/env bash
# TCP proxy benchmark (not part of the tests): the same nginx and iperf3 origins reached
# directly, through HAProxy (mode tcp), nginx `stream`, a Ferry local hop (one cluster,
# node proxy -> endpoint) and Ferry cross-cluster (east node proxy -> QUIC -> west gateway
# -> endpoint), all in one private network namespace, rounds interleaved. Prints markdown
# tables (wrk rps/latency/CPU per request, iperf3 Gbit/s and CPU per GB, peak RSS,
# new-connection time to first byte) and writes the raw per-round figures as JSON.
#
#   tests/bench/run.sh                                   # 3 rounds, 5 s per run (~5 min)
#   MODE=http tests/bench/run.sh                         # HTTP: direct, nginx proxy_pass, nginx mTLS pair, Ferry http ports
#   ROUNDS=1 WRK_SECS=1 IPERF_SECS=1 tests/bench/run.sh  # smoke test
#
# Env: MODE (tcp: L4 relays, Ferry's web port declared tcp; http: nginx proxy_pass with
#      upstream keepalive and Ferry's web port declared http, no iperf3), ROUNDS (3),
#      WRK_SECS (5), IPERF_SECS (5), TTFB_N (200 connections per path and round), PATHS
#      (default: every path of the mode; tcp "direct haproxy nginx-stream ferry-local
#      ferry-cross", http "direct nginx-http nginx-mtls ferry-local ferry-cross"; nginx-mtls is
#      an edge nginx proxying over mutual TLS 1.3 to a border nginx: the encrypted
#      two-process path to compare Ferry's cross-cluster one with),
#      BODY_BYTES (64), FERRY_HEALTH_INTERVAL (10m: probes run when a service is added,
#      then keep out of the measured windows), FERRY_THREADS (1: `ferry --threads`, as
#      nginx runs 1 worker and HAProxy 1 thread), OUT (JSON path, default
#      /tmp/ferry-proxies-bench-<date>.json), KEEP_TMP=1 (keep configs and logs), HOLD=<file> (set
#      up and warm the paths, write their addresses and pids to <file>, wait for Ctrl-C: for
#      profiling with perf or strace inside the namespace),
#      SKIP_BUILD=1 (use the existing target/release/ferry), SKIP_INSTALL=1.
# Needs root (apt-get, ip netns). Every process runs inside the namespace
# ferrybench-<pid>, which is deleted on exit, with whatever is left in it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
die() { echo "run.sh: error: $*" >&2; exit 1; }
log() { echo "run.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || die "run as root (apt-get, ip netns)"
PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- packages
stream_module() {
    local m
    for m in /usr/lib/nginx/modules/ngx_stream_module.so /usr/lib64/nginx/modules/ngx_stream_module.so; do
        [ -f "$m" ] && { echo "$m"; return 0; }
    done
    return 1
}

install_missing() {
    local missing=() pair cmd pkg
    for pair in haproxy:haproxy nginx:nginx wrk:wrk iperf3:iperf3 python3:python3 ip:iproute2 openssl:openssl; do
        cmd="${pair%%:*}" pkg="${pair#*:}"
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    stream_module >/dev/null || missing+=(libnginx-mod-stream)
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]}"
    # Keep the packaged services (nginx on :80, haproxy) from being started by the install.
    local made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0 out
    out="$({
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    } 2>&1)" || rc=$?
    [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed:"$'\n'"$(tail -20 <<<"$out")"
    if [ -d /run/systemd/system ]; then
        systemctl disable --now nginx.service haproxy.service >/dev/null 2>&1 || true
    fi
}
[ -n "${SKIP_INSTALL:-}" ] || install_missing
for cmd in haproxy nginx wrk iperf3 python3 ip openssl; do
    command -v "$cmd" >/dev/null 2>&1 || die "$cmd not found (unset SKIP_INSTALL to install it)"
done
NGINX_STREAM_MODULE="$(stream_module)" || die "ngx_stream_module.so not found (apt-get install libnginx-mod-stream)"
export NGINX_STREAM_MODULE

# ---------------------------------------------------------------- ferry
FERRY_BIN="$ROOT/target/release/ferry"
if [ -z "${SKIP_BUILD:-}" ]; then
    log "building ferry (cargo build --release -q --bin ferry; may wait on the target dir lock)"
    (cd "$ROOT" && cargo build --release -q --bin ferry) || die "cargo build --release -q --bin ferry failed"
fi
[ -x "$FERRY_BIN" ] || die "$FERRY_BIN not found (build it, or unset SKIP_BUILD)"
export FERRY_BIN

# ---------------------------------------------------------------- namespace, cleanup
NS="ferrybench-$$"
PY_PID=""
cleanup() {
    local rc=$? pids pid
    trap - EXIT INT TERM
    if [ -n "$PY_PID" ] && kill -0 "$PY_PID" 2>/dev/null; then
        kill -TERM "$PY_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$PY_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    if ip netns list 2>/dev/null | grep -qw "$NS"; then
        # Whatever is still in our private namespace was started by this run.
        pids="$(ip netns pids "$NS" 2>/dev/null || true)"
        if [ -n "$pids" ]; then
            log "killing leftover processes in $NS: $(echo $pids)"
            for pid in $pids; do kill -TERM "$pid" 2>/dev/null || true; done
            sleep 1
            for pid in $(ip netns pids "$NS" 2>/dev/null || true); do kill -KILL "$pid" 2>/dev/null || true; done
        fi
        ip netns del "$NS" 2>/dev/null || log "could not delete network namespace $NS"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ip netns add "$NS" || die "ip netns add $NS failed"
ip -n "$NS" link set lo up || die "ip -n $NS link set lo up failed"
export NETNS="$NS"
log "network namespace $NS"

# The orchestrator runs inside the namespace; every process it starts inherits it.
ip netns exec "$NS" python3 "$ROOT/tests/bench/proxies.py" &
PY_PID=$!
wait "$PY_PID"
