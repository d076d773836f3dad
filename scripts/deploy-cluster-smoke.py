#!/usr/bin/env python3
"""Runs the Ferry nodes of a deployment file as processes on this machine (scripts/check-deploy).

The file is deploy/kubernetes/rendered/ferry.yaml (each Deployment's env and args, the ConfigMap's ferry.toml) or
the output of `docker-compose config` for a file of deploy/compose (each Ferry service's environment and
command, on the image's ENV). Only what a pod or a container has and a process here has not is replaced: the
listen addresses (free loopback ports instead of 0.0.0.0:8080 and :8081), the node id and address, the data
directory, and the database URL and bus (a fresh database on the local PostgreSQL, the local NATS or RabbitMQ).
Then: every node answers /readyz; an admin key and a tenant are made with the CLI in the management node's
environment, as `kubectl exec deploy/ferry-management -- ferry …` or `docker compose exec management ferry …`
would; a connector attaches to a relay node; a request to a gateway node reaches the target (across the bus
when those are different nodes); the nodes stop on SIGTERM with exit 0 within their grace period
(terminationGracePeriodSeconds, stop_grace_period).

usage: deploy-cluster-smoke.py FILE.yaml FERRY_BINARY nats|amqp|memory [CONNECTOR.yaml]
With CONNECTOR.yaml (deploy/kubernetes/connector.yaml), the connector runs with that Deployment's environment.
Prints `ok: …` lines; exits 1 on a failure, 77 when PostgreSQL or the broker is not there.
"""
import http.server
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import yaml  # PyYAML: the kubernetes-validate venv has it

