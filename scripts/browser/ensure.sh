#!/usr/bin/env bash
# Make sure the headless browser the dashboard's end-to-end tests drive is installed: Debian's `chromium` package
# and the npm `playwright-core` driver (no browser download of its own: it drives the system chromium), in this
# folder's git-ignored `node_modules`, from the committed lock file. The tests (tests/dashboard.rs) run this
# before they start the browser; it installs nothing when both are there.
#
#   scripts/browser/ensure.sh            install what is missing, print what was found
#
# Exit codes: 0 both found (printed as `chromium=PATH` and `node_modules=DIR`), 3 one is missing and cannot be
# installed here (not root, no apt-get or npm, or the install failed; the reason goes to stderr).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

find_chromium() {
    for c in chromium chromium-browser; do
        command -v "$c" 2>/dev/null && return 0
    done
    [ -x /usr/bin/chromium ] && echo /usr/bin/chromium && return 0
    return 0
}

# One installer at a time: several tests may ask at once, and the other scripts that install Debian packages
# for tests (scripts/{browser,prometheus,forward-proxy}/ensure.sh) take the same lock: two apt-get runs at once
# fail on dpkg's lock (CI, 2026-12-07: the proxy tests' install failed while the browser test's ran).
exec 9>/tmp/ferry-apt-install.lock
flock 9

if [ -z "$(find_chromium)" ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "browser: chromium missing and cannot be installed here (needs root and apt-get)" >&2
        exit 3
    fi
    echo "browser: installing chromium with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    install() { apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends chromium fonts-dejavu-core >/tmp/ferry-browser-apt.log 2>&1; }
    if ! install; then
        apt-get -o DPkg::Lock::Timeout=600 update >/tmp/ferry-browser-apt-update.log 2>&1 || true
        install || { echo "browser: apt-get install chromium failed (/tmp/ferry-browser-apt.log)" >&2; exit 3; }
    fi
fi

if [ ! -f "$here/node_modules/playwright-core/package.json" ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "browser: npm missing; cannot install playwright-core" >&2
        exit 3
    fi
    echo "browser: installing playwright-core with npm" >&2
    (cd "$here" && npm ci --no-audit --no-fund >/tmp/ferry-browser-npm.log 2>&1) \
        || { echo "browser: npm ci failed (/tmp/ferry-browser-npm.log)" >&2; exit 3; }
fi
flock -u 9

chromium="$(find_chromium)"
if [ -z "$chromium" ]; then
    echo "browser: chromium still missing after installing" >&2
    exit 3
fi
echo "chromium=$chromium"
echo "node_modules=$here/node_modules"
