#!/usr/bin/env bash
# Write a linker symbol-ordering file for the ferry binary as built now: every function that runs while a node
# starts, takes a connector, relays and proxies requests and idles, and while the connector does its part,
# recorded with valgrind's callgrind, grouped by which process (and which phase of the node) ran it. scripts/build-release.sh links the release binary with it.
# See docs/performance.md ("Idle memory").
#
#   bench/link-order.sh [OUT]    (default target/link-order.txt)
#
# Needs valgrind and nginx (Debian packages, installed if missing). Loopback only, OS-chosen ports, ~1 minute.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-$PWD/target/link-order.txt}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
need=()
command -v valgrind >/dev/null || need+=(valgrind)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v curl >/dev/null || need+=(curl)
[ ${#need[@]} -eq 0 ] || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >&2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
FERRY="${FERRY_BIN:-$PWD/target/release/ferry}"
[ -x "$FERRY" ] || { echo "build first: cargo build --release -p ferry" >&2; exit 1; }

source bench/lib.sh
bench_setup /tmp/ferry-link-order-XXXXXX
PO=$(port); PS=$(port)
start_origin "$PO"
cat > "$WORK/ferry.toml" <<CONF
[server]
listen = "127.0.0.1:$PS"
data_dir = "$WORK/data"

[[gateway.routes]]
path = "/gw"
strip_prefix = true
upstream = "origin"

[gateway.upstreams.origin]
servers = [{ url = "http://127.0.0.1:$PO" }]
CONF
SECRET=$("$FERRY" tenant create bench --create --data-dir "$WORK/data" 2>/dev/null | tail -1)
VG=(valgrind --tool=callgrind --dump-instr=yes)
"${VG[@]}" --callgrind-out-file="$WORK/node.out" "$FERRY" --config "$WORK/ferry.toml" serve \
  --admin-listen 127.0.0.1:0 >"$WORK/node.log" 2>&1 & PIDS+=($!)
wait_ok "http://127.0.0.1:$PS/healthz"
"${VG[@]}" --callgrind-out-file="$WORK/connector.out" "$FERRY" connector --server "http://127.0.0.1:$PS" \
  --tenant bench --secret "$SECRET" --target "origin=http://127.0.0.1:$PO" >"$WORK/connector.log" 2>&1 & PIDS+=($!)
wait_ok "http://127.0.0.1:$PS/relay/bench/origin/small"
# Two phases, dumped apart: the node's start, a connector and relayed requests first, proxied requests after, so that
# the ordering can keep what a relay node runs apart from what only the gateway adds (link_order.py).
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PS/relay/bench/origin/small"
done
sleep 5   # background loops: store watch, heartbeat, tunnel pings
callgrind_control -d >/dev/null 2>&1
sleep 2
for _ in $(seq 1 50); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PS/gw/small"
done
sleep 2
callgrind_control -d >/dev/null 2>&1
sleep 2
python3 bench/link_order.py "$FERRY" "$OUT" --connector "$WORK"/connector.out.* --node "$WORK/node.out.1" \
  --node-later "$WORK/node.out.2"
