#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable where timings on a shared machine are not.
# See docs/performance.md ("Instruction counts").
#
#   bench/callgrind.sh [N]    N small GETs (default 2000) through the gateway and through the relay
#
# Runs an nginx origin, a gateway node, a relay node and a connector (the three Ferry processes under callgrind),
# and as references nginx as a reverse proxy, the floors (bench/floor: bare hyper pass-throughs, one for the
# gateway's shape and a node + connector pair for the relay's, and the mux, protocol 2 and h2-raw pairs
# of lighter tunnels) and rathole,
# on loopback with OS-chosen ports, warms them up with 300 requests each, zeroes the counters, sends N requests
# per path with oha (concurrency 8) and prints user-space instructions per request of each Ferry process. The
# callgrind files stay in bench/results/callgrind-<timestamp>/ for callgrind_annotate.
# Needs valgrind (Debian package, installed if missing), nginx, and oha (bench/run.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
N="${1:-2000}"
TOOLS="$PWD/bench/.tools"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
command -v valgrind >/dev/null || { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq valgrind >&2; }
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
[ -x "$NGINX" ] && command -v oha >/dev/null || { echo "run bench/run.sh --quick once first (nginx, oha)" >&2; exit 1; }
FERRY="${FERRY_BIN:-$PWD/target/release/ferry}"
[ -x "$FERRY" ] || cargo build --release -p ferry >&2

