#!/usr/bin/env python3
"""TCP proxy benchmark orchestrator (stdlib only). Run it through tests/bench/run.sh,
which installs the tools, builds Ferry and runs this inside a private network namespace.

Origins: one nginx (http, `return 200` of BODY_BYTES bytes, one worker) and one
`iperf3 -s`. Paths to them: direct, HAProxy (mode tcp, nbthread 1), nginx stream
(worker_processes 1), a Ferry local hop (one cluster: node proxy -> endpoint) and Ferry
cross-cluster (east node proxy -> QUIC -> west gateway -> endpoint). Per round, for each
path: wrk -c1, wrk -c16, iperf3 (one stream), new-connection TTFB vs keep-alive RTT.
"""

import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ENV = os.environ
ROUNDS = int(ENV.get("ROUNDS", "3"))
WRK_SECS = int(ENV.get("WRK_SECS", "5"))
IPERF_SECS = int(ENV.get("IPERF_SECS", "5"))
TTFB_N = int(ENV.get("TTFB_N", "200"))
BODY_BYTES = int(ENV.get("BODY_BYTES", "64"))
HEALTH_INTERVAL = ENV.get("FERRY_HEALTH_INTERVAL", "10m")
# tcp: the L4 relays (Ferry's web port declared tcp); http: HTTP reverse proxies (Ferry's
# web port declared http: the node proxy parses, routes and pools per request).
MODE = ENV.get("MODE", "tcp")
ALL_PATHS = {"tcp": ["direct", "haproxy", "nginx-stream", "ferry-local", "ferry-cross"],
             "http": ["direct", "nginx-http", "nginx-mtls", "ferry-local", "ferry-cross"]}.get(MODE, [])
# The proxy every ratio is taken against.
BASE = "nginx-stream" if MODE == "tcp" else "nginx-http"
PATHS = ENV.get("PATHS", " ".join(ALL_PATHS)).split()
FERRY_BIN = ENV.get("FERRY_BIN", "")
# Worker threads per `ferry up` (its --threads), one as nginx and HAProxy are run here.
FERRY_THREADS = ENV.get("FERRY_THREADS", "1")
STREAM_MODULE = ENV.get("NGINX_STREAM_MODULE", "/usr/lib/nginx/modules/ngx_stream_module.so")
STAMP = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
OUT = ENV.get("OUT", f"/tmp/ferry-proxies-bench-{STAMP}.json")
# Profiling: set up and warm every path, write {netns, paths: {path: {web, pids}}} to this
# file and wait for SIGTERM instead of measuring.
HOLD = ENV.get("HOLD", "")
CLK_TCK = os.sysconf("SC_CLK_TCK")
LABEL = {
    "direct": "direct",
    "haproxy": "HAProxy (mode tcp, nbthread 1)",
    "nginx-stream": "nginx stream (1 worker)",
    "nginx-http": "nginx proxy_pass (upstream keepalive, 1 worker)",
    "nginx-mtls": "nginx pair over mutual TLS 1.3 (edge -> border, 1 worker each)",
    "ferry-local": f"Ferry local hop ({FERRY_THREADS} thread{'s' if FERRY_THREADS != '1' else ''})",
    "ferry-cross": f"Ferry cross-cluster ({FERRY_THREADS} thread{'s' if FERRY_THREADS != '1' else ''} per cluster)",
}


class BenchError(Exception):
    pass


def log(msg):
    print(f"proxies.py: {msg}", file=sys.stderr, flush=True)


def tail(path, n=25):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as e:
        return f"(cannot read {path}: {e})"


# ---------------------------------------------------------------- processes
PROCS = []  # (name, Popen, log path)


def start(name, args, logpath, cwd=None):
    """Starts a long-running process in its own process group, output to logpath."""
    lf = open(logpath, "ab")
    try:
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                             cwd=cwd, start_new_session=True)
    except OSError as e:
        raise BenchError(f"{name}: cannot start `{' '.join(args)}`: {e}")
    finally:
        lf.close()
    PROCS.append((name, p, logpath))
    return p


def stop_all():
    for name, p, _ in reversed(PROCS):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 8
    for name, p, _ in reversed(PROCS):
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            log(f"{name} (pid {p.pid}) did not stop on SIGTERM; killing it")
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def run(what, args, timeout=60, cwd=None, check=True):
    """Runs a command to completion; a failure names the step, the command and its stderr."""
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{what}: `{' '.join(args)}` timed out after {timeout}s; "
                         f"stderr:\n{(e.stderr or b'').decode(errors='replace') if isinstance(e.stderr, bytes) else e.stderr}")
    except OSError as e:
        raise BenchError(f"{what}: cannot run `{' '.join(args)}`: {e}")
    if check and r.returncode != 0:
        raise BenchError(f"{what}: `{' '.join(args)}` exited {r.returncode}; stderr:\n"
                         f"{r.stderr.strip()}\nstdout:\n{r.stdout.strip()[-2000:]}")
    return r


