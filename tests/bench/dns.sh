#!/usr/bin/env bash
# Mesh DNS benchmark (not part of the tests): the same 1000 A names served by Unbound,
# Knot DNS and Ferry's DNS server (inside `ferry up`), each loaded with the same dnsperf
# settings; prints qps, lost queries, server CPU µs per query and RSS, with ratios.
#
#   tests/bench/dns.sh                      # all three, 10 s each
#   DURATION=30 SERVERS="unbound knot" tests/bench/dns.sh
#
# Env: DURATION (s, default 10), SERVERS (default "unbound knot ferry"),
#      DNSPERF_ARGS (default "-c 1 -T 1 -q 200"), SKIP_BUILD=1 (use the existing
#      target/release/ferry), FERRY_HEALTH_INTERVAL (default 10m), KEEP_TMP=1,
#      PIN (default 1: server on CPU 0, dnsperf on CPU 1, so the server gets one core and
#      the load generator the other; Ferry's tokio runtime then sizes itself to 1 core).
# Needs root (apt-get, and Ferry's node proxy binds the VIPs 127.20.x.y:80).
# Every server listens on a free high loopback port; nothing is left running.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DURATION="${DURATION:-10}"
SERVERS="${SERVERS:-unbound knot ferry}"
DNSPERF_ARGS="${DNSPERF_ARGS:--c 1 -T 1 -q 200}"
FERRY_HEALTH_INTERVAL="${FERRY_HEALTH_INTERVAL:-10m}"
PIN="${PIN:-1}"
ZONE="clusterset.local"
N=1000

die() { echo "dns.sh: error: $*" >&2; exit 1; }
log() { echo "dns.sh: $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || die "run as root (apt-get, VIP binds)"
    SUDO="sudo"
fi

# ---------------------------------------------------------------- packages
install_missing() {
    local missing=() pair cmd pkg
    for pair in dnsperf:dnsperf unbound:unbound knotd:knot dig:dnsutils python3:python3; do
        cmd="${pair%%:*}" pkg="${pair#*:}"
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || missing+=("$pkg")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    log "installing ${missing[*]}"
    # Keep the distro services (unbound, knot) from being started on port 53.
    local made_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
        $SUDO chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    local rc=0
    {
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${missing[@]}" >/dev/null
    } || rc=$?
    [ -n "$made_policy" ] && $SUDO rm -f /usr/sbin/policy-rc.d
    [ "$rc" -eq 0 ] || die "apt-get install ${missing[*]} failed"
    # Where systemd runs, make sure the packaged services are not up on port 53.
    if [ -d /run/systemd/system ]; then
        $SUDO systemctl disable --now unbound.service knot.service >/dev/null 2>&1 || true
    fi
}
install_missing
PATH="$PATH:/usr/sbin:/sbin"

# ---------------------------------------------------------------- temp dir, cleanup
TMP="$(mktemp -d /tmp/ferry-dns-bench.XXXXXX)"
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "${KEEP_TMP:-}" ]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { # a port free for both UDP and TCP on 127.0.0.1
    python3 - <<'EOF'
import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass
    finally:
        t.close(); u.close()
EOF
}

name_of() { echo "svc$1.bench.svc.$ZONE"; }
ip_of() { echo "127.20.$(($1 / 200 + 1)).$(($1 % 200 + 10))"; }

# Query file: the N names as `name A`, shuffled deterministically (seeded).
python3 - "$N" "$ZONE" >"$TMP/queries" <<'EOF'
import random, sys
n, zone = int(sys.argv[1]), sys.argv[2]
names = [f"svc{i}.bench.svc.{zone} A" for i in range(n)]
random.Random(20240601).shuffle(names)
print("\n".join(names))
EOF
# dig batch file for the full check, filled in per server.
check_all() { # port -> number of names answered NOERROR with an A record
    sed "s/^\(.*\) A\$/@127.0.0.1 -p $1 +tries=1 +time=2 +noall +answer \1 A/" \
        "$TMP/queries" >"$TMP/digbatch"
    dig -f "$TMP/digbatch" 2>/dev/null | awk '$4 == "A"' | wc -l
}

wait_answer() { # port name timeout_s pid -> waits until dig gives an A record
    local port="$1" name="$2" t="$3" pid="$4" start=$SECONDS
    until [ -n "$(dig +short +tries=1 +time=1 @127.0.0.1 -p "$port" "$name" A 2>/dev/null |
        grep -E '^[0-9.]+$' || true)" ]; do
        [ $((SECONDS - start)) -ge "$t" ] && return 1
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.5
    done
}

sanity() { # server port: one name must give NOERROR + an A record, and all N must resolve
    local server="$1" port="$2" name out got
    name="$(name_of 7)"
    out="$(dig +tries=1 +time=2 @127.0.0.1 -p "$port" "$name" A 2>&1 || true)"
    grep -q 'status: NOERROR' <<<"$out" && grep -qE "^$name\.[[:space:]]+[0-9]+[[:space:]]+IN[[:space:]]+A[[:space:]]" <<<"$out" ||
        die "$server on port $port does not answer $name with NOERROR + A:"$'\n'"$out"
    got="$(check_all "$port")"
    [ "$got" -eq "$N" ] || die "$server answered only $got of $N names with an A record"
    log "$server: sanity ok ($name NOERROR, $got/$N names resolve)"
}

