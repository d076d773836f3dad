#!/usr/bin/env python3
"""Open N idle Ferry connector tunnels to one node and hold them open.

Each tunnel does what `ferry connector` does up to the point where it would serve requests (docs/protocol.md
§1-3): the HTTP/1.1 upgrade `GET /_ferry/tunnel` with a bearer token, then, on the `101`, the HTTP/2 *server*
side of the reversed connection: it sends its SETTINGS (SETTINGS_ENABLE_CONNECT_PROTOCOL = 1, max concurrent
streams, 1 MiB stream window), reads the node's client preface, acknowledges the node's SETTINGS and answers its
keep-alive PINGs. Nothing else: a stream opened on such a tunnel would get no answer, so the tenant used here must
not receive relay traffic.

Tokens: one token request (POST /oauth/token, client credentials) is made per `--token-reuse` tunnels (default:
one token for all of them). A token is checked only when a tunnel opens and stays valid for `token_ttl`
(10 min by default), and the token endpoint verifies an argon2 hash on purpose slowly, so fetching 10,000 tokens
would measure argon2, not idle tunnels.

Usage:
  idle_tunnels.py --server http://127.0.0.1:PORT --tenant T --secret S -n 10000 --hold 5 [--status-file F]

Prints one JSON line on stdout when every tunnel has been tried and the hold time has passed:
  {"requested": N, "opened": .., "failed": .., "alive": .., "open_seconds": .., "errors": {...}}
With --ready-file, writes the same JSON (without "alive") to that file as soon as all are opened, then holds
until --hold seconds have passed *or* the file named by --stop-file exists.
"""

import argparse
import asyncio
import json
import os
import struct
import sys
import time
import urllib.parse
import uuid

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
T_DATA, T_HEADERS, T_RST, T_SETTINGS, T_PUSH, T_PING, T_GOAWAY, T_WINDOW = 0, 1, 3, 4, 5, 6, 7, 8
F_ACK = 0x1


def frame(ftype: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, ftype, flags, stream & 0x7FFFFFFF) + payload


def settings(pairs) -> bytes:
    return frame(T_SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


# SETTINGS_MAX_CONCURRENT_STREAMS=0x3, SETTINGS_INITIAL_WINDOW_SIZE=0x4, SETTINGS_MAX_HEADER_LIST_SIZE=0x6,
# SETTINGS_ENABLE_CONNECT_PROTOCOL=0x8: what `ferry connector` advertises by default.
SERVER_SETTINGS = settings([(0x3, 1000), (0x4, 1 << 20), (0x6, 64 << 10), (0x8, 1)])
# Grow the connection window to 8 MiB like the connector does (65535 is the initial one).
SERVER_WINDOW = frame(T_WINDOW, 0, 0, struct.pack(">I", (8 << 20) - 65535))


class Stats:
    def __init__(self):
        self.opened = 0
        self.failed = 0
        self.alive = 0
        self.closed_after_open = 0
        self.pings = 0
        self.errors = {}

    def err(self, what: str):
        self.failed += 1
        self.errors[what] = self.errors.get(what, 0) + 1


async def fetch_token(host: str, port: int, tenant: str, secret: str, timeout: float) -> str:
    body = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": tenant, "client_secret": secret}
    ).encode()
    r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        w.write(
            b"POST /oauth/token HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (host.encode(), port, len(body))
            + body
        )
        await w.drain()
        raw = await asyncio.wait_for(r.read(), timeout)
    finally:
        w.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"token endpoint answered {head[:200]!r} {payload[:200]!r}")
    if b"transfer-encoding: chunked" in head.lower():
        # De-chunk (small JSON answer).
        out, rest = b"", payload
        while rest:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            out, rest = out + rest[:size], rest[size + 2 :]
        payload = out
    return json.loads(payload)["access_token"]


async def hold_tunnel(host, port, token, stats: Stats, opened_evt, stop: asyncio.Event, timeout: float):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except Exception as e:  # noqa: BLE001 - every failure is counted by kind
        stats.err(f"connect: {type(e).__name__}: {e}"[:120])
        opened_evt()
        return
    try:
        w.write(
            (
                f"GET /_ferry/tunnel HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: Upgrade\r\n"
                f"Upgrade: ferry-tunnel/1\r\nAuthorization: Bearer {token}\r\n"
                f"Ferry-Connector-Id: {uuid.uuid4()}\r\nFerry-Targets: idle\r\n"
                f"Ferry-Connector-Version: bench-idle\r\n\r\n"
            ).encode()
        )
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        status = head.split(b" ", 2)[1]
        if status != b"101":
            stats.err(f"handshake: {head.splitlines()[0].decode(errors='replace')}")
            opened_evt()
            return
        # We are the HTTP/2 server: our SETTINGS first (the server preface), then read the client's preface.
        w.write(SERVER_SETTINGS + SERVER_WINDOW)
        await w.drain()
        got = await asyncio.wait_for(r.readexactly(len(PREFACE)), timeout)
        if got != PREFACE:
            stats.err("bad client preface")
            opened_evt()
            return
        stats.opened += 1
        stats.alive += 1
        opened_evt()
        try:
            await serve_frames(r, w, stats, stop)
        finally:
            stats.alive -= 1
            if not stop.is_set():
                stats.closed_after_open += 1
    except Exception as e:  # noqa: BLE001
        stats.err(f"{type(e).__name__}: {e}"[:120])
        opened_evt()
    finally:
        w.close()


