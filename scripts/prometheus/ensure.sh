#!/usr/bin/env bash
# Make sure Prometheus and promtool are installed: Debian's package `prometheus` (which ships both). The metrics
# end-to-end test (tests/metrics.rs) and scripts/check-deploy run this first; it installs nothing when both are
# there.
#
#   scripts/prometheus/ensure.sh        install what is missing, print `prometheus=PATH` and `promtool=PATH`
#
# Exit codes: 0 both found, 3 missing and cannot be installed here (not root, no apt-get, or the install failed;
# the reason goes to stderr).
set -euo pipefail

find_tool() {
    command -v "$1" 2>/dev/null || { [ -x "/usr/bin/$1" ] && echo "/usr/bin/$1"; } || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || true
}

if [ -z "$(find_tool prometheus)" ] || [ -z "$(find_tool promtool)" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "prometheus: prometheus/promtool missing and cannot be installed here (needs root and apt-get)" >&2
        exit 3
    fi
    # One installer at a time: several tests may ask at once, and the other scripts that install Debian packages
    # for tests (scripts/{browser,prometheus,forward-proxy}/ensure.sh) take the same lock: two apt-get runs at
    # once fail on dpkg's lock (CI, 2026-12-07: the proxy tests' install failed while the browser test's ran).
    exec 9>/tmp/ferry-apt-install.lock
    flock 9
    if [ -z "$(find_tool prometheus)" ] || [ -z "$(find_tool promtool)" ]; then
        echo "prometheus: installing prometheus with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        # The package's scripts must not start the system's own Prometheus: the tests start theirs.
        policy=/usr/sbin/policy-rc.d
        created_policy=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
        fi
        install() { apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends prometheus >/tmp/ferry-prometheus-apt.log 2>&1; }
        if ! install; then
            apt-get -o DPkg::Lock::Timeout=600 update >/tmp/ferry-prometheus-apt-update.log 2>&1 || true
            install || { [ $created_policy = 1 ] && rm -f "$policy"; echo "prometheus: apt-get install prometheus failed (/tmp/ferry-prometheus-apt.log)" >&2; exit 3; }
        fi
        [ $created_policy = 1 ] && rm -f "$policy"
    fi
    flock -u 9
fi

for tool in prometheus promtool; do
    path="$(find_tool "$tool")"
    if [ -z "$path" ]; then
        echo "prometheus: $tool still not found after installing" >&2
        exit 3
    fi
    echo "$tool=$path"
done
