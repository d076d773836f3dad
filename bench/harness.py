#!/usr/bin/env python3
"""Ferry benchmark harness: started by bench/run.sh (which installs the tools and builds Ferry).

Starts an nginx origin, nginx as a reverse proxy, rathole (server + client), Ferry (serve + connector, and a
gateway) and the hyper floors (bench/floor: a proxy, and a relay node + connector) on loopback, measures every path
with the same loads in the same run (interleaved per workload), the RSS and CPU time of each system's own
processes, idle connector memory, and writes bench/results/<timestamp>.md.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

BENCH = os.path.dirname(os.path.abspath(__file__))
TICK = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
ROOT = os.geteuid() == 0
# The columns, in order: the relays (floor-relay is the least a relay built on hyper spends; floor-mux the least
# the lighter tunnel design of bench/floor/src/mux.rs spends), then the proxies (floor-raw: the hyper floor proxy
# with its upstream side by hand, bench/floor/src/raw.rs; nginx-fwd: nginx told to add the headers Ferry's gateway
# adds).
PATHS = ("direct", "nginx", "rathole", "ferry", "ferry1", "ferry-base", "ferry-ws", "floor-relay", "floor-mux", "floor-fmux",
         "floor-h2raw", "xnats",
         "xamqp", "xbus",
         "gateway", "gateway-base", "floor", "floor-raw", "nginx-fwd")
# The floors (bench/floor): column key, process name (a relay's processes are NAME-node and NAME-connector), the
# modes of ferry-bench-floor (a proxy's one; a relay's node and connector), label.
FLOORS = (
    ("floor", "floor-proxy", ("proxy",), "hyper floor proxy"),
    ("floor-raw", "floor-raw", ("proxy-raw",), "raw-upstream floor proxy"),
    ("floor-relay", "floor", ("relay-node", "relay-connector"), "hyper floor relay (node + connector)"),
    ("floor-mux", "floor-mux", ("relay-mux-node", "relay-mux-connector"), "mux floor relay (node + connector)"),
    ("floor-fmux", "floor-fmux", ("relay-fmux-node", "relay-fmux-connector"),
     "protocol 2 floor relay (node + connector)"),
    ("floor-h2raw", "floor-h2raw", ("relay-h2raw-node", "relay-h2raw-connector"),
     "h2-raw floor relay (node + connector)"),
)
FLOOR_PROCESSES = [name if len(modes) == 1 else f"{name}-{part}" for _, name, modes, _ in FLOORS
                   for part in ("node", "connector")[:len(modes)]]

# The cross-node relay (client -> gateway node -> bus -> relay node -> connector -> origin) needs PostgreSQL and a
# broker; these say where (the same variables as the tests).
PG_URL = os.environ.get("FERRY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BUS_URLS = {"xnats": os.environ.get("FERRY_TEST_NATS_URL", "nats://127.0.0.1:4222"),
            "xbus": os.environ.get("FERRY_TEST_NATS_URL", "nats://127.0.0.1:4222"),
            "xamqp": os.environ.get("FERRY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")}
BROKER_PROCS = {"xnats": "nats-server", "xamqp": "beam.smp", "xbus": "nats-server"}
# The cross-node paths: a gateway node and a relay node joined by a bus; xnats and xamqp cross on a node link (the
# default), xbus on NATS with the links off (every request and body through the broker).
CROSS_LABELS = {"xnats": "NATS", "xamqp": "RabbitMQ", "xbus": "NATS, links off"}
# When RSS is read again after a system's last load (seconds after that load ended); the last is the one the "RSS
# after load" row and its target use (docs/performance.md, "Memory after load").
AFTER_LOAD_S = (1, 5, 10)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def log(*a):
    print("[bench]", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- /proc
def children(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                if int(st.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def tree(pid):
    pids = [pid]
    for c in children(pid):
        pids += tree(c)
    return pids


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            t += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        except OSError:
            pass
    return t


def mem_kib(pids, key):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith(key + ":"):
                        t += int(line.split()[1])
        except OSError:
            pass
    return t


# ---------------------------------------------------------------- processes
class Procs:
    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def start(self, name, argv, **kw):
        out = open(os.path.join(self.workdir, name + ".out"), "w")
        err = open(os.path.join(self.workdir, name + ".err"), "w")
        p = subprocess.Popen(argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True, **kw)
        self.procs.append((name, p))
        return p

    def stop(self, p, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                return
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)

    def stop_all(self):
        for _, p in reversed(self.procs):
            self.stop(p)


def wait_for(cond, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if cond():
                return
        except Exception:  # noqa: BLE001 - polling
            pass
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def listening(port):
    """Whether something listens on 127.0.0.1:port (/proc/net/tcp, state 0A): a probe connection would be taken
    for a client by the floor's relay connector, which would log its failed HTTP/2 handshake."""
    with open("/proc/net/tcp") as f:
        return any(l.split()[1] == f"0100007F:{port:04X}" and l.split()[3] == "0A" for l in list(f)[1:])


def http_get(url, timeout=3):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def file_in(path, pattern):
    try:
        with open(path) as f:
            return re.search(pattern, f.read())
    except OSError:
        return None


# ---------------------------------------------------------------- configs
def nginx_conf(prefix, body):
    user = "user root;\n" if ROOT else ""
    return f"""{user}worker_processes 2;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/client_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    default_type application/octet-stream;
{body}
}}
"""


def origin_conf(prefix, port, www):
    # /upload really reads the body: the proxy handler reads the whole request body before it contacts the
    # upstream (proxy_request_buffering on), up to 16 MiB in memory, more to a temp file; proxy_set_body then
    # sends only "ok" to the internal /uploaded, which answers. `return 200` alone would answer before reading.
    return nginx_conf(prefix, f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        root {www};
        location / {{ }}
        location = /upload {{
            client_max_body_size 0;
            client_body_buffer_size 16m;
            proxy_request_buffering on;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_body "ok";
            proxy_pass http://sink/uploaded;
        }}
        location = /uploaded {{ return 200 "stored\\n"; }}
    }}
    upstream sink {{ server 127.0.0.1:{port}; keepalive 16; }}
""")


# What Ferry's gateway adds to every request (docs/gateway.md), said in nginx's words: the forwarding headers and a
# request id, which also goes back on the response.
FERRY_HEADERS = r"""
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $http_host;
            proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=\"$http_host\"";
            proxy_set_header X-Request-Id $request_id;
            add_header X-Request-Id $request_id always;"""


def proxy_conf(prefix, port, origin_port, ferry_headers=False):
    extra = FERRY_HEADERS if ferry_headers else ""
    return nginx_conf(prefix, f"""
    upstream origin {{ server 127.0.0.1:{origin_port}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{
            client_max_body_size 0;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_buffer_size 256k;
            proxy_buffers 4 256k;
            proxy_busy_buffers_size 256k;
            client_body_buffer_size 256k;{extra}
            proxy_pass http://origin;
        }}
    }}