async def serve_frames(r, w, stats: Stats, stop: asyncio.Event):
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        while True:
            read = asyncio.ensure_future(r.readexactly(9))
            done, _ = await asyncio.wait({read, stop_task}, return_when=asyncio.FIRST_COMPLETED)
            if stop_task in done:
                read.cancel()
                return
            try:
                hdr = read.result()
            except asyncio.IncompleteReadError:
                return  # the node closed the tunnel
            n = (hdr[0] << 16) | (hdr[1] << 8) | hdr[2]
            ftype, flags = hdr[3], hdr[4]
            payload = await r.readexactly(n) if n else b""
            if ftype == T_SETTINGS and not flags & F_ACK:
                w.write(frame(T_SETTINGS, F_ACK, 0))
            elif ftype == T_PING and not flags & F_ACK:
                stats.pings += 1
                w.write(frame(T_PING, F_ACK, 0, payload))
            elif ftype == T_HEADERS:
                # Not expected on an idle tunnel: refuse the stream.
                stream = struct.unpack(">I", hdr[5:9])[0] & 0x7FFFFFFF
                w.write(frame(T_RST, 0, stream, struct.pack(">I", 0x7)))  # REFUSED_STREAM
            elif ftype == T_GOAWAY:
                return
            await w.drain()
    finally:
        stop_task.cancel()


def once(fn):
    done = []

    def call():
        if not done:
            done.append(1)
            fn()

    return call


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", required=True, help="http://127.0.0.1:PORT")
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--secret", required=True)
    ap.add_argument("-n", type=int, required=True, help="number of tunnels")
    ap.add_argument("--hold", type=float, default=5.0, help="seconds to hold them once all are open (max)")
    ap.add_argument("--parallel", type=int, default=64, help="handshakes in flight at once")
    ap.add_argument("--token-reuse", type=int, default=0, help="tunnels per token (0 = one token for all)")
    ap.add_argument("--timeout", type=float, default=10.0, help="bound of each connect/handshake step")
    ap.add_argument("--open-budget", type=float, default=120.0, help="give up opening after this many seconds")
    ap.add_argument("--ready-file", help="write the open summary here once all tunnels were tried")
    ap.add_argument("--stop-file", help="stop holding early when this file exists")
    a = ap.parse_args()

    u = urllib.parse.urlsplit(a.server)
    host, port = u.hostname, u.port or 80
    stats = Stats()
    stop = asyncio.Event()
    sem = asyncio.Semaphore(a.parallel)
    t0 = time.monotonic()
    token = await fetch_token(host, port, a.tenant, a.secret, a.timeout)
    tokens_fetched = 1
    tasks = []
    for i in range(a.n):
        if time.monotonic() - t0 > a.open_budget:
            stats.err("open budget exhausted")
            continue
        if a.token_reuse and i and i % a.token_reuse == 0:
            token = await fetch_token(host, port, a.tenant, a.secret, a.timeout)
            tokens_fetched += 1
        await sem.acquire()
        tasks.append(asyncio.ensure_future(hold_tunnel(host, port, token, stats, once(sem.release), stop, a.timeout)))
    # Wait until every handshake finished (all permits back).
    for _ in range(a.parallel):
        await sem.acquire()
    open_seconds = time.monotonic() - t0
    summary = {
        "requested": a.n,
        "opened": stats.opened,
        "failed": stats.failed,
        "open_seconds": round(open_seconds, 2),
        "tokens_fetched": tokens_fetched,
        "errors": stats.errors,
    }
    if a.ready_file:
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(summary, f)
        os.replace(tmp, a.ready_file)
    t_hold = time.monotonic()
    while time.monotonic() - t_hold < a.hold:
        if a.stop_file and os.path.exists(a.stop_file):
            break
        await asyncio.sleep(0.1)
    summary["alive"] = stats.alive
    summary["closed_by_node"] = stats.closed_after_open
    summary["pings_answered"] = stats.pings
    summary["held_seconds"] = round(time.monotonic() - t_hold, 2)
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError):
        pass
    asyncio.run(main())
    sys.exit(0)
