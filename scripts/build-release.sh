#!/usr/bin/env bash
# The release binary as Ferry ships and benchmarks it: built, run once under valgrind to see which functions
# run (bench/link-order.sh), and linked again with those functions next to each other, so that a node maps
# about 6 MiB fewer code pages (docs/performance.md, "Idle memory"). The code is the same as from a plain
# `cargo build --release -p ferry`; only its layout differs. Needs valgrind, nginx and curl (installed by
# bench/link-order.sh from Debian's packages when missing). Output: target/release/ferry.
set -euo pipefail
cd "$(dirname "$0")/.."
ORDER="$PWD/target/link-order.txt"
echo "[release] cargo build --release -p ferry" >&2
env -u FERRY_LINK_ORDER cargo build --release -p ferry >&2
echo "[release] profiling which functions run (bench/link-order.sh)" >&2
bench/link-order.sh "$ORDER"
echo "[release] linking again in that order" >&2
FERRY_LINK_ORDER="$ORDER" cargo build --release -p ferry >&2