""")


# ---------------------------------------------------------------- loads
def run_wrk(tools, url, conns, threads, secs):
    cmd = [tools["wrk"], f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency", "--timeout", "5s", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 30).stdout

    def dur(s):
        m = re.match(r"([\d.]+)(us|ms|s|m)", s)
        if m.group(2) == "m":
            return float(m.group(1)) * 60000
        v = float(m.group(1))
        return v / 1000 if m.group(2) == "us" else v * 1000 if m.group(2) == "s" else v

    if "Requests/sec" not in out:
        raise RuntimeError("wrk: " + out[-300:])
    try:
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        reqs = int(re.search(r"(\d+) requests in", out).group(1))
        # anchored to the start of a line: the latency summary's "+/- Stdev" column can end in 50% or 99% too
        p50 = dur(re.search(r"^\s*50%\s+(\S+)", out, re.M).group(1))
        p99 = dur(re.search(r"^\s*99%\s+(\S+)", out, re.M).group(1))
    except AttributeError:
        # the whole output goes to the log, so that the rare unreadable one can be studied
        log("unreadable wrk output, in full:\n" + out)
        raise RuntimeError("unreadable wrk output (in full in the log above)") from None
    errs = 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        errs += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errs += sum(int(x) for x in m.groups())
    return {"rps": rps, "requests": reqs, "p50_ms": p50, "p99_ms": p99, "errors": errs, "raw": out}


def run_oha(tools, url, conns, secs, body_file=None):
    cmd = [tools["oha"], "-z", f"{secs}s", "-c", str(conns), "--no-tui", "--output-format", "json", "-w",
           "-t", "60s"]
    if body_file:
        cmd += ["-m", "POST", "-D", body_file, "-H", "content-type: application/octet-stream"]
    cmd.append(url)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=secs + 90)
    j = json.loads(p.stdout)
    codes = j.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(j.get("errorDistribution", {}).values())
    total_s = j["summary"]["total"]
    moved = ok * 10 * MiB
    return {"mibps": moved / MiB / total_s if total_s else 0, "requests": ok, "errors": bad, "bytes": moved,
            "seconds": total_s, "error_kinds": j.get("errorDistribution", {})}


# ---------------------------------------------------------------- main
def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--ferry", required=True)
    ap.add_argument("--tools", required=True, help="JSON {wrk, oha, nginx, rathole, floor}")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    ap.add_argument("--paths", default=",".join(PATHS),
                    help="comma-separated subset of " + ",".join(PATHS) + " (for profiling runs)")
    ap.add_argument("--loads", default="small_c64,k1_c64,small_c1,get10m,post10m",
                    help="comma-separated subset of the workloads")
    ap.add_argument("--secs", type=int, help="seconds per load (default 5, 2 with --quick)")
    ap.add_argument("--no-idle", action="store_true", help="skip the idle-connector runs")
    ap.add_argument("--baseline", help="another ferry binary, run as the relay column ferry-base and the gateway "
                                       "column gateway-base beside this build's")
    a = ap.parse_args()
    a.paths = set(a.paths.split(","))
    a.loads = set(a.loads.split(","))
    tools = json.loads(a.tools)
    secs = a.secs or (2 if a.quick else 5)
    warm = 1
    idle_ns = [] if a.no_idle else [1000] if a.quick else [1000, 10000]
    work = tempfile.mkdtemp(prefix="ferry-bench-")
    P = Procs(work)
    started = time.time()
    try:
        return run(a, tools, secs, warm, idle_ns, work, P, started)
    finally:
        P.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def run(a, tools, secs, warm, idle_ns, work, P, started):
    www = os.path.join(work, "www")
    os.makedirs(www)
    with open(os.path.join(www, "small"), "wb") as f:
        f.write(b"Hello, Ferry\n")  # 13 bytes
    with open(os.path.join(www, "1k"), "wb") as f:
        f.write(os.urandom(1024))
    big = os.path.join(www, "10m")
    with open(big, "wb") as f:
        f.write(os.urandom(10 * MiB))
    up100 = os.path.join(work, "100m")
    with open(up100, "wb") as f:
        f.write(os.urandom(100 * 1000 * 1000))

    # --- origin
    po = free_port()
    od = os.path.join(work, "origin")
    os.makedirs(od)
    with open(os.path.join(od, "nginx.conf"), "w") as f:
        f.write(origin_conf(od, po, www))
    origin = P.start("origin", [tools["nginx"], "-p", od, "-c", os.path.join(od, "nginx.conf")])
    direct = f"http://127.0.0.1:{po}"
    wait_for(lambda: http_get(direct + "/small")[1] == b"Hello, Ferry\n", 10, "origin nginx")

    # --- nginx reverse proxy
    pn = free_port()
    nd = os.path.join(work, "proxy")
    os.makedirs(nd)
    with open(os.path.join(nd, "nginx.conf"), "w") as f:
        f.write(proxy_conf(nd, pn, po))
    proxy = P.start("nginx-proxy", [tools["nginx"], "-p", nd, "-c", os.path.join(nd, "nginx.conf")])
    nginx_url = f"http://127.0.0.1:{pn}"
    wait_for(lambda: http_get(nginx_url + "/small")[0] == 200, 10, "nginx proxy")

    systems = {}
    systems["direct"] = {"label": "direct (origin)", "base": direct, "pids": lambda: tree(origin.pid)}
    systems["nginx"] = {"label": "nginx proxy", "base": nginx_url, "pids": lambda: tree(proxy.pid)}

    # --- the same nginx, adding the headers Ferry's gateway adds (a reference: what those headers cost nginx)
    pnf = free_port()
    nfd = os.path.join(work, "proxy-fwd")
    os.makedirs(nfd)
    with open(os.path.join(nfd, "nginx.conf"), "w") as f:
        f.write(proxy_conf(nfd, pnf, po, ferry_headers=True))
    proxy_fwd = P.start("nginx-proxy-fwd", [tools["nginx"], "-p", nfd, "-c", os.path.join(nfd, "nginx.conf")])
    nginx_fwd_url = f"http://127.0.0.1:{pnf}"
    wait_for(lambda: http_get(nginx_fwd_url + "/small")[0] == 200, 10, "nginx proxy with Ferry's headers")
    systems["nginx-fwd"] = {"label": "nginx proxy, Ferry's headers", "base": nginx_fwd_url,
                            "pids": lambda: tree(proxy_fwd.pid)}

    # --- rathole
    if tools.get("rathole"):
        pr, prc = free_port(), free_port()
        with open(os.path.join(work, "rathole-server.toml"), "w") as f:
            f.write(f'[server]\nbind_addr = "127.0.0.1:{prc}"\n[server.services.origin]\ntoken = "bench"\n'
                    f'bind_addr = "127.0.0.1:{pr}"\n')
        with open(os.path.join(work, "rathole-client.toml"), "w") as f:
            f.write(f'[client]\nremote_addr = "127.0.0.1:{prc}"\n[client.services.origin]\ntoken = "bench"\n'
                    f'local_addr = "127.0.0.1:{po}"\n')
        rs = P.start("rathole-server", [tools["rathole"], "-s", os.path.join(work, "rathole-server.toml")])
        time.sleep(0.3)
        rc = P.start("rathole-client", [tools["rathole"], "-c", os.path.join(work, "rathole-client.toml")])
        rat_url = f"http://127.0.0.1:{pr}"
        wait_for(lambda: http_get(rat_url + "/small")[1] == b"Hello, Ferry\n", 20, "rathole tunnel")
        systems["rathole"] = {"label": "rathole", "base": rat_url, "pids": lambda: [rs.pid, rc.pid]}

    # --- ferry relay, one node; and the same with one worker thread per process (FERRY_WORKER_THREADS=1,
    # docs/operations.md)
    def start_relay(name, env=None, extra=(), binary=None):
        binary = binary or a.ferry
        port, data = free_port(), os.path.join(work, name + "-data")
        secret = subprocess.run([binary, "tenant", "create", "bench", "--create", "--data-dir", data], capture_output=True,
                                text=True, timeout=60, check=True).stdout.strip().splitlines()[-1]
        serve = P.start(name + "-serve", [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data,
                                          "--admin-listen", "127.0.0.1:0"], env=env)
        wait_for(lambda: file_in(os.path.join(work, name + "-serve.out"), "ferry listening"), 20, name + " serve")
        connector = P.start(name + "-connector", [binary, "connector", "--server", f"http://127.0.0.1:{port}",
                                                  "--tenant", "bench", "--secret", secret,
                                                  "--target", f"origin={direct}", *extra], env=env)
        wait_for(lambda: file_in(os.path.join(work, name + "-connector.err"), "tunnel established"), 30,
                 name + " tunnel")
        url = f"http://127.0.0.1:{port}/relay/bench/origin"
        wait_for(lambda: http_get(url + "/small")[1] == b"Hello, Ferry\n", 20, name + " relay")
        return serve, connector, url

    fs, fc, ferry_url = start_relay("ferry")
    systems["ferry"] = {"label": "ferry relay (1 node)", "base": ferry_url, "pids": lambda: [fs.pid, fc.pid]}
    fs1, fc1, ferry1_url = start_relay("ferry1", dict(os.environ, FERRY_WORKER_THREADS="1", FERRY_TUNNELS="1"))
    systems["ferry1"] = {"label": "ferry relay, 1 thread each", "base": ferry1_url,
                         "pids": lambda: [fs1.pid, fc1.pid]}
    # The same relay from another build (--baseline BIN): a before/after of a change within one run.
    if a.baseline and "ferry-base" in a.paths:
        fsb, fcb, ferryb_url = start_relay("ferry-base", binary=a.baseline)
        systems["ferry-base"] = {"label": "ferry relay, baseline build", "base": ferryb_url,
                                 "pids": lambda: [fsb.pid, fcb.pid]}
    # The same relay with the tunnel carried in WebSocket messages (connector --transport websocket): the cost of
    # the transport for proxies that pass only WebSockets (docs/operations.md).
    if "ferry-ws" in a.paths:
        fsw, fcw, ferryws_url = start_relay("ferry-ws", extra=("--transport", "websocket"))
        systems["ferry-ws"] = {"label": "ferry relay, websocket transport", "base": ferryws_url,
                               "pids": lambda: [fsw.pid, fcw.pid]}

    # --- ferry relay across nodes: a gateway node and a relay node (with the connector) on one PostgreSQL
    # database, over NATS and over RabbitMQ. CPU counts both nodes, the connector and the broker.
    cluster_procs, cluster_dbs = [], []
    for key in ("xnats", "xamqp", "xbus"):
        if key not in a.paths:
            continue
        try:
            base, procs, db = start_cross_node(a, work, P, key, direct)
            cluster_procs += procs
            cluster_dbs.append(db)
            broker = broker_pid(BROKER_PROCS[key])
            node_pids = [p.pid for p in procs]
            systems[key] = {"label": f"ferry relay across nodes ({CROSS_LABELS[key]})",
                            "base": base,
                            "pids": (lambda np=node_pids, b=broker: np + ([b] if b else []))}
        except Exception as e:  # noqa: BLE001 - a missing broker is a missing column, not a crash
            log(f"WARNING: the cross-node relay over {key[1:]} did not start ({e}); its column is left out")

    # --- ferry gateway: its own node (so that its CPU and memory are its own), one route to the origin
    pg = free_port()
    gd = os.path.join(work, "ferry-gw-data")
    gconf = os.path.join(work, "ferry-gateway.toml")
    with open(gconf, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{pg}"\ndata_dir = "{gd}"\n\n'
                f'[[gateway.routes]]\nname = "origin"\npath = "/"\nupstream = "origin"\n\n'
                f'[gateway.upstreams.origin]\nservers = [{{ url = "{direct}" }}]\n')
    fg = P.start("ferry-gateway", [a.ferry, "--config", gconf, "serve", "--admin-listen", "127.0.0.1:0"])
    gw_url = f"http://127.0.0.1:{pg}"
    wait_for(lambda: http_get(gw_url + "/small")[1] == b"Hello, Ferry\n", 20, "ferry gateway")
    systems["gateway"] = {"label": "ferry gateway", "base": gw_url, "pids": lambda: [fg.pid]}
    # The same gateway from another build (--baseline BIN), on the same config but its own port and data.
    if a.baseline and "gateway-base" in a.paths:
        pgb = free_port()
        gbconf = os.path.join(work, "ferry-gateway-base.toml")
        with open(gconf) as src, open(gbconf, "w") as f:
            f.write(src.read().replace(f'listen = "127.0.0.1:{pg}"', f'listen = "127.0.0.1:{pgb}"')
                    .replace(f'data_dir = "{gd}"', f'data_dir = "{gd}-base"'))
        fgb = P.start("ferry-gateway-base", [a.baseline, "--config", gbconf, "serve", "--admin-listen",
                                             "127.0.0.1:0"])
        gwb_url = f"http://127.0.0.1:{pgb}"
        wait_for(lambda: http_get(gwb_url + "/small")[1] == b"Hello, Ferry\n", 20, "ferry gateway (baseline)")
        systems["gateway-base"] = {"label": "ferry gateway, baseline build", "base": gwb_url,
                                   "pids": lambda: [fgb.pid]}

    # --- the floors (bench/floor, built by bench/run.sh): bare proxies in front of the origin, and bare relays (the
    # node dials the connector's tunnel address, so the connector starts first). A floor that does not start is
    # left out, with a warning, like a tool that could not be installed; one not in --paths is not started.
    floor_procs = []

    def start_floor(key, name, modes, label):
        if len(modes) == 1:
            port = free_port()
            procs = [P.start(name, [tools["floor"], modes[0], f"127.0.0.1:{port}", f"127.0.0.1:{po}"])]
        else:
            port, tunnel = free_port(), free_port()
            connector = P.start(f"{name}-connector", [tools["floor"], modes[1], f"127.0.0.1:{tunnel}",
                                                      f"127.0.0.1:{po}"])
            floor_procs.append(connector)
            wait_for(lambda: listening(tunnel), 20, f"{label}: its connector")
            procs = [P.start(f"{name}-node", [tools["floor"], modes[0], f"127.0.0.1:{port}",
                                              f"127.0.0.1:{tunnel}"]), connector]
        floor_procs.append(procs[0])
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: http_get(url + "/small")[1] == b"Hello, Ferry\n", 20, label)
        systems[key] = {"label": label, "base": url, "pids": lambda: [p.pid for p in procs]}

    for key, name, modes, label in FLOORS:
        if tools.get("floor") and key in a.paths:
            try:
                start_floor(key, name, modes, label)
            except Exception as e:  # noqa: BLE001
                log(f"WARNING: the {label} did not start ({e}); its column is left out")

    order = [k for k in PATHS if k in systems and k in a.paths]
    for k in [k for k in systems if k not in order]:
        del systems[k]
    time.sleep(1)
    for k in order:
        s = systems[k]
        s["idle_rss"] = {str(p): mem_kib([p], "VmRSS") for p in s["pids"]()}
        s["idle_rss_total"] = mem_kib(s["pids"](), "VmRSS")
        s["res"] = {}

    # --- check the upload sink really reads bodies: a 100 MB upload at 50 MB/s must take ≥ ~2 s.
    checks = []
    for k in [k for k in ("direct", "ferry", "xnats", "xamqp", "xbus", "gateway", "floor-relay", "floor-mux",
                                "floor-fmux", "floor-h2raw", "floor", "floor-raw") if k in order]:
        t0 = time.monotonic()
        r = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_upload}", "--limit-rate",
                            "50M", "--data-binary", "@" + up100, "-H", "content-type: application/octet-stream",
                            systems[k]["base"] + "/upload"], capture_output=True, text=True, timeout=60)
        el = time.monotonic() - t0
        code, sent = (r.stdout.split() + ["?", "0"])[:2]
        ok = code == "200" and float(sent) == 100e6 and el >= 1.8
        checks.append(f"100 MB upload at 50 MB/s via {k}: HTTP {code}, {int(float(sent))} bytes sent, "
                      f"{el:.1f} s -> {'body read in full' if ok else 'FAILED'}")
        log(checks[-1])

    # --- workloads, interleaved across systems
    workloads = [
        ("small_c64", "small GET, 64 conns", lambda b: run_wrk(tools, b + "/small", 64, 2, secs)),
        ("k1_c64", "1 KiB GET, 64 conns", lambda b: run_wrk(tools, b + "/1k", 64, 2, secs)),
        ("small_c1", "small GET, 1 conn", lambda b: run_wrk(tools, b + "/small", 1, 1, secs)),
        ("get10m", "10 MiB GET, 4 conns", lambda b: run_oha(tools, b + "/10m", 4, secs)),
        ("post10m", "10 MiB POST, 4 conns", lambda b: run_oha(tools, b + "/upload", 4, secs, big)),
    ]
    workloads = [w for w in workloads if w[0] in a.loads]
    # RSS read at fixed times after each system's own last load (the loads are interleaved, so the others' loads
    # go on meanwhile): timers, so that nothing polls /proc while loads run.
    timers = []

    def read_after(k, dt):
        s = systems[k]
        s["after_rss"][dt] = {str(p): mem_kib([p], "VmRSS") for p in s["pids"]()}

    for k in order:
        systems[k]["after_rss"] = {}
    for i, (wk, wlabel, fn) in enumerate(workloads):
        last = i == len(workloads) - 1
        for k in order:
            s = systems[k]
            try:
                if wk.startswith("small") or wk.startswith("k1"):
                    run_wrk(tools, s["base"] + ("/small" if wk.startswith("small") else "/1k"),
                            64 if "c64" in wk else 1, 2 if "c64" in wk else 1, warm)
                c0 = cpu_ticks(s["pids"]())
                r = fn(s["base"])
                r["cpu_s"] = (cpu_ticks(s["pids"]()) - c0) / TICK
                r.pop("raw", None)
            except Exception as e:  # noqa: BLE001 - a failing path is a result, not a crash
                r = {"failed": f"{type(e).__name__}: {e}"[:200]}
            s["res"][wk] = r
            log(wlabel, k, json.dumps(r))
            if last:
                for dt in AFTER_LOAD_S:
                    t = threading.Timer(dt, read_after, (k, dt))
                    t.start()
                    timers.append(t)

    for t in timers:
        t.join()
    for k in order:
        s = systems[k]
        for dt in AFTER_LOAD_S:
            s.setdefault("after_rss", {}).setdefault(dt, {str(p): mem_kib([p], "VmRSS") for p in s["pids"]()})
            s[f"after_rss_total_{dt}"] = sum(s["after_rss"][dt].values())
        s["after_rss_total"] = s[f"after_rss_total_{AFTER_LOAD_S[-1]}"]
        s["peak_rss_total"] = mem_kib(s["pids"](), "VmHWM")
        s["peak_rss"] = {str(p): mem_kib([p], "VmHWM") for p in s["pids"]()}

    ferry_log_issues = {}
    for n in ("ferry-serve", "ferry-connector", "ferry1-serve", "ferry1-connector", "ferry-base-serve",
              "ferry-base-connector", "ferry-ws-serve",
              "ferry-ws-connector", "ferry-gateway", "ferry-gateway-base",
              "xnats-relay", "xnats-gw", "xnats-connector", "xamqp-relay", "xamqp-gw", "xamqp-connector",
              "xbus-relay", "xbus-gw", "xbus-connector"):
        try:
            with open(os.path.join(work, n + ".err")) as f:
                lines = f.readlines()
        except OSError:
            continue
        ferry_log_issues[n] = {"WARN": sum(" WARN " in x for x in lines), "ERROR": sum(" ERROR " in x for x in lines),
                               "sample": [x.strip()[:240] for x in lines if " WARN " in x or " ERROR " in x][:5]}
    # The floors log nothing but failed connections ("connection: ..." on stderr). wrk ends each run by closing its
    # connections with requests in flight: hyper reports those as "closed before message completed".
    for n in FLOOR_PROCESSES:
        try:
            with open(os.path.join(work, n + ".err")) as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        other = [x for x in lines if "closed before message completed" not in x]
        if lines:
            checks.append(f"{n} stderr: {len(lines) - len(other)} connections closed by the client mid-request (wrk "
                          f"ends each run so), {len(other)} other errors"
                          + "".join(f"\n  - `{x[:240]}`" for x in other[:3]))
    # Free the relays (the floors too) before the idle-connector test.
    for p in (fc, fs, fc1, fs1, fg, *floor_procs, *cluster_procs):
        P.stop(p)
    for db in cluster_dbs:
        psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    idle = [idle_connectors(a, work, P, n) for n in idle_ns]

    elapsed = time.time() - started
    md = render(a, systems, order, workloads, idle, checks, ferry_log_issues, secs, elapsed)
    os.makedirs(a.out, exist_ok=True)
    path = os.path.join(a.out, datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + (
        "-quick" if a.quick else "") + ".md")
    with open(path, "w") as f:
        f.write(md)
    print(md)
    log("written", path)
    return 0


def psql(sql):
    subprocess.run(["psql", PG_URL, "-v", "ON_ERROR_STOP=1", "-qc", sql], capture_output=True, text=True,
                   timeout=60, check=True)


def broker_pid(name):
    r = subprocess.run(["pgrep", "-o", "-x", name], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.stdout.split() else None


def start_cross_node(a, work, P, key, direct):
    """A relay node (with the connector) and a gateway node on a fresh database, joined by the bus of `key`."""
    db = f"ferry_bench_{key}_{os.getpid()}"
    psql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    psql(f'CREATE DATABASE "{db}"')
    db_url = PG_URL.rsplit("/", 1)[0] + "/" + db
    env = dict(os.environ, FERRY_DATABASE_URL=db_url, FERRY_TRANSPORT=BUS_URLS[key],
               FERRY_CLUSTER_LINKS="false" if key == "xbus" else "true",
               # a cluster of its own per path: xnats and xbus share the NATS server
               FERRY_CLUSTER_NAME=f"bench-{key}")
    secret = subprocess.run([a.ferry, "tenant", "create", "bench"], capture_output=True, text=True, timeout=60,
                            check=True, env=env).stdout.strip().splitlines()[-1]
    procs = []
    pr, pg = free_port(), free_port()
    relay = P.start(key + "-relay", [a.ferry, "serve", "--roles", "relay,management,worker", "--node-id",
                                     key + "-relay", "--listen", f"127.0.0.1:{pr}", "--admin-listen",
                                     "127.0.0.1:0", "--data-dir", os.path.join(work, key + "-relay")], env=env)
    procs.append(relay)
    gw = P.start(key + "-gw", [a.ferry, "serve", "--roles", "gateway", "--node-id", key + "-gw", "--listen",
                               f"127.0.0.1:{pg}", "--data-dir", os.path.join(work, key + "-gw")], env=env)
    procs.append(gw)
    wait_for(lambda: file_in(os.path.join(work, key + "-relay.out"), "ferry listening"), 20, key + " relay node")
    wait_for(lambda: file_in(os.path.join(work, key + "-gw.out"), "ferry listening"), 20, key + " gateway node")
    connector = P.start(key + "-connector", [a.ferry, "connector", "--server", f"http://127.0.0.1:{pr}", "--tenant",
                                             "bench", "--secret", secret, "--target", f"origin={direct}"])
    procs.append(connector)
    wait_for(lambda: file_in(os.path.join(work, key + "-connector.err"), "tunnel established"), 30,
             key + " tunnel")
    url = f"http://127.0.0.1:{pg}/relay/bench/origin"
    wait_for(lambda: http_get(url + "/small")[1] == b"Hello, Ferry\n", 20, key + " cross-node relay")
    linked = any(file_in(os.path.join(work, key + "-gw" + ext), "node link up") for ext in (".out", ".err"))
    if linked != (key != "xbus"):
        log(f"WARNING: {key}: the gateway node {'opened' if linked else 'did not open'} a node link")
    return url, procs, db


def idle_connectors(a, work, P, n):
    pf = free_port()
    fd = os.path.join(work, f"ferry-idle-{n}")
    sec = subprocess.run([a.ferry, "tenant", "create", "idle", "--create", "--data-dir", fd], capture_output=True, text=True,
                         timeout=60, check=True).stdout.strip().splitlines()[-1]
    name = f"ferry-idle-{n}"
    # every tunnel comes from 127.0.0.1: lift the per-address connection cap (docs/security.md)
    fs = P.start(name, [a.ferry, "serve", "--listen", f"127.0.0.1:{pf}", "--data-dir", fd, "--admin-listen", "127.0.0.1:0"],
                 env=dict(os.environ, FERRY_MAX_CONNECTIONS_PER_IP="0"))
    res = {"n": n}
    try:
        wait_for(lambda: file_in(os.path.join(work, name + ".out"), "ferry listening"), 20, "ferry serve")
        time.sleep(1)
        res["before_kib"] = mem_kib([fs.pid], "VmRSS")
        ready, stop = os.path.join(work, f"ready-{n}"), os.path.join(work, f"stop-{n}")
        tool = subprocess.Popen([sys.executable, os.path.join(BENCH, "idle_tunnels.py"), "--server",
                                 f"http://127.0.0.1:{pf}", "--tenant", "idle", "--secret", sec, "-n", str(n),
                                 "--hold", "60", "--ready-file", ready, "--stop-file", stop, "--open-budget", "90"],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
        try:
            wait_for(lambda: os.path.exists(ready), 120, f"{n} idle tunnels")
            time.sleep(3)  # settle: the node registers tunnels after the SETTINGS exchange
            res["after_kib"] = mem_kib([fs.pid], "VmRSS")
            res["fds"] = len(os.listdir(f"/proc/{fs.pid}/fd"))
            open(stop, "w").close()
            out = tool.communicate(timeout=60)[0]
            res["tool"] = json.loads(out.strip().splitlines()[-1])
        finally:
            if tool.poll() is None:
                os.killpg(tool.pid, signal.SIGKILL)
                tool.wait()
        res["alive_node"] = fs.poll() is None
        res["per_conn_kib"] = (res["after_kib"] - res["before_kib"]) / max(1, res["tool"]["alive"])
    except Exception as e:  # noqa: BLE001
        res["failed"] = f"{type(e).__name__}: {e}"[:200]
    finally:
        P.stop(fs)
    log("idle connectors", json.dumps(res))
    return res


# ---------------------------------------------------------------- report
def fmt(v, unit="", d=0):
    if v is None:
        return "—"
    return f"{v:,.{d}f}{unit}"


FLOOR_NOTE = ("The hyper floors are bench/floor: a bare hyper pass-through on the same crates and allocator as Ferry "
              "(tokio, hyper, jemalloc), with no routing, header rules, timeouts, request ids, limits or statistics: "
              "the least any proxy (\"hyper floor proxy\", the gateway's shape: HTTP/1.1 in and out) or relay "
              "(\"hyper floor relay\": HTTP/1.1 in, one HTTP/2 connection between node and connector, HTTP/1.1 out) "
              "built on hyper spends. The \"mux floor relay\" (bench/floor/src/mux.rs) is the floor of a lighter tunnel "
              "design: hyper's HTTP/1.1 server in the node, a thread per core there and per tunnel in the connector, "
              "plain length-prefixed frames instead of HTTP/2 between them, and a connector that writes the request "
              "head as the node sent it and reads the origin's answer only far enough to find its end; the \"h2-raw "
              "floor relay\" (bench/floor/src/h2raw.rs) is the same with HTTP/2 (the h2 crate) between them, "
              "carrying those HTTP/1.1 bytes in its DATA frames; the \"protocol 2 floor relay\" "
              "(bench/floor/src/ferrymux.rs) is the mux floor on Ferry's own protocol 2 connection "
              "(ferry_tunnel::mux); the "
              "\"raw-upstream floor proxy\" (bench/floor/src/raw.rs) keeps hyper's server for the client and does "
              "the upstream side the same way, on a runtime per core. They are "
              "references, not competitors and not targets.")


def render(a, systems, order, workloads, idle, checks, ferry_log_issues, secs, elapsed):
    cols = order
    heads = {"direct": "direct", "nginx": "nginx proxy", "rathole": "rathole", "ferry": "Ferry relay, 1 node",
             "ferry1": "Ferry relay, 1 thread each", "ferry-base": "Ferry relay, baseline build", "ferry-ws": "Ferry relay, websocket transport",
             "floor-relay": "hyper floor relay (node + connector)",
             "floor-mux": "mux floor relay (node + connector)",
             "floor-h2raw": "h2-raw floor relay (node + connector)",
             "floor-fmux": "protocol 2 floor relay (node + connector)",
             "gateway": "Ferry gateway", "gateway-base": "Ferry gateway, baseline build", "floor": "hyper floor proxy",
             "floor-raw": "raw-upstream floor proxy", "nginx-fwd": "nginx proxy, Ferry's headers", "xnats": "Ferry relay across nodes (NATS)",
             "xamqp": "Ferry relay across nodes (RabbitMQ)", "xbus": "Ferry relay across nodes (NATS, links off)"}

    def metric(k, wk, key):
        r = systems[k]["res"].get(wk, {})
        if "failed" in r:
            return None
        if key == "cpu_us_req":
            return r["cpu_s"] * 1e6 / r["requests"] if r.get("requests") else None
        if key == "cpu_ms_gb":
            return r["cpu_s"] * 1e3 / (r["bytes"] / 1e9) if r.get("bytes") else None
        return r.get(key)

    rows = [
        ("small GET c=64: req/s", "small_c64", "rps", 0, False),
        ("small GET c=64: p50 ms", "small_c64", "p50_ms", 2, True),
        ("small GET c=64: p99 ms", "small_c64", "p99_ms", 2, True),
        ("small GET c=64: errors", "small_c64", "errors", 0, True),
        ("1 KiB GET c=64: req/s", "k1_c64", "rps", 0, False),
        ("small GET c=1: req/s", "small_c1", "rps", 0, False),
        ("small GET c=1: p50 ms", "small_c1", "p50_ms", 3, True),
        ("small GET c=1: p99 ms", "small_c1", "p99_ms", 3, True),
        ("10 MiB GET c=4: MiB/s", "get10m", "mibps", 0, False),
        ("10 MiB GET c=4: errors", "get10m", "errors", 0, True),
        ("10 MiB POST c=4: MiB/s", "post10m", "mibps", 0, False),
        ("10 MiB POST c=4: errors", "post10m", "errors", 0, True),
        ("CPU µs per small request (c=64)", "small_c64", "cpu_us_req", 1, True),
        ("CPU ms per GB, 10 MiB GET", "get10m", "cpu_ms_gb", 0, True),
        ("CPU ms per GB, 10 MiB POST", "post10m", "cpu_ms_gb", 0, True),
    ]
    out = []
    out.append(f"# Ferry benchmark, {datetime.datetime.now().isoformat(timespec='seconds')}"
               f"{' (quick)' if a.quick else ''}\n")
    load = open("/proc/loadavg").read().split()[:3]
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    out.append(f"Machine: {os.cpu_count()} × {cpu}, {round(os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30)}"
               f" GiB, {platform.platform()}; load average at the end {' '.join(load)}. Each load {secs} s after a "
               f"1 s warm-up; run took {elapsed:.0f} s.\n")
    out.append("Cells: value (ratio to direct). CPU and memory are summed over each system's own processes "
               "(direct: the origin nginx; each nginx proxy: its master + workers; rathole: server + client; Ferry: "
               "serve + connector; Ferry across nodes: the gateway node, the relay node, the connector and the broker "
               "(nats-server, or RabbitMQ's beam.smp); hyper floor proxy: its one process; hyper floor relay: node + "
               "connector), not the origin or the load generator.\n")
    out.append(FLOOR_NOTE + "\n")
    out.append("| metric | " + " | ".join(heads[c] for c in cols) + " |")
    out.append("|---" * (len(cols) + 1) + "|")

    def cells(vals, d, base):
        cs = []
        for c in cols:
            v = vals.get(c)
            if v is None:
                cs.append("failed" if c in systems else "—")
                continue
            s = fmt(v, "", d)
            if c != "direct" and base not in (None, 0):
                s += f" ({v / base:.2f}×)"
            cs.append(s)
        return cs

    ran = {wk for wk, _, _ in workloads}
    for label, wk, key, d, _lb in [r for r in rows if r[1] in ran]:
        vals = {c: metric(c, wk, key) for c in order}
        out.append(f"| {label} | " + " | ".join(cells(vals, d, vals.get("direct"))) + " |")
    rss_rows = [("RSS idle, MiB (before load)", "idle_rss_total")]
    rss_rows += [(f"RSS {dt} s after load, MiB", f"after_rss_total_{dt}") for dt in AFTER_LOAD_S[:-1]]
    rss_rows += [(f"RSS after load, MiB ({AFTER_LOAD_S[-1]} s after it, idle again)", "after_rss_total"),
                 ("RSS peak (VmHWM), MiB", "peak_rss_total")]
    for label, key in rss_rows:
        vals = {c: systems[c].get(key, 0) / 1024 for c in order}
        out.append(f"| {label} | " + " | ".join(cells(vals, 1, vals.get("direct"))) + " |")
    out.append("")
    after = " → ".join(f"+{dt} s" for dt in AFTER_LOAD_S)
    out.append(f"Per process (KiB), idle → peak → {after} after the system's last load: " + "; ".join(
        f"{systems[c]['label']}: " + ", ".join(
            " → ".join([str(systems[c]['idle_rss'].get(p, 0)), str(v)] +
                       [str(systems[c]['after_rss'][dt].get(p, 0)) for dt in AFTER_LOAD_S])
            for p, v in systems[c]['peak_rss'].items()) for c in order) + "\n")

    out.append("## Idle connectors (Ferry node memory)\n")
    out.append("| connectors | opened | alive at the end | closed by node | node RSS before | node RSS with them "
               "| per connector | open time |")
    out.append("|---|---|---|---|---|---|---|---|")
    for r in idle:
        if "failed" in r:
            out.append(f"| {r['n']:,} | failed: {r['failed']} ||||||| ")
            continue
        t = r["tool"]
        out.append(f"| {r['n']:,} | {t['opened']:,} | {t['alive']:,} | {t['closed_by_node']} | "
                   f"{r['before_kib'] / 1024:.1f} MiB | {r['after_kib'] / 1024:.1f} MiB | "
                   f"{r['per_conn_kib']:.1f} KiB | {t['open_seconds']} s |")
    out.append("\n(rathole and nginx have no equivalent of thousands of idle tunnels to one server: not measured.)\n")

    out.append("## Checks and errors\n")
    for c in checks:
        out.append(f"- {c}")
    for k in order:
        for wk, r in systems[k]["res"].items():
            if "failed" in r:
                out.append(f"- {k} {wk}: FAILED: {r['failed']}")
            elif r.get("errors"):
                out.append(f"- {k} {wk}: {r['errors']} errors {r.get('error_kinds', '')}")
    for n, v in ferry_log_issues.items():
        out.append(f"- {n} log: {v['WARN']} WARN, {v['ERROR']} ERROR lines" +
                   ("".join(f"\n  - `{x}`" for x in v["sample"])))
    for r in idle:
        if "tool" in r and r["tool"].get("errors"):
            out.append(f"- idle {r['n']}: tunnel errors {r['tool']['errors']}")

    out.append("\n## Targets\n")
    out.append("Rows marked \"(reference, not a target)\" set the hyper floors (above) and nginx with Ferry's "
               "headers against nginx, rathole and Ferry; they are neither met nor missed.\n")
    out += targets(systems, order, idle, metric)
    return "\n".join(out) + "\n"


def targets(systems, order, idle, metric):
    res = []

    names = {"floor": "hyper floor proxy", "floor-relay": "hyper floor relay", "floor-mux": "mux floor relay",
             "floor-h2raw": "h2-raw floor relay", "floor-fmux": "protocol 2 floor relay",
             "floor-raw": "raw-upstream floor proxy",
             "nginx-fwd": "nginx with Ferry's headers"}

    def cmp(name, f, r, ok_if_ge=True, factor=1.0, unit="", ours="ferry", theirs="rathole", reference=False):
        if theirs not in systems or ours not in systems:
            res.append(f"| {name} | not measurable ({theirs if theirs not in systems else ours} missing) |")
            return
        if f[0] not in systems[ours]["res"]:
            res.append(f"| {name} | not run (--loads) |")
            return
        fv, rv = metric(ours, *f), metric(theirs, *r)
        if fv is None or rv is None:
            res.append(f"| {name} | not measurable (a run failed) |")
            return
        met = fv >= factor * rv if ok_if_ge else fv <= factor * rv
        verdict = "reference" if reference else "met" if met else "missed"
        res.append(f"| {name} | {verdict}: {names.get(ours, 'Ferry')} {fv:,.3g}{unit} vs {names.get(theirs, theirs)} "
                   f"{rv:,.3g}{unit} ({fv / rv:.2f}×) |")

    res.append("| target | result |")
    res.append("|---|---|")
    cmp("relay req/s ≥ 1.0× rathole (small GET, c=64)", ("small_c64", "rps"), ("small_c64", "rps"))
    cmp("concurrency-1 p50 ≤ rathole's", ("small_c1", "p50_ms"), ("small_c1", "p50_ms"), False, unit=" ms")
    cmp("10 MiB GET ≥ 1.0× rathole", ("get10m", "mibps"), ("get10m", "mibps"), unit=" MiB/s")
    cmp("10 MiB POST ≥ 1.0× rathole", ("post10m", "mibps"), ("post10m", "mibps"), unit=" MiB/s")
    cmp("CPU per request ≤ rathole", ("small_c64", "cpu_us_req"), ("small_c64", "cpu_us_req"), False, unit=" µs")
    # Not the targets' configuration (they are checked with the defaults above): the same three with one worker
    # thread per Ferry process, for what threads waking each other cost on this machine.
    one = {"ours": "ferry1"}
    cmp("(1 thread each) relay req/s ≥ 1.0× rathole", ("small_c64", "rps"), ("small_c64", "rps"), **one)
    cmp("(1 thread each) concurrency-1 p50 ≤ rathole's", ("small_c1", "p50_ms"), ("small_c1", "p50_ms"), False,
        unit=" ms", **one)
    cmp("(1 thread each) CPU per request ≤ rathole", ("small_c64", "cpu_us_req"), ("small_c64", "cpu_us_req"),
        False, unit=" µs", **one)
    cmp("CPU per GB (10 MiB GET) ≤ rathole", ("get10m", "cpu_ms_gb"), ("get10m", "cpu_ms_gb"), False, unit=" ms")
    cmp("CPU per GB (10 MiB POST) ≤ rathole", ("post10m", "cpu_ms_gb"), ("post10m", "cpu_ms_gb"), False, unit=" ms")
    # Not targets either: the hyper floor relay (bench/floor) against rathole, and Ferry's relay against the floor,
    # for how much of the gap to rathole any relay built on hyper would have, and how much is Ferry's own.
    ref = "(reference, not a target)"
    def floor_rows(key, theirs):
        """A floor against a reference: req/s, CPU per request and the concurrency-1 median."""
        name, kw = names[key], {"ours": key, "theirs": theirs, "reference": True}
        cmp(f"{ref} {name} req/s vs {theirs} (small GET, c=64)", ("small_c64", "rps"), ("small_c64", "rps"), **kw)
        cmp(f"{ref} {name} CPU per request vs {theirs}", ("small_c64", "cpu_us_req"), ("small_c64", "cpu_us_req"),
            False, unit=" µs", **kw)
        cmp(f"{ref} {name} c=1 p50 vs {theirs}", ("small_c1", "p50_ms"), ("small_c1", "p50_ms"), False, unit=" ms",
            **kw)

    # The relay floors: hyper's (HTTP/2 between node and connector), the lighter tunnel's (plain frames, no parsing
    # in the connector: bench/floor/src/mux.rs), the same on Ferry's own protocol 2 connection (ferrymux.rs), and
    # with HTTP/2 through the h2 crate carrying HTTP/1.1 bytes (h2raw.rs).
    for key in ("floor-relay", "floor-mux", "floor-fmux", "floor-h2raw"):
        floor_rows(key, "rathole")
    fm = {"ours": "floor-fmux", "reference": True}
    cmp(f"{ref} protocol 2 floor relay 10 MiB GET vs rathole", ("get10m", "mibps"), ("get10m", "mibps"),
        unit=" MiB/s", **fm)
    cmp(f"{ref} protocol 2 floor relay 10 MiB POST vs rathole", ("post10m", "mibps"), ("post10m", "mibps"),
        unit=" MiB/s", **fm)
    vf = {"theirs": "floor-relay", "reference": True}
    cmp(f"{ref} Ferry relay vs floor relay: req/s (small GET, c=64)", ("small_c64", "rps"), ("small_c64", "rps"),
        **vf)
    cmp(f"{ref} Ferry relay vs floor relay: CPU per request", ("small_c64", "cpu_us_req"),
        ("small_c64", "cpu_us_req"), False, unit=" µs", **vf)
    gw = {"ours": "gateway", "theirs": "nginx"}
    cmp("gateway req/s ≥ 1.0× nginx (small GET, c=64)", ("small_c64", "rps"), ("small_c64", "rps"), **gw)
    cmp("gateway p99 ≤ nginx's (small GET, c=64)", ("small_c64", "p99_ms"), ("small_c64", "p99_ms"), False,
        unit=" ms", **gw)
    cmp("gateway CPU per request ≤ nginx", ("small_c64", "cpu_us_req"), ("small_c64", "cpu_us_req"), False,
        unit=" µs", **gw)
    cmp("gateway concurrency-1 p50 ≤ nginx's", ("small_c1", "p50_ms"), ("small_c1", "p50_ms"), False,
        unit=" ms", **gw)
    cmp("gateway 10 MiB GET ≥ 1.0× nginx", ("get10m", "mibps"), ("get10m", "mibps"), unit=" MiB/s", **gw)
    cmp("gateway 10 MiB POST ≥ 1.0× nginx", ("post10m", "mibps"), ("post10m", "mibps"), unit=" MiB/s", **gw)
    # The proxy floors: hyper's, and the lighter gateway's (hyper's server, the upstream side by hand: raw.rs).
    for key in ("floor", "floor-raw"):
        floor_rows(key, "nginx")
    vp = {"ours": "gateway", "theirs": "floor", "reference": True}
    cmp(f"{ref} Ferry gateway vs floor proxy: req/s (small GET, c=64)", ("small_c64", "rps"), ("small_c64", "rps"),
        **vp)
    cmp(f"{ref} Ferry gateway vs floor proxy: CPU per request", ("small_c64", "cpu_us_req"),
        ("small_c64", "cpu_us_req"), False, unit=" µs", **vp)
    nf = {"ours": "nginx-fwd", "theirs": "nginx", "reference": True}
    cmp(f"{ref} nginx with Ferry's headers vs nginx: req/s (small GET, c=64)", ("small_c64", "rps"),
        ("small_c64", "rps"), **nf)
    cmp(f"{ref} nginx with Ferry's headers vs nginx: CPU per request", ("small_c64", "cpu_us_req"),
        ("small_c64", "cpu_us_req"), False, unit=" µs", **nf)
    for ours, theirs, what in (("ferry", "ferry-base", "relay"), ("gateway", "gateway-base", "gateway")):
        if theirs in systems:
            vb = {"ours": ours, "theirs": theirs, "reference": True}
            cmp(f"{ref} Ferry {what}, this build vs the baseline build: req/s (small GET, c=64)",
                ("small_c64", "rps"), ("small_c64", "rps"), **vb)
            cmp(f"{ref} Ferry {what}, this build vs the baseline build: CPU per request",
                ("small_c64", "cpu_us_req"), ("small_c64", "cpu_us_req"), False, unit=" µs", **vb)
    vn = {"ours": "gateway", "theirs": "nginx-fwd", "reference": True}
    cmp(f"{ref} Ferry gateway vs nginx with Ferry's headers: req/s (small GET, c=64)", ("small_c64", "rps"),
        ("small_c64", "rps"), **vn)
    cmp(f"{ref} Ferry gateway vs nginx with Ferry's headers: CPU per request", ("small_c64", "cpu_us_req"),
        ("small_c64", "cpu_us_req"), False, unit=" µs", **vn)
    # Memory given back after load: the RSS AFTER_LOAD_S[-1] seconds after the system's last load against its RSS
    # before the loads, summed over its processes (the relay: node + connector).
    dt = AFTER_LOAD_S[-1]
    for key, what in (("ferry", "relay (node + connector)"), ("gateway", "gateway")):
        if key not in systems:
            res.append(f"| RSS after load ≤ 1.5× idle within {dt} s: {what} | not measurable ({key} missing) |")
            continue
        s = systems[key]
        idle_kib, after_kib = s["idle_rss_total"], s["after_rss_total"]
        per = "; ".join(f"{s['idle_rss'].get(p, 0) / 1024:.1f} → {v / 1024:.1f}"
                        for p, v in s["after_rss"][dt].items())
        res.append(f"| RSS after load ≤ 1.5× idle within {dt} s: {what} | "
                   f"{'met' if after_kib <= 1.5 * idle_kib else 'missed'}: {idle_kib / 1024:.1f} MiB idle, "
                   f"{after_kib / 1024:.1f} MiB {dt} s after its last load ({after_kib / idle_kib:.2f}×; per process, "
                   f"MiB: {per}) |")
    if "ferry" in systems:
        fs_pid = next(iter(systems["ferry"]["idle_rss"]))
        v = systems["ferry"]["idle_rss"][fs_pid] / 1024
        res.append(f"| idle node ≤ 16 MiB RSS | {'met' if v <= 16 else 'missed'}: {v:.1f} MiB (ferry serve with one "
                   f"connector, before load) |")
    for r in idle:
        if "failed" in r:
            res.append(f"| {r['n']:,} idle connectors | missed: {r['failed']} |")
            continue
        res.append(f"| ≤ 32 KiB per idle connector ({r['n']:,}) | "
                   f"{'met' if r['per_conn_kib'] <= 32 else 'missed'}: {r['per_conn_kib']:.1f} KiB |")
        if r["n"] == 10000:
            held = r["tool"]["alive"]
            res.append(f"| 10,000 idle connectors held | {'met' if held == 10000 else 'missed'}: {held:,} alive at "
                       f"the end |")
    if not any(r["n"] == 10000 for r in idle):
        why = "--no-idle" if not idle else "--quick"
        res.append(f"| 10,000 idle connectors held | not measured with {why} |")
    for key, bus in CROSS_LABELS.items():
        x = {"ours": key, "theirs": "ferry"}
        names[key] = f"cross-node ({bus})"
        names["ferry"] = "one-node relay"
        cmp(f"cross-node ({bus}) req/s ≥ 0.5× one-node (small GET, c=64)", ("small_c64", "rps"),
            ("small_c64", "rps"), factor=0.5, **x)
        cmp(f"cross-node ({bus}) 10 MiB GET ≥ 0.5× one-node", ("get10m", "mibps"), ("get10m", "mibps"),
            factor=0.5, unit=" MiB/s", **x)
        cmp(f"cross-node ({bus}) 10 MiB POST ≥ 0.5× one-node", ("post10m", "mibps"), ("post10m", "mibps"),
            factor=0.5, unit=" MiB/s", **x)
        if key in systems and "ferry" in systems:
            xp, fp = metric(key, "small_c1", "p50_ms"), metric("ferry", "small_c1", "p50_ms")
            if xp is not None and fp is not None:
                res.append(f"| (reference, not a target) c=1 p50 the {bus} hop adds | {xp - fp:+.3f} ms "
                           f"({xp:.3f} vs {fp:.3f} ms one-node) |")
    return res


if __name__ == "__main__":
    sys.exit(main())
