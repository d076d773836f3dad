#!/usr/bin/env bash
# Check a running Ferry node's management API against its own OpenAPI document with schemathesis (PyPI).
#
#   scripts/schemathesis/run.sh --install-only          create/refresh the venv and exit
#   scripts/schemathesis/run.sh ADMIN_URL ADMIN_KEY [extra `st run` arguments]
#
# ADMIN_URL is the admin listener's base URL (http://127.0.0.1:8081); ADMIN_KEY an admin key (fadm_…).
# The venv lives in .tools/schemathesis (git-ignored) at the repository root, or in $FERRY_TOOLS_DIR.
# Environment: FERRY_SCHEMATHESIS_MAX_EXAMPLES (default 20) bounds the examples per operation,
# FERRY_SCHEMATHESIS_MAX_TIME (default 100 seconds) the whole run.
# Exit codes: 0 all checks passed, 1 a check failed, 2 usage, 3 Python or the install is missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tools="${FERRY_TOOLS_DIR:-$root/.tools}"
venv="$tools/schemathesis"
requirements="$here/requirements.txt"
stamp="$venv/.installed-requirements"

python="${PYTHON:-python3}"
if ! command -v "$python" >/dev/null 2>&1; then
    echo "schemathesis: $python not found; install Python 3.9+ with venv and pip" >&2
    exit 3
fi

# (Re)install when the venv is missing or the pinned requirements changed; one installer at a time (tests may
# start several runs at once).
mkdir -p "$tools"
exec 9>"$tools/.schemathesis.lock"
flock 9
if [ ! -x "$venv/bin/st" ] || ! cmp -s "$requirements" "$stamp"; then
    echo "schemathesis: installing $(grep -v '^#' "$requirements" | tr '\n' ' ') into $venv" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" || { echo "schemathesis: cannot create a venv" >&2; exit 3; }
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" \
        || { echo "schemathesis: pip install failed" >&2; exit 3; }
    cp "$requirements" "$stamp"
fi
flock -u 9

if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi
if [ $# -lt 2 ]; then
    sed -n '2,12p' "$0" >&2
    exit 2
fi
url="${1%/}"
key="$2"
shift 2

# Run from the git-ignored tools folder so that nothing schemathesis writes lands in the work tree.
cd "$tools"
exec "$venv/bin/st" run "$url/api/v1/openapi.json" \
    --url "$url" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance \
    --max-examples "${FERRY_SCHEMATHESIS_MAX_EXAMPLES:-20}" \
    --max-time "${FERRY_SCHEMATHESIS_MAX_TIME:-100}" \
    --request-timeout 10 \
    --generation-with-security-parameters false \
    --generation-database none \
    --no-color \
    "$@"
