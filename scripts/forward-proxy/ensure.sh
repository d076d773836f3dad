#!/usr/bin/env bash
# Make sure the forward proxies the connector's proxy tests use are installed: tinyproxy and squid, from
# Debian's packages. The tests (tests/proxy.rs, through ferry-testkit's `proxy` module) run this before they
# start a proxy of their own; it installs nothing when both are there.
#
#   scripts/forward-proxy/ensure.sh            install what is missing, print the paths found
#
# Exit codes: 0 both found (printed as `tinyproxy=PATH` and `squid=PATH`), 3 one is missing and cannot be
# installed here (not root, no apt-get, or the install failed; the reason goes to stderr).
set -euo pipefail

find_tool() {
    command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || { [ -x "/usr/bin/$1" ] && echo "/usr/bin/$1"; } || true
}

missing=()
for tool in tinyproxy squid; do
    [ -n "$(find_tool "$tool")" ] || missing+=("$tool")
done

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "forward-proxy: ${missing[*]} missing and cannot be installed here (needs root and apt-get)" >&2
        exit 3
    fi
    # One installer at a time: several tests may ask at once.
    exec 9>/tmp/ferry-forward-proxy-install.lock
    flock 9
    still=()
    for tool in "${missing[@]}"; do
        [ -n "$(find_tool "$tool")" ] || still+=("$tool")
    done
    if [ ${#still[@]} -gt 0 ]; then
        echo "forward-proxy: installing ${still[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        # The package scripts must not start the system's own proxies: the tests start theirs.
        policy=/usr/sbin/policy-rc.d
        created_policy=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
        fi
        install() { apt-get install -y --no-install-recommends "${still[@]}" >/tmp/ferry-forward-proxy-apt.log 2>&1; }
        if ! install; then
            apt-get update >/tmp/ferry-forward-proxy-apt-update.log 2>&1 || true
            install || { [ $created_policy = 1 ] && rm -f "$policy"; echo "forward-proxy: apt-get install ${still[*]} failed (/tmp/ferry-forward-proxy-apt.log)" >&2; exit 3; }
        fi
        [ $created_policy = 1 ] && rm -f "$policy"
    fi
    flock -u 9
fi

for tool in tinyproxy squid; do
    path="$(find_tool "$tool")"
    if [ -z "$path" ]; then
        echo "forward-proxy: $tool still not found after installing" >&2
        exit 3
    fi
    echo "$tool=$path"
done
