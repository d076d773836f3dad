#!/usr/bin/env bash
# Make sure the forward proxies the connector's proxy tests use are installed: tinyproxy and squid built with
# OpenSSL (Debian's `squid-openssl`, which can inspect TLS: `ssl_bump`, and serve `https_port`), from Debian's
# packages. The tests (tests/proxy.rs, through ferry-testkit's `proxy` module) run this before they start a
# proxy of their own; it installs nothing when all are there. A plain `squid` package is replaced by
# `squid-openssl` (the two conflict; both install /usr/sbin/squid).
#
#   scripts/forward-proxy/ensure.sh            install what is missing, print the paths found
#
# Exit codes: 0 all found (printed as `tinyproxy=PATH`, `squid=PATH` and `certgen=PATH`, squid's helper that
# makes the certificates of inspected sites), 3 one is missing and cannot be installed here (not root, no
# apt-get, or the install failed; the reason goes to stderr).
set -euo pipefail

find_tool() {
    command -v "$1" 2>/dev/null || { [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"; } || { [ -x "/usr/bin/$1" ] && echo "/usr/bin/$1"; } || true
}

certgen=/usr/lib/squid/security_file_certgen

# The Debian packages still missing, by what each provides.
missing_packages() {
    [ -n "$(find_tool tinyproxy)" ] || echo tinyproxy
    local squid
    squid="$(find_tool squid)"
    # Built with OpenSSL: `squid -v` lists `--with-openssl` among its configure options.
    if [ -z "$squid" ] || [ ! -x "$certgen" ]; then
        echo squid-openssl
    else
        case "$("$squid" -v 2>/dev/null)" in
            *--with-openssl*) ;;
            *) echo squid-openssl ;;
        esac
    fi
}

mapfile -t missing < <(missing_packages)

if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "forward-proxy: ${missing[*]} missing and cannot be installed here (needs root and apt-get)" >&2
        exit 3
    fi
    # One installer at a time: several tests may ask at once, and the other scripts that install Debian packages
    # for tests (scripts/{browser,prometheus,forward-proxy}/ensure.sh) take the same lock: two apt-get runs at
    # once fail on dpkg's lock (CI, 2026-12-07: the proxy tests' install failed while the browser test's ran).
    exec 9>/tmp/ferry-apt-install.lock
    flock 9
    mapfile -t still < <(missing_packages)
    if [ ${#still[@]} -gt 0 ]; then
        echo "forward-proxy: installing ${still[*]} with apt-get" >&2
        export DEBIAN_FRONTEND=noninteractive
        # The package scripts must not start the system's own proxies: the tests start theirs.
        policy=/usr/sbin/policy-rc.d
        created_policy=0
        if [ ! -e "$policy" ]; then
            printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
        fi
        install() { apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${still[@]}" >/tmp/ferry-forward-proxy-apt.log 2>&1; }
        if ! install; then
            apt-get -o DPkg::Lock::Timeout=600 update >/tmp/ferry-forward-proxy-apt-update.log 2>&1 || true
            install || { [ $created_policy = 1 ] && rm -f "$policy"; echo "forward-proxy: apt-get install ${still[*]} failed (/tmp/ferry-forward-proxy-apt.log)" >&2; exit 3; }
        fi
        [ $created_policy = 1 ] && rm -f "$policy"
    fi
    flock -u 9
fi

mapfile -t still < <(missing_packages)
if [ ${#still[@]} -gt 0 ]; then
    echo "forward-proxy: ${still[*]} still missing after installing" >&2
    exit 3
fi
echo "tinyproxy=$(find_tool tinyproxy)"
echo "squid=$(find_tool squid)"
echo "certgen=$certgen"