RENDERED, BINARY, BUS = sys.argv[1], sys.argv[2], sys.argv[3]
CONNECTOR = sys.argv[4] if len(sys.argv) > 4 else None  # deploy/kubernetes/connector.yaml
PG = os.environ.get("FERRY_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
BUS_URL = {
    "nats": os.environ.get("FERRY_TEST_NATS_URL", "nats://127.0.0.1:4222"),
    "amqp": os.environ.get("FERRY_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
    "memory": None,
}[BUS]
# the image's ENV (Dockerfile), under every container's own environment
IMAGE_ENV = {"FERRY_LISTEN": "0.0.0.0:8080", "FERRY_ADMIN_LISTEN": "0.0.0.0:8081", "FERRY_DATA_DIR": "/data"}


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def reachable(url, default_port):
    parts = urllib.parse.urlsplit(url)
    try:
        socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2).close()
        return True
    except OSError:
        return False


def get(url, timeout=2):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return None, str(e)


# (another test may have just restarted the broker: give it a while)
deadline = time.time() + 30
while BUS_URL and not (reachable(PG, 5432) and reachable(BUS_URL, 4222 if BUS == "nats" else 5672)):
    if time.time() > deadline:
        break
    time.sleep(1)
if BUS_URL and (not reachable(PG, 5432) or not reachable(BUS_URL, 4222 if BUS == "nats" else 5672)):
    print(f"skipped: the cluster smoke test over {BUS}: PostgreSQL ({PG}) or the broker ({BUS_URL}) is not reachable")
    sys.exit(77)



def seconds(v):
    return int(v) if isinstance(v, int) else int(str(v).rstrip("s"))


def kubernetes_nodes(docs):
    """(name, args, env, grace, config) of each Deployment; the Secret's keys are always there."""
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["ferry.toml"]
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        pod = d["spec"]["template"]["spec"]
        container = pod["containers"][0]
        env = dict(IMAGE_ENV)
        env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
        env.update(FERRY_DATABASE_URL="(secret)", FERRY_TRANSPORT="(secret)")
        yield d["metadata"]["name"], container["args"], env, pod["terminationGracePeriodSeconds"], config


def compose_nodes(doc):
    for name, svc in doc["services"].items():
        if "ferry" not in str(svc.get("image", "")):
            continue
        env = dict(IMAGE_ENV)
        env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
        yield name, svc.get("command") or ["serve"], env, seconds(svc.get("stop_grace_period", "10s")), None


docs = [d for d in yaml.safe_load_all(open(RENDERED)) if d]
specs = list(compose_nodes(docs[0]) if "services" in docs[0] else kubernetes_nodes(docs))
work = tempfile.mkdtemp(prefix="ferry-smoke-")
db = f"ferry_deploy_smoke_{os.getpid()}"
database_url = None
if BUS_URL:
    subprocess.run(["psql", PG, "-qc", f"CREATE DATABASE {db}"], check=True, capture_output=True)
    database_url = f"{PG.rsplit('/', 1)[0]}/{db}"
procs = {}
failed = False


def fail(message):
    global failed
    failed = True
    print("FAILED:", message)


def cleanup():
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()
    if database_url:
        subprocess.run(["psql", PG, "-qc", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)"], capture_output=True)


class Target(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"target saw {self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


try:
    nodes = {}
    for name, args, env, grace, config in specs:
        port, admin = free_port(), free_port()
        env.update(
            PATH=os.environ["PATH"],
            FERRY_LISTEN=f"127.0.0.1:{port}",
            FERRY_ADMIN_LISTEN=f"127.0.0.1:{admin}",
            FERRY_NODE_ID=f"{name}-smoke",
            FERRY_NODE_ADDRESS=f"http://127.0.0.1:{port}",
            FERRY_DATA_DIR=os.path.join(work, name),
            FERRY_LOG_FORMAT="json",
        )
        if "FERRY_DATABASE_URL" in env:
            env["FERRY_DATABASE_URL"] = database_url
        if "FERRY_TRANSPORT" in env:
            env["FERRY_TRANSPORT"] = BUS_URL
            env["FERRY_CLUSTER_NAME"] = f"smoke{os.getpid()}"  # apart from any other cluster on this broker
        if config is not None:
            with open(os.path.join(work, "ferry.toml"), "w") as f:
                f.write(config)
            args = [a.replace("/etc/ferry/ferry.toml", os.path.join(work, "ferry.toml")) for a in args]
        log = open(os.path.join(work, f"{name}.log"), "w")
        procs[name] = subprocess.Popen([BINARY, *args], env=env, stdout=log, stderr=subprocess.STDOUT)
        nodes[name] = dict(env=env, port=port, admin=admin, grace=grace, roles=env.get("FERRY_ROLES", "all"),
                           log=log.name)

    deadline = time.time() + 30
    for name, n in nodes.items():
        while get(f"http://127.0.0.1:{n['port']}/readyz")[0] != 200:
            if procs[name].poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{name} did not become ready:\n" + open(n["log"]).read()[-2000:])
            time.sleep(0.1)
    listed_nodes = ", ".join("%s (%s)" % (k, v["roles"]) for k, v in nodes.items())
    where = os.path.basename(RENDERED)
    print(f"ok: {where}: {listed_nodes} ready (bus: {BUS})")

    by_role = {role: next(k for k, v in nodes.items() if {role, "all"} & set(v["roles"].split(","))) for role in
               ["gateway", "relay", "management"]}
    mgmt = nodes[by_role["management"]]

    def cli(*args):
        # as `kubectl exec deploy/ferry-management -- ferry …`: the pod's environment, no --config
        out = subprocess.run([BINARY, *args], env=mgmt["env"], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise RuntimeError(f"ferry {' '.join(args)}: {out.stderr}")
        return out.stdout.strip()

    key = cli("admin-key", "create", "smoke")
    secret = cli("tenant", "create", "smoke")
    req = urllib.request.Request(f"http://127.0.0.1:{mgmt['admin']}/api/v1/nodes",
                                 headers={"Authorization": f"Bearer {key}"})
    deadline = time.time() + 10  # presence: a heartbeat every 500 ms
    while True:
        with urllib.request.urlopen(req, timeout=5) as r:
            listed = r.read().decode()
        missing = [k for k in nodes if f"{k}-smoke" not in listed]
        if not missing or time.time() > deadline:
            break
        time.sleep(0.2)
    if missing:
        fail(f"the management API's /api/v1/nodes lacks {missing}")
    else:
        print("ok: admin key and tenant made with the CLI in the management node's environment; "
              "the management API lists every node")

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    relay = nodes[by_role["relay"]]
    clog = open(os.path.join(work, "connector.log"), "w")
    target = f"http://127.0.0.1:{server.server_address[1]}"
    if CONNECTOR:
        # the connector Deployment's own env and args, its server, tenant, target and Secret pointed here
        cdep = next(d for d in yaml.safe_load_all(open(CONNECTOR)) if d and d["kind"] == "Deployment")
        ccont = cdep["spec"]["template"]["spec"]["containers"][0]
        cenv = {e["name"]: e.get("value", "(from the pod)") for e in ccont["env"]}
        cenv.update(PATH=os.environ["PATH"], FERRY_SERVER=f"http://127.0.0.1:{relay['port']}",
                    FERRY_TENANT="smoke", FERRY_TARGETS=cenv["FERRY_TARGETS"].split("=")[0] + "=" + target,
                    FERRY_CONNECTOR_ID="ferry-connector-7d9f8c6b5-x2k8q", FERRY_SECRET=secret)
        cargs = ccont["args"]
        app = cenv["FERRY_TARGETS"].split("=")[0]
    else:
        cenv = {"PATH": os.environ["PATH"], "FERRY_SECRET": secret}
        cargs = ["connector", "--server", f"http://127.0.0.1:{relay['port']}", "--tenant", "smoke",
                 "--target", f"app={target}"]
        app = "app"
    procs["connector"] = subprocess.Popen([BINARY, *cargs], env=cenv, stdout=clog, stderr=subprocess.STDOUT)
    gateway = nodes[by_role["gateway"]]
    deadline = time.time() + 30
    while True:
        status, body = get(f"http://127.0.0.1:{gateway['port']}/relay/smoke/{app}/x?y=1", timeout=5)
        if status == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    if status == 200 and body == "target saw /x?y=1":
        how = f" (the connector with {os.path.basename(CONNECTOR)}'s environment)" if CONNECTOR else ""
        print(f"ok: a request to {by_role['gateway']} reached the target through the connector on "
              f"{by_role['relay']}{how}")
    else:
        fail(f"no request across the cluster: {status} {body[:300]}\n" + open(clog.name).read()[-1500:])
    # node links (a binary that has them): the gateway node reached the relay node at its FERRY_NODE_ADDRESS;
    # with an address other nodes cannot reach, requests would quietly go by the bus instead
    if by_role["gateway"] != by_role["relay"] and b"/_ferry/link" in open(BINARY, "rb").read():
        glog = open(gateway["log"]).read()
        if "node link up" in glog:
            print(f"ok: {by_role['gateway']} opened a node link to {by_role['relay']} at its node address")
        else:
            fail(f"{by_role['gateway']} opened no node link (log: {[l for l in glog.splitlines() if 'link' in l][:3]})")
    # the tunnel is on the relay node, not the gateway's: a connector sent to the gateway would be refused
    if by_role["gateway"] != by_role["relay"]:
        status, body = get(f"http://127.0.0.1:{gateway['port']}/_ferry/tunnel")
        if status == 404 and "relay role" in body:
            print(f"ok: {by_role['gateway']} refuses /_ferry/tunnel (404, not its role): tunnels go to relay nodes")
        else:
            fail(f"/_ferry/tunnel on the gateway node: {status} {body[:200]}")
    procs["connector"].send_signal(signal.SIGTERM)
    procs["connector"].wait(timeout=40)
    start = time.time()
    for name in nodes:
        procs[name].send_signal(signal.SIGTERM)
    for name, n in nodes.items():
        p = procs[name]
        try:
            code = p.wait(timeout=max(0.1, start + n["grace"] - time.time()))
        except subprocess.TimeoutExpired:
            fail(f"{name} still running {n['grace']} s after SIGTERM (its grace period)")
            continue
        if code == 0:
            print(f"ok: {name}: SIGTERM, exit 0 within {time.time() - start:.1f} s "
                  f"(grace period {n['grace']} s)")
        else:
            fail(f"{name} exited {code}:\n" + open(n["log"]).read()[-1500:])
except Exception as e:  # noqa: BLE001 - any failure is reported with what the nodes logged
    fail(str(e))
finally:
    cleanup()
sys.exit(1 if failed else 0)
