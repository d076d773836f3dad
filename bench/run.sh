#!/usr/bin/env bash
# Ferry's benchmark: the one command. See docs/performance.md.
#   bench/run.sh            full run (< 10 min): every path, every load 5 s, 1,000 and 10,000 idle connectors
#   bench/run.sh --quick    smoke run (~2 min): loads of 2 s, 1,000 idle connectors
#   bench/run.sh --no-build use target/release/ferry as it is (FERRY_BIN=... to point elsewhere)
#   --paths direct,nginx,rathole,ferry,ferry1,ferry-ws,floor-relay,floor-mux,floor-fmux,floor-h2raw,xnats,xamqp,xbus,
#           gateway,floor,floor-raw,nginx-fwd /
#   --loads small_c64,k1_c64,small_c1,get10m,post10m / --secs N / --no-idle: a subset, for profiling runs
#   --baseline BIN          also run the relay and the gateway from another ferry binary (columns ferry-base and
#                           gateway-base): a before/after in one run
# floor-relay and floor are the hyper floors (bench/floor: bare hyper pass-throughs, a relay node + connector and a
# proxy), references beside rathole and the Ferry relay, and beside nginx and the Ferry gateway; floor-mux is the
# floor of a lighter tunnel (plain frames instead of HTTP/2, no parsing in the connector: bench/floor/src/mux.rs),
# floor-fmux the same on Ferry's protocol 2 connection (ferry_tunnel::mux), floor-h2raw the same with HTTP/2 between
# them (bench/floor/src/h2raw.rs), floor-raw of a lighter gateway (the hyper floor proxy with the upstream side by
# hand: bench/floor/src/raw.rs).
# bench/floor is built on every run, --no-build or not (cargo skips it when fresh; FLOOR_BIN=... to use another
# binary); if it does not build, its six columns are left out.
# xnats and xamqp are the cross-node relay (gateway node -> node link -> relay node -> connector, presence over NATS or
# RabbitMQ), xbus the same on NATS with the node links off (every request and body through the broker),
# on PostgreSQL (FERRY_TEST_POSTGRES_URL, FERRY_TEST_NATS_URL, FERRY_TEST_AMQP_URL as in the tests); without them
# those columns are left out with a warning.
# Installs what it lacks: nginx and wrk (Debian), oha and rathole (crates.io, into bench/.tools).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=""; BUILD=1; PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=--quick ;;
    --no-build) BUILD=0 ;;
    --no-idle) PASS+=("$1") ;;
    --paths|--loads|--secs|--baseline) PASS+=("$1" "${2:?$1 needs a value}"); shift ;;
    *) echo "usage: bench/run.sh [--quick] [--no-build] [--paths a,b] [--loads x,y] [--secs N] [--no-idle] [--baseline BIN]" >&2; exit 2 ;;
  esac
  shift
done
TOOLS="$PWD/bench/.tools"
mkdir -p "$TOOLS"
export PATH="$TOOLS/bin:$HOME/.cargo/bin:$PATH"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"

need_apt=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v wrk >/dev/null || need_apt+=(wrk)
command -v curl >/dev/null || need_apt+=(curl)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[bench] installing ${need_apt[*]} (apt)" >&2
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >&2
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

for tool in oha rathole; do
  if ! command -v "$tool" >/dev/null; then
    echo "[bench] installing $tool into $TOOLS (cargo install --locked)" >&2
    # rathole 0.5.0's lock file pins a `time` that newer compilers refuse; fall back to fresh resolution.
    cargo install --locked --root "$TOOLS" "$tool" >&2 || cargo install --root "$TOOLS" "$tool" >&2 \
      || echo "[bench] WARNING: $tool could not be installed; its rows will be missing" >&2
  fi
done
RATHOLE=$(command -v rathole || true)

if [ "$BUILD" = 1 ]; then
  echo "[bench] scripts/build-release.sh (cargo build --release, then linked in the order its functions run)" >&2
  scripts/build-release.sh
fi
FERRY="${FERRY_BIN:-$PWD/target/release/ferry}"
[ -x "$FERRY" ] || { echo "[bench] no ferry binary at $FERRY" >&2; exit 1; }

if [ -n "${FLOOR_BIN:-}" ]; then
  FLOOR="$FLOOR_BIN"
elif (cd bench/floor && cargo build --release >&2); then
  FLOOR="$PWD/bench/floor/target/release/ferry-bench-floor"
else
  FLOOR=""
fi
if [ -z "$FLOOR" ] || [ ! -x "$FLOOR" ]; then
  echo "[bench] WARNING: no floor binary (bench/floor did not build, or FLOOR_BIN is wrong); its rows will be missing" >&2
  FLOOR=""
fi

# 10,000 idle tunnels need 10,000+ descriptors in the node and in the load tool.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10100 ]; then
  ulimit -n 10100 2>/dev/null || echo "[bench] WARNING: ulimit -n is $(ulimit -n); 10,000 connectors will fail" >&2
fi

# Every load is bounded by the harness; the whole run is bounded here too.
exec timeout -k 10 900 python3 bench/harness.py $QUICK ${PASS[@]+"${PASS[@]}"} --ferry "$FERRY" \
  --tools "{\"wrk\":\"$(command -v wrk)\",\"oha\":\"$(command -v oha)\",\"nginx\":\"$NGINX\",\"rathole\":\"$RATHOLE\",\"floor\":\"$FLOOR\"}"