def start_nginx(name, d, conf):
    """Writes `conf` into directory `d`, checks it with `nginx -t` and starts nginx on it."""
    with open(f"{d}/nginx.conf", "w") as f:
        f.write(conf)
    args = ["nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"]
    run(f"{name}: config test", args[:1] + ["-t", "-q"] + args[1:])
    return start(name, args, f"{d}/nginx.out")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(what, cond, timeout, proc=None, logpath=None, interval=0.1):
    deadline = time.time() + timeout
    last = None
    while True:
        if proc is not None and proc.poll() is not None:
            raise BenchError(f"{what}: process exited with {proc.returncode}; log {logpath}:\n{tail(logpath)}")
        try:
            v = cond()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - remembered for the error message
            last = e
        if time.time() > deadline:
            extra = f"; last error: {last}" if last else ""
            lg = f"; log {logpath}:\n{tail(logpath)}" if logpath else ""
            raise BenchError(f"{what}: not within {timeout}s{extra}{lg}")
        time.sleep(interval)


def can_connect(host, port):
    with socket.create_connection((host, port), timeout=1):
        return True


def http_get(host, port, timeout=3):
    """One GET on a new connection; returns the body (raises unless 200 with BODY)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise BenchError(f"unexpected answer from {host}:{port}: {data[:200]!r}")
    if len(body) != BODY_BYTES:
        raise BenchError(f"body of {len(body)} bytes from {host}:{port}, want {BODY_BYTES}")
    return body


# ---------------------------------------------------------------- /proc
def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        kids.setdefault(int(rest[1]), []).append(int(d))
    return kids


def tree(pids):
    kids = children_map()
    out, todo = [], list(pids)
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_ticks(pids):
    """utime+stime of the processes (and their children), all threads, in ticks."""
    total = 0
    for p in tree(pids):
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            total += int(rest[11]) + int(rest[12])
        except (OSError, IndexError):
            pass
    return total


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ---------------------------------------------------------------- origins and proxies
class Bench:
    def __init__(self, tmp):
        self.tmp = tmp
        self.paths = {}  # name -> {"web": (host, port), "iperf": (host, port), "pids": [...]}
        self.ferry_logs = []
        self.ferry_clusters = {}  # name -> (config path, Popen)

    def nginx_common(self, d):
        os.makedirs(d, exist_ok=True)
        return (f"daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\n"
                f"error_log {d}/error.log warn;\nevents {{ worker_connections 4096; }}\n")

    @staticmethod
    def nginx_temps(d):
        """The `http` block's temp paths, inside the instance's directory `d`."""
        return (f"client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fastcgi;\n"
                f"    uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;")

    def start_origin(self):
        d = os.path.join(self.tmp, "origin")
        self.web_port, self.iperf_port = free_port(), free_port()
        body = ("x" * (BODY_BYTES - 1)) + "\n"
        conf = self.nginx_common(d) + f"""http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    default_type text/plain;
    {self.nginx_temps(d)}
    server {{
        listen 127.0.0.1:{self.web_port} backlog=4096;
        location / {{ return 200 "{body[:-1]}\\n"; }}
    }}
}}
"""
        p = start_nginx("origin nginx", d, conf)
        wait_until("origin nginx listening", lambda: http_get("127.0.0.1", self.web_port), 15, p, f"{d}/error.log")
        ip = start("origin iperf3", ["iperf3", "-s", "-B", "127.0.0.1", "-p", str(self.iperf_port)],
                   f"{d}/iperf3.log")
        wait_until("origin iperf3 listening", lambda: can_connect("127.0.0.1", self.iperf_port), 15, ip,
                   f"{d}/iperf3.log")
        self.paths["direct"] = {"web": ("127.0.0.1", self.web_port),
                                "iperf": ("127.0.0.1", self.iperf_port), "pids": []}
        log(f"origin: nginx 127.0.0.1:{self.web_port}, iperf3 127.0.0.1:{self.iperf_port}")

    def start_haproxy(self):
        d = os.path.join(self.tmp, "haproxy")
        os.makedirs(d, exist_ok=True)
        pw, pi = free_port(), free_port()
        with open(f"{d}/haproxy.cfg", "w") as f:
            f.write(f"""global
    nbthread 1
    maxconn 4000
    pidfile {d}/haproxy.pid
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
listen web
    bind 127.0.0.1:{pw}
    server origin 127.0.0.1:{self.web_port}
listen iperf
    bind 127.0.0.1:{pi}
    server origin 127.0.0.1:{self.iperf_port}