OUT="$PWD/bench/results/callgrind-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
source bench/lib.sh
bench_setup /tmp/ferry-callgrind-XXXXXX
PO=$(port); PG=$(port); PR=$(port); PN=$(port); PT=$(port); PTC=$(port)
start_origin "$PO"
USER_LINE=""; [ "$(id -u)" -eq 0 ] && USER_LINE="user root;"
# References, under callgrind too: nginx as a reverse proxy (one process: master_process off) and rathole.
mkdir -p "$WORK/proxy"
cat > "$WORK/proxy/nginx.conf" <<EOF
$USER_LINE
master_process off; worker_processes 1; daemon off; pid $WORK/proxy/nginx.pid; error_log $WORK/proxy/error.log warn;
events { worker_connections 1024; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $WORK/proxy/ct; proxy_temp_path $WORK/proxy/pt;
  upstream origin { server 127.0.0.1:$PO; keepalive 16; }
  server { listen 127.0.0.1:$PN; location / { proxy_http_version 1.1; proxy_set_header Connection "";
    proxy_buffering off; proxy_request_buffering off; proxy_pass http://origin; } } }
EOF
cat > "$WORK/gateway.toml" <<EOF
[server]
listen = "127.0.0.1:$PG"
data_dir = "$WORK/gateway-data"

[[gateway.routes]]
path = "/"
upstream = "origin"

[gateway.upstreams.origin]
servers = [{ url = "http://127.0.0.1:$PO" }]
EOF
SECRET=$("$FERRY" tenant create bench --create --data-dir "$WORK/relay-data" 2>/dev/null | tail -1)
VG=(valgrind --tool=callgrind --dump-instr=no)
"${VG[@]}" --callgrind-out-file="$OUT/gateway.out" "$FERRY" --config "$WORK/gateway.toml" serve \
  --admin-listen 127.0.0.1:0 >"$WORK/gateway.log" 2>&1 & PIDS+=($!)
"${VG[@]}" --callgrind-out-file="$OUT/node.out" "$FERRY" serve --listen "127.0.0.1:$PR" \
  --data-dir "$WORK/relay-data" --admin-listen 127.0.0.1:0 >"$WORK/node.log" 2>&1 & PIDS+=($!)
wait_ok "http://127.0.0.1:$PR/healthz"
"${VG[@]}" --callgrind-out-file="$OUT/connector.out" "$FERRY" connector --server "http://127.0.0.1:$PR" \
  --tenant bench --secret "$SECRET" --target "origin=http://127.0.0.1:$PO" >"$WORK/connector.log" 2>&1 & PIDS+=($!)
"${VG[@]}" --callgrind-out-file="$OUT/nginx.out" "$NGINX" -p "$WORK/proxy" -c "$WORK/proxy/nginx.conf" \
  >"$WORK/nginx.log" 2>&1 & PIDS+=($!)
GW="http://127.0.0.1:$PG/small"; RELAY="http://127.0.0.1:$PR/relay/bench/origin/small"
PROXY="http://127.0.0.1:$PN/small"; URLS=("$GW" "$RELAY" "$PROXY"); KINDS=(gateway node connector nginx)
# The floor: the least a hyper-based reverse proxy spends (bench/floor, a pass-through with no rules).
FLOOR="$PWD/bench/floor/target/release/ferry-bench-floor"
[ -x "$FLOOR" ] || (cd bench/floor && cargo build --release >&2)
# floor_proxy KIND MODE: a proxy floor under callgrind; floor_relay PREFIX MODE: a relay floor's connector, then
# its node (which dials the connector), as PREFIX-connector and PREFIX-node.
floor_proxy() {
  local p; p=$(port)
  "${VG[@]}" --callgrind-out-file="$OUT/$1.out" "$FLOOR" "$2" "127.0.0.1:$p" "127.0.0.1:$PO" \
    >"$WORK/$1.log" 2>&1 & PIDS+=($!)
  URLS+=("http://127.0.0.1:$p/small"); KINDS+=("$1")
}
floor_relay() {
  local n t; n=$(port); t=$(port)
  "${VG[@]}" --callgrind-out-file="$OUT/$1-connector.out" "$FLOOR" "$2-connector" "127.0.0.1:$t" \
    "127.0.0.1:$PO" >"$WORK/$1-connector.log" 2>&1 & PIDS+=($!)
  sleep 2
  "${VG[@]}" --callgrind-out-file="$OUT/$1-node.out" "$FLOOR" "$2-node" "127.0.0.1:$n" "127.0.0.1:$t" \
    >"$WORK/$1-node.log" 2>&1 & PIDS+=($!)
  URLS+=("http://127.0.0.1:$n/small"); KINDS+=("$1-node" "$1-connector")
}
floor_proxy floor proxy
# the proxy's floor with the upstream side by hand (bench/floor/src/raw.rs)
floor_proxy floor-raw proxy-raw
# the relay's floor: HTTP/1.1 in, one HTTP/2 connection between the two, HTTP/1.1 out
floor_relay floor relay
# lighter tunnels: plain frames instead of HTTP/2 and no parsing in the connector (mux.rs), the same on Ferry's own
# protocol 2 connection (ferry_tunnel::mux; ferrymux.rs), and with HTTP/2 (the h2 crate) between them (h2raw.rs)
floor_relay mux relay-mux
floor_relay fmux relay-fmux
floor_relay h2raw relay-h2raw
if command -v rathole >/dev/null; then
  printf '[server]\nbind_addr = "127.0.0.1:%s"\n[server.services.origin]\ntoken = "bench"\nbind_addr = "127.0.0.1:%s"\n' \
    "$PTC" "$PT" > "$WORK/rathole-server.toml"
  printf '[client]\nremote_addr = "127.0.0.1:%s"\n[client.services.origin]\ntoken = "bench"\nlocal_addr = "127.0.0.1:%s"\n' \
    "$PTC" "$PO" > "$WORK/rathole-client.toml"
  "${VG[@]}" --callgrind-out-file="$OUT/rathole-server.out" rathole -s "$WORK/rathole-server.toml" \
    >"$WORK/rathole-server.log" 2>&1 & PIDS+=($!)
  sleep 2
  "${VG[@]}" --callgrind-out-file="$OUT/rathole-client.out" rathole -c "$WORK/rathole-client.toml" \
    >"$WORK/rathole-client.log" 2>&1 & PIDS+=($!)
  URLS+=("http://127.0.0.1:$PT/small"); KINDS+=(rathole-server rathole-client)
fi
for u in "${URLS[@]}"; do wait_ok "$u"; done
for u in "${URLS[@]}"; do oha -n 300 -c 8 --no-tui "$u" >/dev/null; done
callgrind_control -z >/dev/null 2>&1
for u in "${URLS[@]}"; do oha -n "$N" -c 8 --no-tui "$u" | grep -E "Success rate" | sed "s|^ *|$u: |"; done
callgrind_control -d >/dev/null 2>&1
sleep 1
for k in "${KINDS[@]}"; do
  f=$(ls -t "$OUT/$k.out".* | head -1)
  total=$(callgrind_annotate --threshold=100 --auto=no "$f" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
  echo "$k: $((total / N)) instructions per request ($f)"
done
