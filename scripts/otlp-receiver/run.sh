#!/usr/bin/env bash
# A small OTLP/HTTP trace receiver (receiver.py, on PyPI's opentelemetry-proto) for the tracing end-to-end test.
#
#   scripts/otlp-receiver/run.sh --install-only      create/refresh the venv and exit
#   scripts/otlp-receiver/run.sh OUT [PORT]           receive on 127.0.0.1:PORT (default: OS-chosen), spans to OUT
#
# The first line on stdout is `listening PORT`; every span received is one JSON line in OUT.
# The venv lives in .tools/otlp-receiver (git-ignored) at the repository root, or in $FERRY_TOOLS_DIR.
# Exit codes: 2 usage, 3 Python or the install is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${FERRY_TOOLS_DIR:-$root/.tools}"
venv="$tools/otlp-receiver"
requirements="$here/requirements.txt"
stamp="$venv/.installed-requirements"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "otlp-receiver: $python not found; install Python 3.9+ with venv and pip" >&2
    exit 3
fi

# (Re)install when the venv is missing or the pinned requirements changed; one installer at a time.
mkdir -p "$tools"
exec 9>"$tools/.otlp-receiver.lock"
flock 9
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$requirements" "$stamp"; then
    echo "otlp-receiver: installing $(grep -v '^#' "$requirements" | tr '\n' ' ') into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" || { echo "otlp-receiver: cannot create a venv" >&2; exit 3; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
        || { echo "otlp-receiver: pip install failed" >&2; exit 3; }
    cp "$requirements" "$stamp"
fi
flock -u 9

if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi
if [ $# -lt 1 ]; then
    sed -n '2,9p' "$0" >&2
    exit 2
fi
exec "$venv/bin/python" -u "$here/receiver.py" "$@"