cpu_ticks() { # utime+stime of the whole process (all its threads)
    local stat rest f
    stat="$(<"/proc/$1/stat")"
    rest="${stat##*) }"
    read -ra f <<<"$rest"
    echo $((f[11] + f[12]))
}
rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }
CLK_TCK="$(getconf CLK_TCK)"
ON_SERVER_CPU=() ON_CLIENT_CPU=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    ON_SERVER_CPU=(taskset -c 0) ON_CLIENT_CPU=(taskset -c 1)
else
    PIN=0
fi

declare -A QPS LOST CPU RSS RCODES
measure() { # server port pid
    local server="$1" port="$2" pid="$3" before after out completed
    kill -0 "$pid" 2>/dev/null || die "$server (pid $pid) is not running"
    before="$(cpu_ticks "$pid")"
    # shellcheck disable=SC2086
    out="$("${ON_CLIENT_CPU[@]}" dnsperf -s 127.0.0.1 -p "$port" -d "$TMP/queries" -l "$DURATION" \
        $DNSPERF_ARGS -O suppress=timeout 2>&1)" || die "dnsperf against $server failed:"$'\n'"$out"
    after="$(cpu_ticks "$pid")"
    echo "$out" >"$TMP/dnsperf-$server.txt"
    completed="$(awk '/Queries completed:/ { print $3 }' <<<"$out")"
    QPS[$server]="$(awk '/Queries per second:/ { printf "%.0f", $4 }' <<<"$out")"
    LOST[$server]="$(awk '/Queries lost:/ { print $3 " " $4 }' <<<"$out")"
    RCODES[$server]="$(awk -F': *' '/Response codes:/ { print $2 }' <<<"$out")"
    [ -n "$completed" ] && [ "$completed" -gt 0 ] || die "dnsperf completed no queries against $server:"$'\n'"$out"
    CPU[$server]="$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="$completed" \
        'BEGIN { printf "%.2f", t / hz * 1e6 / n }')"
    RSS[$server]="$(rss_mib "$pid")"
    log "$server: ${QPS[$server]} qps, lost ${LOST[$server]}, ${CPU[$server]} µs/query, rcodes ${RCODES[$server]}"
}

# ---------------------------------------------------------------- servers
run_unbound() {
    local port dir="$TMP/unbound" i pid
    port="$(free_port)"
    mkdir -p "$dir"
    {
        cat <<EOF
server:
    interface: 127.0.0.1
    port: $port
    do-ip6: no
    num-threads: 1
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$dir"
    pidfile: "$dir/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 0
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "$ZONE." static
EOF
        for ((i = 0; i < N; i++)); do
            echo "    local-data: \"$(name_of $i). 300 IN A $(ip_of $i)\""
        done
        printf 'remote-control:\n    control-enable: no\n'
    } >"$dir/unbound.conf"
    unbound-checkconf "$dir/unbound.conf" >/dev/null || die "bad unbound config $dir/unbound.conf"
    "${ON_SERVER_CPU[@]}" unbound -d -c "$dir/unbound.conf" >"$dir/log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_answer "$port" "$(name_of 0)" 20 "$pid" || die "unbound did not come up; log:"$'\n'"$(tail -20 "$dir/log")"
    sanity unbound "$port"
    measure unbound "$port" "$pid"
}

run_knot() {
    local port dir="$TMP/knot" i pid
    port="$(free_port)"
    mkdir -p "$dir"
    cat >"$dir/knot.conf" <<EOF
server:
    rundir: "$dir"
    pidfile: "$dir/knot.pid"
    listen: 127.0.0.1@$port
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "$dir"
control:
    listen: "$dir/knot.sock"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$dir"
    file: "%s.zone"
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: $ZONE
EOF
    {
        printf '$ORIGIN %s.\n$TTL 300\n' "$ZONE"
        printf '@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300\n' "$ZONE" "$ZONE"
        printf '@ IN NS ns.%s.\nns IN A 127.0.0.1\n' "$ZONE"
        for ((i = 0; i < N; i++)); do
            echo "$(name_of $i). 300 IN A $(ip_of $i)"
        done
    } >"$dir/$ZONE.zone"
    knotc -c "$dir/knot.conf" conf-check >/dev/null || die "bad knot config $dir/knot.conf"
    "${ON_SERVER_CPU[@]}" knotd -c "$dir/knot.conf" >"$dir/log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_answer "$port" "$(name_of 0)" 20 "$pid" || die "knotd did not come up; log:"$'\n'"$(tail -20 "$dir/log")"
    sanity knot "$port"
    measure knot "$port" "$pid"
}