""")
        run("haproxy: config check", ["haproxy", "-c", "-q", "-f", f"{d}/haproxy.cfg"])
        p = start("haproxy", ["haproxy", "-db", "-f", f"{d}/haproxy.cfg"], f"{d}/haproxy.log")
        wait_until("haproxy web listener", lambda: http_get("127.0.0.1", pw), 15, p, f"{d}/haproxy.log")
        self.paths["haproxy"] = {"web": ("127.0.0.1", pw), "iperf": ("127.0.0.1", pi), "pids": [p.pid]}
        log(f"haproxy: web 127.0.0.1:{pw}, iperf 127.0.0.1:{pi}")

    def start_nginx_stream(self):
        d = os.path.join(self.tmp, "nginx-stream")
        pw, pi = free_port(), free_port()
        conf = f"load_module {STREAM_MODULE};\n" + self.nginx_common(d) + f"""stream {{
    server {{ listen 127.0.0.1:{pw} backlog=4096; proxy_pass 127.0.0.1:{self.web_port}; }}
    server {{ listen 127.0.0.1:{pi}; proxy_pass 127.0.0.1:{self.iperf_port}; }}
}}
"""
        p = start_nginx("nginx stream", d, conf)
        wait_until("nginx stream web listener", lambda: http_get("127.0.0.1", pw), 15, p, f"{d}/error.log")
        self.paths["nginx-stream"] = {"web": ("127.0.0.1", pw), "iperf": ("127.0.0.1", pi), "pids": [p.pid]}
        log(f"nginx stream: web 127.0.0.1:{pw}, iperf 127.0.0.1:{pi}")

    def start_nginx_http(self):
        d = os.path.join(self.tmp, "nginx-http")
        pw = free_port()
        conf = self.nginx_common(d) + f"""http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    {self.nginx_temps(d)}
    upstream origin {{ server 127.0.0.1:{self.web_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{pw} backlog=4096;
        location / {{ proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
"""
        p = start_nginx("nginx http", d, conf)
        wait_until("nginx http listener", lambda: http_get("127.0.0.1", pw), 15, p, f"{d}/error.log")
        self.paths["nginx-http"] = {"web": ("127.0.0.1", pw), "iperf": None, "pids": [p.pid]}
        log(f"nginx http: web 127.0.0.1:{pw}")

    def start_nginx_mtls(self):
        """The cross-cluster path users would build from nginx: an edge nginx that proxies
        over mutual TLS 1.3 (client certificate, verified server name, pooled upstream
        connections with session reuse) to a border nginx that checks the client certificate
        and proxies to the origin. Two processes, one worker each, like east and west."""
        d = os.path.join(self.tmp, "nginx-mtls")
        edge, border = os.path.join(d, "edge"), os.path.join(d, "border")
        for sub in (edge, border):
            os.makedirs(sub, exist_ok=True)
        pki = os.path.join(d, "pki")
        os.makedirs(pki, exist_ok=True)

        def ossl(what, *args):
            run(f"nginx mtls: openssl {what}", ["openssl", *args])
        ossl("CA", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{pki}/ca.key", "-out", f"{pki}/ca.pem", "-days", "2", "-subj", "/CN=bench mesh CA")
        for name, ext in (("border", "subjectAltName=DNS:border.bench\nextendedKeyUsage=serverAuth"),
                          ("edge", "subjectAltName=DNS:edge.bench\nextendedKeyUsage=clientAuth")):
            ossl(f"{name} key and CSR", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", f"{pki}/{name}.key", "-out", f"{pki}/{name}.csr", "-subj", f"/CN={name}.bench")
            with open(f"{pki}/{name}.ext", "w") as f:
                f.write(ext + "\n")
            ossl(f"{name} certificate", "x509", "-req", "-in", f"{pki}/{name}.csr", "-CA", f"{pki}/ca.pem",
                 "-CAkey", f"{pki}/ca.key", "-CAcreateserial", "-days", "2", "-extfile", f"{pki}/{name}.ext",
                 "-out", f"{pki}/{name}.pem")
        pe, pb = free_port(), free_port()
        keep = 'proxy_http_version 1.1; proxy_set_header Connection "";'
        border_conf = self.nginx_common(border) + f"""http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    {self.nginx_temps(border)}
    upstream origin {{ server 127.0.0.1:{self.web_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{pb} ssl backlog=4096;
        ssl_protocols TLSv1.3;
        ssl_certificate {pki}/border.pem; ssl_certificate_key {pki}/border.key;
        ssl_client_certificate {pki}/ca.pem; ssl_verify_client on;
        location / {{ proxy_pass http://origin; {keep} }}
    }}
}}
"""
        edge_conf = self.nginx_common(edge) + f"""http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    {self.nginx_temps(edge)}
    upstream border {{ server 127.0.0.1:{pb}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{pe} backlog=4096;
        location / {{
            proxy_pass https://border; {keep}
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_certificate {pki}/edge.pem; proxy_ssl_certificate_key {pki}/edge.key;
            proxy_ssl_trusted_certificate {pki}/ca.pem; proxy_ssl_verify on;
            proxy_ssl_name border.bench; proxy_ssl_server_name on; proxy_ssl_session_reuse on;
        }}
    }}
}}
"""
        pb_proc = start_nginx("nginx mtls border", border, border_conf)
        pe_proc = start_nginx("nginx mtls edge", edge, edge_conf)
        wait_until("nginx mtls edge -> border -> origin answers", lambda: http_get("127.0.0.1", pe), 15, pe_proc,
                   f"{edge}/error.log")
        self.paths["nginx-mtls"] = {"web": ("127.0.0.1", pe), "iperf": None, "pids": [pe_proc.pid, pb_proc.pid]}
        log(f"nginx mtls: edge 127.0.0.1:{pe} -> border 127.0.0.1:{pb} (TLS 1.3, client certificates)")

    # ------------------------------------------------------------ ferry
    def ferry(self, what, cfg, *args, timeout=30, check=True):
        return run(what, [FERRY_BIN, "--config", cfg, *args], timeout=timeout, check=check)

    def ferry_up(self, name, vip_octet):
        d = self.fdir
        cfg = os.path.join(d, f"{name}.toml")
        run(f"ferry {name}: trust issue", [FERRY_BIN, "trust", "issue", "--root", f"{d}/root",
                                           "--cluster", name, "--out", f"{d}/{name}-ca"])
        with open(cfg, "w") as f:
            f.write(f"""cluster = "{name}"

[trust]
dir = "{name}-ca"

[control]
data_dir = "{name}-data"
socket = "{name}.sock"
vip_range = "127.{vip_octet}.0.0/16"
# Probes run when a service is added; the interval keeps later rounds out of the runs.
health_interval = "{HEALTH_INTERVAL}"

[gateway]
listen = "127.0.0.1:0"

[federation]
allow_loopback_gateways = true   # every cluster lives in this one network namespace

[node]
name = "{name}-node-1"

[dns]
listen = "127.0.0.1:0"
""")
        logpath = os.path.join(d, f"{name}.log")
        p = start(f"ferry up ({name})", [FERRY_BIN, "--threads", FERRY_THREADS, "up", "--config", cfg], logpath, cwd=d)
        self.ferry_logs.append(logpath)
        self.ferry_clusters[name] = (cfg, p)

        def ready():
            r = self.ferry(f"ferry {name}: status", cfg, "status", "-o", "json", check=False, timeout=10)
            return r.returncode == 0 and json.loads(r.stdout).get("gateways")
        wait_until(f"ferry up ({name}) ready (control plane answers, a gateway registered)",
                   ready, 60, p, logpath, interval=0.2)
        log(f"ferry {name}: up (pid {p.pid}, VIPs 127.{vip_octet}.0.0/16, log {logpath})")
        return cfg, p

    def add_services(self, name, cfg, export):
        extra = ["--export"] if export else []
        port = "tcp=8080/tcp" if MODE == "tcp" else "http=8080/http"
        self.ferry(f"ferry {name}: service add web.bench", cfg, "service", "add", "web.bench",
                   "--port", port, "--endpoint", f"127.0.0.1:{self.web_port}", *extra)
        self.ferry(f"ferry {name}: service add iperf.bench", cfg, "service", "add", "iperf.bench",
                   "--port", "tcp=5201/tcp", "--endpoint", f"127.0.0.1:{self.iperf_port}", *extra)

    def wait_vips(self, name, cfg, proc, remote_from=None):
        """Waits until both services have a VIP and a healthy endpoint (local, or in remote_from)."""
        logpath = os.path.join(self.fdir, f"{name}.log")

        def healthy():
            r = self.ferry(f"ferry {name}: services", cfg, "services", "-o", "json", check=False, timeout=10)
            if r.returncode != 0:
                raise BenchError(r.stderr.strip())
            svcs = {s["name"]: s for s in json.loads(r.stdout)}
            vips = {}
            for svc in ("web.bench", "iperf.bench"):
                s = svcs.get(svc)
                if not s or not s.get("vip"):
                    return None
                if s.get("listen_errors"):
                    raise BenchError(f"{svc}: listen errors {s['listen_errors']}")
                if remote_from:
                    ok = any(rm["cluster"] == remote_from and any(v > 0 for v in rm["healthy"].values())
                             for rm in s.get("remote", []))
                else:
                    ok = any(e["healthy"] for e in s.get("local", []))
                if not ok:
                    return None
                vips[svc] = s["vip"]
            return vips
        what = f"ferry {name}: web.bench and iperf.bench with a VIP and a healthy " + \
            (f"endpoint in {remote_from}" if remote_from else "local endpoint")
        vips = wait_until(what, healthy, 30, proc, logpath, interval=0.2)
        web, iperf = (vips["web.bench"], 8080), (vips["iperf.bench"], 5201)
        wait_until(f"ferry {name}: iperf.bench VIP {iperf[0]}:{iperf[1]} accepts", lambda: can_connect(*iperf),
                   20, proc, logpath, interval=0.2)
        wait_until(f"ferry {name}: web.bench VIP {web[0]}:{web[1]} answers an HTTP GET",
                   lambda: http_get(*web), 20, proc, logpath, interval=0.2)
        return web, iperf

    def start_ferry(self, want_local, want_cross):
        self.fdir = os.path.join(self.tmp, "ferry")
        os.makedirs(self.fdir, exist_ok=True)
        run("ferry: trust init", [FERRY_BIN, "trust", "init", "--trust-domain", "bench.local",
                                  "--out", f"{self.fdir}/root"])
        if want_local:
            cfg, p = self.ferry_up("solo", 30)
            self.add_services("solo", cfg, export=False)
            web, iperf = self.wait_vips("solo", cfg, p)
            self.paths["ferry-local"] = {"web": web, "iperf": iperf, "pids": [p.pid]}
            log(f"ferry-local: web {web[0]}:{web[1]}, iperf {iperf[0]}:{iperf[1]}")
        if want_cross:
            ecfg, ep = self.ferry_up("east", 10)
            wcfg, wp = self.ferry_up("west", 20)
            tok = os.path.join(self.fdir, "link.token")
            r = self.ferry("ferry east: link create --peer west", ecfg, "link", "create", "--peer", "west")
            with open(tok, "w") as f:
                f.write(r.stdout)
            os.chmod(tok, 0o600)
            self.ferry("ferry west: link join", wcfg, "link", "join", "--token-file", tok)
            self.add_services("west", wcfg, export=True)
            web, iperf = self.wait_vips("east", ecfg, ep, remote_from="west")
            self.paths["ferry-cross"] = {"web": web, "iperf": iperf, "pids": [ep.pid, wp.pid]}
            log(f"ferry-cross (east -> west): web {web[0]}:{web[1]}, iperf {iperf[0]}:{iperf[1]}")

    def check_alive(self, path):
        for name, p, logpath in PROCS:
            if p.poll() is not None:
                raise BenchError(f"while measuring {path}: {name} exited with {p.returncode}; "
                                 f"log {logpath}:\n{tail(logpath)}")


# ---------------------------------------------------------------- measurements
UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def wrk(path, host, port, conns, threads, pids):
    url = f"http://{host}:{port}/"
    args = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{WRK_SECS}s", "--latency", url]
    c0 = cpu_ticks(pids)
    r = run(f"{path}: wrk -c{conns}", args, timeout=WRK_SECS + 60)
    c1 = cpu_ticks(pids)
    out = r.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", out, re.M)
    if not m or not n:
        raise BenchError(f"{path}: cannot parse the output of `{' '.join(args)}`:\n{out}\n{r.stderr}")
    pct = {}
    for q, v, u in re.findall(r"^\s*(\d+)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M):
        pct[int(q)] = float(v) * UNIT[u]
    if 50 not in pct or 99 not in pct:
        raise BenchError(f"{path}: no latency distribution in wrk's output:\n{out}")
    requests = int(n.group(1))
    if requests == 0:
        raise BenchError(f"{path}: wrk completed no requests:\n{out}\n{r.stderr}")
    errors = {}
    se = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if se:
        errors.update({k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), se.groups()) if int(v)})
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if bad:
        errors["non_2xx"] = int(bad.group(1))
    if errors:
        log(f"WARNING {path}: wrk -c{conns} reported errors {errors}")
    cpu_s = (c1 - c0) / CLK_TCK
    return {"rps": float(m.group(1)), "requests": requests, "p50_us": pct[50], "p75_us": pct.get(75),
            "p90_us": pct.get(90), "p99_us": pct[99], "cpu_s": cpu_s,
            "cpu_us_per_req": cpu_s * 1e6 / requests, "errors": errors}


def iperf(path, host, port, pids):
    args = ["iperf3", "-c", host, "-p", str(port), "-t", str(IPERF_SECS), "-J"]
    c0 = cpu_ticks(pids)
    r = run(f"{path}: iperf3", args, timeout=IPERF_SECS + 60, check=False)
    c1 = cpu_ticks(pids)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        raise BenchError(f"{path}: `{' '.join(args)}` exited {r.returncode} without JSON; stderr:\n"
                         f"{r.stderr}\nstdout:\n{r.stdout[-2000:]}")
    if j.get("error") or r.returncode != 0:
        raise BenchError(f"{path}: `{' '.join(args)}` failed (exit {r.returncode}): {j.get('error')}\n{r.stderr}")
    recv = j["end"]["sum_received"]
    cpu_s = (c1 - c0) / CLK_TCK
    gb = recv["bytes"] / 1e9
    return {"gbit_s": recv["bits_per_second"] / 1e9, "bytes": recv["bytes"], "secs": recv["seconds"],
            "retransmits": j["end"].get("sum_sent", {}).get("retransmits"), "cpu_s": cpu_s,
            "cpu_s_per_gb": cpu_s / gb if gb else None}


def read_response(s, buf=b""):
    """Reads one HTTP response with Content-Length; returns (first-chunk time, leftover)."""
    while b"\r\n\r\n" not in buf:
        b = s.recv(65536)
        if not b:
            raise BenchError(f"connection closed mid-response: {buf[:200]!r}")
        buf += b
    head, _, rest = buf.partition(b"\r\n\r\n")
    m = re.search(rb"content-length:\s*(\d+)", head, re.I)
    need = int(m.group(1)) if m else 0
    while len(rest) < need:
        b = s.recv(65536)
        if not b:
            raise BenchError("connection closed mid-body")
        rest += b
    return rest[need:]


def ttfb(path, host, port):
    """New connection + GET -> first response byte, vs a GET on an open keep-alive connection."""
    new, ka = [], []
    req_close = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    req_ka = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
    pc = time.perf_counter_ns
    for _ in range(TTFB_N):
        t0 = pc()
        s = socket.create_connection((host, port), timeout=5)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(req_close)
        first = s.recv(65536)
        t1 = pc()
        if not first:
            raise BenchError(f"{path}: new connection to {host}:{port} closed without a response")
        while s.recv(65536):
            pass
        s.close()
        new.append((t1 - t0) / 1e3)
    s = socket.create_connection((host, port), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    left = b""
    for i in range(TTFB_N + 20):
        t0 = pc()
        s.sendall(req_ka)
        first = s.recv(65536)
        t1 = pc()
        if not first:
            raise BenchError(f"{path}: keep-alive connection to {host}:{port} closed")
        left = read_response(s, left + first)
        if i >= 20:
            ka.append((t1 - t0) / 1e3)
    s.close()
    new.sort()
    ka.sort()
    q = lambda v, p: v[min(len(v) - 1, int(p * (len(v) - 1) + 0.5))]  # noqa: E731
    return {"new_p50_us": q(new, 0.5), "new_p99_us": q(new, 0.99), "ka_p50_us": q(ka, 0.5),
            "ka_p99_us": q(ka, 0.99), "diff_p50_us": q(new, 0.5) - q(ka, 0.5), "n": TTFB_N}


# ---------------------------------------------------------------- report
def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:.{digits}f}"


def fmt_range(vals, digits=0):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m = fmt(med(vals), digits)
    if len(vals) == 1:
        return m
    return f"{m} [{fmt(min(vals), digits)}–{fmt(max(vals), digits)}]"


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:  # noqa: BLE001
        return "?"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def report(rounds, rss, paths, started, env_info):
    def series(p, key, sub):
        return [r[p][key][sub] if r.get(p) and r[p].get(key) else None for r in rounds]

    def per_round_ratio(p, base, key, sub):
        out = []
        for r in rounds:
            if r.get(p) and r.get(base):
                a, b = r[p][key][sub], r[base][key][sub]
                out.append(a / b if a is not None and b else None)
        return [v for v in out if v is not None]

    def per_round_diff(p, base, key, sub):
        return [r[p][key][sub] - r[base][key][sub] for r in rounds if r.get(p) and r.get(base)]

    lines = []
    lines.append("## TCP proxies: direct vs HAProxy vs nginx stream vs Ferry" if MODE == "tcp" else
                 "## HTTP proxies: direct vs nginx proxy_pass vs Ferry (HTTP ports)")
    lines.append("")
    lines.append(f"Date: {started:%Y-%m-%d %H:%M:%S %Z}".rstrip() + f"; machine: {os.cpu_count()} CPUs "
                 f"(nproc {env_info['nproc']}), {env_info['cpu']}; kernel {env_info['kernel']}")
    lines.append(f"Rounds: {len(rounds)} (interleaved: each round runs every path once); wrk {WRK_SECS} s per run "
                 f"(-t1 -c1 and -t2 -c16, --latency), "
                 + (f"iperf3 one stream {IPERF_SECS} s, " if MODE == "tcp" else "")
                 + f"TTFB {TTFB_N} "
                 f"connections per path and round; origin nginx `return 200` of {BODY_BYTES} B.")
    lines.append(f"Versions: {env_info['versions']}; load average at the start: {env_info['loadavg_start']}, "
                 f"at the end: {env_info['loadavg']} (other load on the box skews everything)")
    lines.append("")
    hdr = ["path", "rps@1", "p50@1 µs", "p99@1 µs", "+p50@1 vs direct µs", "rps@16", "p99@16 µs",
           "CPU µs/req @16", "iperf3 Gbit/s", "CPU s/GB", "peak RSS MiB", "× direct (rps@16 / Gbit/s)",
           f"× {LABEL[BASE].split(' (')[0]} (rps@16 / Gbit/s)", f"CPU/req@16 × {LABEL[BASE].split(' (')[0]}"]
    lines.append("| " + " | ".join(hdr) + " |")
    lines.append("|---|" + "---:|" * (len(hdr) - 1))
    for p in paths:
        direct = p == "direct"

        def ratio2(base):
            if base not in paths or p == base:
                return "1" if p == base else "–"
            a = med(per_round_ratio(p, base, "wrk16", "rps"))
            b = med(per_round_ratio(p, base, "iperf", "gbit_s")) if MODE == "tcp" else None
            return f"{fmt(a, 2)} / {fmt(b, 2)}"
        cpu_ratio = "–"
        if BASE in paths and not direct:
            cpu_ratio = "1" if p == BASE else fmt(med(per_round_ratio(p, BASE, "wrk16", "cpu_us_per_req")), 2)
        added = "0" if direct else (fmt(med(per_round_diff(p, "direct", "wrk1", "p50_us")), 0)
                                    if "direct" in paths else "–")
        lines.append("| " + " | ".join([
            LABEL.get(p, p),
            fmt_range(series(p, "wrk1", "rps")),
            fmt(med(series(p, "wrk1", "p50_us"))),
            fmt(med(series(p, "wrk1", "p99_us"))),
            added,
            fmt_range(series(p, "wrk16", "rps")),
            fmt(med(series(p, "wrk16", "p99_us"))),
            "0" if direct else fmt(med(series(p, "wrk16", "cpu_us_per_req")), 1),
            fmt_range(series(p, "iperf", "gbit_s"), 2),
            "0" if direct else fmt(med(series(p, "iperf", "cpu_s_per_gb")), 2),
            "–" if direct else fmt(rss.get(p, {}).get("total_mib"), 1),
            ratio2("direct"),
            ratio2(BASE),
            cpu_ratio,
        ]) + " |")
    if "ferry-cross" in paths and "nginx-mtls" in paths and "direct" in paths:
        # The encrypted two-process path users would build instead of Ferry's.
        fe = med(per_round_diff("ferry-cross", "direct", "wrk1", "p50_us"))
        ng = med(per_round_diff("nginx-mtls", "direct", "wrk1", "p50_us"))
        lines.append("")
        lines.append(f"Ferry cross-cluster against the nginx mutual-TLS pair (two processes each): added p50 at "
                     f"one connection {fmt(fe)} µs vs {fmt(ng)} µs "
                     f"(×{fmt(fe / ng if fe is not None and ng else None, 2)}); CPU per request at 16 connections "
                     f"×{fmt(med(per_round_ratio('ferry-cross', 'nginx-mtls', 'wrk16', 'cpu_us_per_req')), 2)} "
                     f"(median of per-round ratios).")
    lines.append("")
    lines.append("New connection vs open connection (µs, median over rounds of each round's median; "
                 "TTFB = connect + send a GET + first response byte):")
    lines.append("")
    hdr2 = ["path", "new-conn TTFB p50", "new-conn TTFB p99", "keep-alive RTT p50", "difference p50",
            "difference − direct's"]
    lines.append("| " + " | ".join(hdr2) + " |")
    lines.append("|---|" + "---:|" * (len(hdr2) - 1))
    d_direct = med(series("direct", "ttfb", "diff_p50_us")) if "direct" in paths else None
    for p in paths:
        d = med(series(p, "ttfb", "diff_p50_us"))
        lines.append("| " + " | ".join([
            LABEL.get(p, p),
            fmt_range(series(p, "ttfb", "new_p50_us")),
            fmt(med(series(p, "ttfb", "new_p99_us"))),
            fmt_range(series(p, "ttfb", "ka_p50_us")),
            fmt(d),
            fmt(d - d_direct) if d is not None and d_direct is not None else "–",
        ]) + " |")
    lines.append("")
    lines.append("Figures are medians over rounds, [min–max] where shown; ratios are medians of the per-round "
                 "ratios. CPU is utime+stime of the proxy process(es) from /proc (nginx: master+worker; "
                 "Ferry: the whole `ferry up` process, which also runs control plane, gateway and DNS; "
                 "cross-cluster: east+west; nginx mTLS pair: edge+border) over each run, divided by requests (wrk) or GB received (iperf3). "
                 "Peak RSS is VmHWM at the end, summed over those processes. Client, origins and proxies "
                 "share the same cores (no pinning), in one network namespace on loopback.")
    return "\n".join(lines)


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def scan_logs(files):
    found = []
    pat = re.compile(r"\b(ERROR|WARN|panicked|alert|emerg|crit)\b")
    for f in files:
        try:
            with open(f, errors="replace") as fh:
                for line in fh:
                    line = ANSI.sub("", line).rstrip()
                    if pat.search(line):
                        found.append((f, line))
        except OSError:
            pass
    return found


# ---------------------------------------------------------------- main
def main():
    if not ENV.get("NETNS"):
        raise BenchError("run this through tests/bench/run.sh (it creates the network namespace)")
    if not ALL_PATHS:
        raise BenchError(f"MODE={MODE!r}: want tcp or http")
    for p in PATHS:
        if p not in ALL_PATHS:
            raise BenchError(f"unknown path {p!r} in PATHS (want some of {' '.join(ALL_PATHS)})")
    if "direct" not in PATHS:
        PATHS.insert(0, "direct")
    want_ferry = any(p.startswith("ferry") for p in PATHS)
    if want_ferry and not (FERRY_BIN and os.access(FERRY_BIN, os.X_OK)):
        raise BenchError(f"FERRY_BIN={FERRY_BIN!r} is not an executable")
    started = datetime.datetime.now().astimezone()
    load_start = " ".join(open("/proc/loadavg").read().split()[:3])
    # The tree as it was right after the build (others may be editing it).
    git = f"git -C {os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))}"
    ferry_rev = (sh(f"{git} rev-parse --short HEAD")
                 + (" + uncommitted changes" if sh(f"{git} status --porcelain -- src proxy gateway federation "
                                                  "dns proto Cargo.toml Cargo.lock") else "")
                 + ", release build")
    if ENV.get("SKIP_BUILD"):
        # Not built by this run: the binary may predate HEAD.
        built = datetime.datetime.fromtimestamp(os.path.getmtime(FERRY_BIN)).astimezone()
        ferry_rev += f" (binary not rebuilt by this run: built {built:%Y-%m-%d %H:%M %Z}, may predate HEAD)"
    t_start = time.time()
    keep = bool(ENV.get("KEEP_TMP"))
    tmp = tempfile.mkdtemp(prefix="ferry-proxies-bench.")
    log(f"temp dir {tmp}; paths: {' '.join(PATHS)}; rounds {ROUNDS}, wrk {WRK_SECS}s, iperf3 {IPERF_SECS}s, "
        f"ttfb {TTFB_N}")
    b = Bench(tmp)
    rounds, rss = [], {}
    ok = False
    try:
        b.start_origin()
        if "haproxy" in PATHS:
            b.start_haproxy()
        if "nginx-stream" in PATHS:
            b.start_nginx_stream()
        if "nginx-http" in PATHS:
            b.start_nginx_http()
        if "nginx-mtls" in PATHS:
            b.start_nginx_mtls()
        if want_ferry:
            b.start_ferry("ferry-local" in PATHS, "ferry-cross" in PATHS)
        # Warm every path (pooled QUIC connections, caches) outside the measured runs.
        for p in PATHS:
            for _ in range(50):
                http_get(*b.paths[p]["web"])
        if HOLD:
            # Profiling: leave every path up (in the namespace) until this process is stopped.
            held = {p: {"web": b.paths[p]["web"], "pids": tree(b.paths[p]["pids"])} for p in PATHS}
            with open(HOLD, "w") as f:
                json.dump({"netns": ENV["NETNS"], "paths": held}, f, indent=1)
            log(f"holding: paths in {HOLD} (netns {ENV['NETNS']}); stop with SIGTERM or Ctrl-C")
            signal.pause()
        for rnd in range(1, ROUNDS + 1):
            res = {}
            for p in PATHS:
                info = b.paths[p]
                b.check_alive(p)
                host, port = info["web"]
                r = {"wrk1": wrk(p, host, port, 1, 1, info["pids"]),
                     "wrk16": wrk(p, host, port, 16, 2, info["pids"])}
                if MODE == "tcp":
                    ih, ip_ = info["iperf"]
                    r["iperf"] = iperf(p, ih, ip_, info["pids"])
                else:
                    r["iperf"] = {"gbit_s": None, "cpu_s_per_gb": None}
                r["ttfb"] = ttfb(p, host, port)
                res[p] = r
                log(f"round {rnd}/{ROUNDS} {p}: rps@1 {r['wrk1']['rps']:.0f} (p50 {r['wrk1']['p50_us']:.0f} µs), "
                    f"rps@16 {r['wrk16']['rps']:.0f} ({r['wrk16']['cpu_us_per_req']:.1f} µs CPU/req), "
                    f"iperf3 {fmt(r['iperf']['gbit_s'], 2)} Gbit/s, TTFB new {r['ttfb']['new_p50_us']:.0f} µs / "
                    f"keep-alive {r['ttfb']['ka_p50_us']:.0f} µs")
            rounds.append(res)
        for p in PATHS:
            procs = {}
            for pid in tree(b.paths[p]["pids"]):
                procs[pid] = vm_hwm_kib(pid)
            rss[p] = {"vm_hwm_kib": procs, "total_mib": sum(procs.values()) / 1024 if procs else None}
        env_info = {
            "nproc": sh("nproc"), "cpu": cpu_model(), "kernel": os.uname().release,
            "loadavg_start": load_start, "loadavg": " ".join(open("/proc/loadavg").read().split()[:3]),
            "versions": "; ".join([
                sh("haproxy -v | head -1 | awk '{print \"HAProxy \" $3}'"),
                sh("nginx -v 2>&1 | sed 's/.*version: //'"),
                sh("wrk -v 2>&1 | head -1 | awk '{print \"wrk \" $2}'"),
                sh("iperf3 -v | head -1 | awk '{print \"iperf3 \" $2}'"),
                "ferry " + ferry_rev,
            ]),
        }
        table = report(rounds, rss, PATHS, started, env_info)
        elapsed = time.time() - t_start
        warnings = scan_logs(b.ferry_logs + [os.path.join(tmp, x, y) for x, y in
                                             (("haproxy", "haproxy.log"), ("nginx-stream", "error.log"),
                                              ("nginx-http", "error.log"),
                                              ("nginx-mtls/edge", "error.log"),
                                              ("nginx-mtls/border", "error.log"),
                                              ("origin", "error.log"))])
        logs_dir = os.path.splitext(OUT)[0] + "-logs"
        os.makedirs(logs_dir, exist_ok=True)
        for f in b.ferry_logs:
            shutil.copy(f, logs_dir)
        for sub in ("haproxy", "nginx-stream", "nginx-http", "nginx-mtls/edge", "nginx-mtls/border", "origin"):
            for name in ("haproxy.log", "error.log", "iperf3.log"):
                src = os.path.join(tmp, sub, name)
                if os.path.exists(src):
                    shutil.copy(src, os.path.join(logs_dir, f"{sub.replace('/', '-')}-{name}"))
        with open(OUT, "w") as f:
            json.dump({"started": started.isoformat(), "elapsed_s": elapsed, "env": env_info,
                       "settings": {"rounds": ROUNDS, "wrk_secs": WRK_SECS, "iperf_secs": IPERF_SECS,
                                    "ttfb_n": TTFB_N, "body_bytes": BODY_BYTES,
                                    "ferry_health_interval": HEALTH_INTERVAL},
                       "paths": {p: {"web": b.paths[p]["web"], "iperf": b.paths[p]["iperf"]} for p in PATHS},
                       "rounds": rounds, "peak_rss": rss,
                       "log_warnings": [{"file": os.path.basename(f), "line": ln} for f, ln in warnings]},
                      f, indent=1)
        print(table)
        print()
        print(f"Raw per-round figures: {OUT}; logs: {logs_dir}; run time {elapsed:.0f} s.")
        if warnings:
            print(f"\nWarnings/errors in proxy logs ({len(warnings)} lines; first 10):")
            for f, ln in warnings[:10]:
                print(f"  {os.path.basename(f)}: {ln}")
        else:
            print("No WARN/ERROR lines in the Ferry, HAProxy or nginx logs.")
        ok = True
    finally:
        stop_all()
        if keep or not ok:
            log(f"kept {tmp}" + ("" if ok else " (configs and logs of the failed run)"))
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def on_term(signum, _frame):
    raise SystemExit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        main()
    except BenchError as e:
        print(f"proxies.py: error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("proxies.py: interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