run_ferry() {
    local port dir="$TMP/ferry" i pid ep_port bin="$ROOT/target/release/ferry"
    if [ -z "${SKIP_BUILD:-}" ]; then
        log "building ferry (release)"
        (cd "$ROOT" && cargo build --release -q --bin ferry) || die "cargo build failed"
    fi
    [ -x "$bin" ] || die "$bin not found (build it, or unset SKIP_BUILD)"
    port="$(free_port)"
    ep_port="$(free_port)"
    mkdir -p "$dir/data"
    # One TCP listener that all N services' endpoints share: health probes only connect.
    python3 - "$ep_port" >"$dir/listener.log" 2>&1 <<'EOF' &
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
while True:
    c, _ = s.accept(); c.close()
EOF
    PIDS+=("$!")
    "$bin" trust init --trust-domain bench.local --out "$dir/root" >/dev/null ||
        die "ferry trust init failed"
    "$bin" trust issue --root "$dir/root" --cluster bench --out "$dir/bench-ca" >/dev/null ||
        die "ferry trust issue failed"
    {
        cat <<EOF
cluster = "bench"
[trust]
dir = "$dir/bench-ca"
[control]
data_dir = "$dir/data"
socket = "$dir/data/control.sock"
vip_range = "127.20.0.0/16"
# Probes run once at start (health of 1000 services lands over a few seconds; svc999 is
# last), then every interval: keep later rounds out of the measured window.
health_interval = "$FERRY_HEALTH_INTERVAL"
[gateway]
listen = "127.0.0.1:0"
[node]
name = "bench-node"
[dns]
listen = "127.0.0.1:$port"
zone = "$ZONE"
upstreams = []
# The per-client-address limit (default 2000/s) would throttle dnsperf's one address.
rate_limit = 0
EOF
        for ((i = 0; i < N; i++)); do
            printf '\n[[service]]\nname = "svc%d.bench"\nports = ["http=80/tcp"]\nendpoints = ["127.0.0.1:%d"]\nexport = true\n' \
                "$i" "$ep_port"
        done
    } >"$dir/cluster.toml"
    "${ON_SERVER_CPU[@]}" "$bin" up --config "$dir/cluster.toml" >"$dir/log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    wait_answer "$port" "$(name_of $((N - 1)))" 60 "$pid" ||
        die "ferry DNS on 127.0.0.1:$port gave no A record for $(name_of $((N - 1)))" \
            "$(kill -0 "$pid" 2>/dev/null && echo "within 60 s" || echo "(ferry up exited)"); log tail:"$'\n'"$(tail -30 "$dir/log")"
    sanity ferry "$port"
    measure ferry "$port" "$pid"
}

# ---------------------------------------------------------------- run
log "servers: $SERVERS; dnsperf $DNSPERF_ARGS -l $DURATION; $N names; temp dir $TMP"
for s in $SERVERS; do
    case "$s" in
        unbound | knot | ferry) "run_$s" ;;
        *) die "unknown server '$s' (want unbound, knot, ferry)" ;;
    esac
done

echo
echo "## Mesh DNS benchmark: $N A names, dnsperf $DNSPERF_ARGS -l $DURATION, $(nproc) cores"
if [ "$PIN" = 1 ]; then echo "(server pinned to CPU 0, dnsperf to CPU 1)"; else echo "(no CPU pinning)"; fi
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg) (other load on the box skews qps; CPU µs/query less so)"
echo
echo "| server | qps | lost | CPU µs/query | RSS MiB |"
echo "| --- | ---: | ---: | ---: | ---: |"
for s in $SERVERS; do
    label="$s"
    [ "$s" = unbound ] && label="unbound (num-threads 1)"
    [ "$s" = knot ] && label="knot (1 udp worker)"
    [ "$s" = ferry ] && label="ferry up (whole process)"
    echo "| $label | ${QPS[$s]} | ${LOST[$s]} | ${CPU[$s]} | ${RSS[$s]} |"
done
echo
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
for base in unbound knot; do
    if [ -n "${QPS[ferry]:-}" ] && [ -n "${QPS[$base]:-}" ]; then
        echo "ferry/$base qps = $(ratio "${QPS[ferry]}" "${QPS[$base]}")"
        echo "ferry/$base CPU per query = $(ratio "${CPU[ferry]}" "${CPU[$base]}")"
    fi
done
if [ -n "${QPS[knot]:-}" ] && [ -n "${QPS[unbound]:-}" ]; then
    echo "knot/unbound qps = $(ratio "${QPS[knot]}" "${QPS[unbound]}")"
fi
echo
for s in $SERVERS; do echo "response codes, $s: ${RCODES[$s]}"; done
echo
echo "unbound: $(unbound -V | awk 'NR == 1 { print $2 }'); knotd: $(knotd -V | awk '{ print $NF }');" \
    "dnsperf: $(cat "$TMP"/dnsperf-*.txt 2>/dev/null | awk '/^Version/ { print $2; exit }')"
if [[ " $SERVERS " == *" ferry "* ]]; then
    echo "ferry: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') (release build)." \
        "Ferry's pid is the whole \`ferry up\` process: control plane, gateway, node proxy" \
        "and DNS in one process (health_interval $FERRY_HEALTH_INTERVAL, so probes stay out of the window;" \
        "dns.rate_limit = 0, i.e. no per-client limit)."
fi
