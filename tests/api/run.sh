#!/usr/bin/env bash
# Property-based API test: checks the real server against docs/openapi.yaml with schemathesis.
#
# - installs the pinned schemathesis of tests/api/requirements.txt into target/api-venv (once;
#   again only when requirements.txt changes);
# - starts the server binary ($KEEPALIVE_BIN, default target/debug/keepalive) on a free port of
#   127.0.0.1 with a fresh data directory, a health, a metrics and a backend API token, and
#   waits for /readyz;
# - runs schemathesis against that loopback address only, with every check (no 5xx; statuses,
#   content types, headers and bodies as documented; negative data rejected; auth enforced) plus
#   the keepalive-specific checks of tests/api/hooks.py, which also supply real session cookies
#   and the real tokens to part of the requests, so both sides of each auth rule are seen;
# - stops the server on exit, whatever happens, and exits non-zero on any failure; the last
#   line is "api: N passed, N failed" (API operations, plus the harness's own checks).
#
# Settings (environment): API_TEST_MAX_EXAMPLES (default 200, per operation and phase),
# API_TEST_SEED (default: random, printed), API_TEST_TIMEOUT (default 240 s for schemathesis),
# API_TEST_SCHEMA (default docs/openapi.yaml), KEEPALIVE_BIN. Reports (JUnit XML, server log)
# land in target/api-report/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

VENV="$ROOT/target/api-venv"
REQUIREMENTS="$ROOT/tests/api/requirements.txt"
SCHEMA="${API_TEST_SCHEMA:-$ROOT/docs/openapi.yaml}"
HOOKS="$ROOT/tests/api/hooks.py"
REPORT_DIR="$ROOT/target/api-report"
BIN="${KEEPALIVE_BIN:-target/debug/keepalive}"
MAX_EXAMPLES="${API_TEST_MAX_EXAMPLES:-200}"
RUN_TIMEOUT="${API_TEST_TIMEOUT:-240}"

say() { printf 'api: %s\n' "$*" >&2; }
die() {
    say "$*"
    echo "api: 0 passed, 1 failed"
    exit 1
}

# --- the pinned tester -------------------------------------------------------------------------
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)"
if [[ ! -x "$VENV/bin/schemathesis" || "$(cat "$stamp" 2>/dev/null)" != "$want" ]]; then
    say "installing $(grep -m1 '^schemathesis==' "$REQUIREMENTS") into ${VENV#"$ROOT"/}"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || die "cannot create the virtualenv"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        --requirement "$REQUIREMENTS" || die "cannot install $REQUIREMENTS"
    echo "$want" >"$stamp"
fi
"$VENV/bin/schemathesis" --version >&2

# --- the server --------------------------------------------------------------------------------
if [[ ! -x "$BIN" ]]; then
    if [[ -z "${KEEPALIVE_BIN:-}" ]]; then
        say "building $BIN"
        cargo build --quiet --bin keepalive || die "cargo build failed"
    else
        die "KEEPALIVE_BIN=$BIN is not an executable"
    fi
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/keepalive-api.XXXXXX")"
SERVER_PID=""
SERVER_LOG="$WORK/server.log"
cleanup() {
    local status=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -f "$SERVER_LOG" ]]; then
        mkdir -p "$REPORT_DIR"
        cp "$SERVER_LOG" "$REPORT_DIR/server.log" || true
    fi
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

HEALTH_TOKEN="api-health-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
METRICS_TOKEN="api-metrics-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
BACKEND_TOKEN="api-backend-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"

# A clean environment: no developer setting (KEEPALIVE_CONFIG, REDIS_URL, ...) leaks in. Port 0
# lets the kernel pick a free port; the server logs the address it bound.
env -i PATH="$PATH" HOME="$WORK" \
    KEEPALIVE_ENV=development \
    KEEPALIVE_BIND=127.0.0.1 \
    PORT=0 \
    KEEPALIVE_DATA_DIR="$WORK/data" \
    KEEPALIVE_HEALTH_TOKEN="$HEALTH_TOKEN" \
    KEEPALIVE_METRICS_TOKEN="$METRICS_TOKEN" \
    KEEPALIVE_BACKEND_TOKEN="$BACKEND_TOKEN" \
    KEEPALIVE_LOG_FORMAT=text \
    KEEPALIVE_LOG_LEVEL=info \
    "$BIN" serve >"$SERVER_LOG" 2>&1 &
SERVER_PID=$!

PORT=""
for _ in $(seq 1 150); do
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$SERVER_LOG" >&2; die "the server exited at start"; }
    PORT="$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$SERVER_LOG" | head -n1)"
    [[ -n "$PORT" ]] && break
    sleep 0.1
done
[[ -n "$PORT" ]] || { cat "$SERVER_LOG" >&2; die "the server did not report its port"; }
BASE_URL="http://127.0.0.1:$PORT"

ready=""
for _ in $(seq 1 150); do
    if [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$BASE_URL/readyz")" == 200 ]]; then
        ready=1
        break
    fi
    sleep 0.1
done
[[ -n "$ready" ]] || { cat "$SERVER_LOG" >&2; die "the server did not become ready"; }
say "server $BIN ready at $BASE_URL (pid $SERVER_PID)"

# --- the test ----------------------------------------------------------------------------------
seed="${API_TEST_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"
rm -f "$REPORT_DIR/junit.xml"
mkdir -p "$REPORT_DIR"
args=(
    run "$SCHEMA"
    --url "$BASE_URL"
    --checks all
    --max-examples "$MAX_EXAMPLES"
    --seed "$seed"
    --workers 1
    --request-timeout 10
    --generation-database none
    --report junit
    --report-junit-path "$REPORT_DIR/junit.xml"
    --no-color
)
say "schemathesis ${args[*]}"
set +e
(
    cd "$WORK" # schemathesis reads no stray config file and leaves nothing in the tree
    export HYPOTHESIS_STORAGE_DIRECTORY="$VENV/hypothesis" # its caches, outside the tree
    KEEPALIVE_API_URL="$BASE_URL" KEEPALIVE_HEALTH_TOKEN="$HEALTH_TOKEN" \
        KEEPALIVE_METRICS_TOKEN="$METRICS_TOKEN" KEEPALIVE_BACKEND_TOKEN="$BACKEND_TOKEN" \
        SCHEMATHESIS_HOOKS="$HOOKS" \
        timeout --kill-after=10 "$RUN_TIMEOUT" nice -n 10 "$VENV/bin/schemathesis" "${args[@]}"
) | tee "$WORK/schemathesis.out"
st_status=${PIPESTATUS[0]}
set -e

# --- after the run: the server must still be there and must have logged no fault --------------
problems=()
[[ "$st_status" == 124 || "$st_status" == 137 ]] && problems+=("schemathesis ran past ${RUN_TIMEOUT}s")
kill -0 "$SERVER_PID" 2>/dev/null || problems+=("the server died during the test")
grep -qi 'panicked' "$SERVER_LOG" && problems+=("the server logged a panic (see target/api-report/server.log)")

metrics="$(curl -s --max-time 5 -H "Authorization: Bearer $METRICS_TOKEN" "$BASE_URL/metrics" || true)"
extended="$(awk '/^keepalive_keepalives_total\{result="extended"\}/ {print $2}' <<<"$metrics")"
expired="$(awk '/^keepalive_keepalives_total\{result="expired"\}/ {print $2}' <<<"$metrics")"
server_5xx="$(awk '/^keepalive_http_requests_total\{.*status="5[0-9][0-9]"\}/ {n += $2} END {print n + 0}' <<<"$metrics")"
say "server counted keepalives: ${extended:-0} extended, ${expired:-0} expired; 5xx answers: $server_5xx"
[[ "${extended:-0}" != 0 && "${expired:-0}" != 0 ]] || problems+=("keepalive 200 and 401 were not both exercised")
[[ "$server_5xx" == 0 ]] || problems+=("the server answered $server_5xx requests with 5xx")

# Closing line: API operations that passed or failed (from the JUnit report), plus the harness's
# own checks above, each counted as one more failure.
read -r passed failed < <("$VENV/bin/python" - "$REPORT_DIR/junit.xml" <<'PY' || echo "0 0"
import sys
import xml.etree.ElementTree as ET

try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError):
    print(0, 0)
    raise SystemExit
bad = ok = 0
for case in cases:
    if case.find("failure") is not None or case.find("error") is not None:
        bad += 1
    elif case.find("skipped") is None:
        ok += 1
print(ok, bad)
PY
)
# A non-zero exit that no operation accounts for (a run-wide check, a crash) is one more failure.
if [[ "$st_status" != 0 && "$failed" == 0 && ! "$st_status" =~ ^(124|137)$ ]]; then
    problems+=("schemathesis exited $st_status")
fi
failed=$((failed + ${#problems[@]}))
for p in "${problems[@]}"; do say "FAILED: $p"; done
if ((failed == 0)) && [[ "$st_status" == 0 ]]; then
    say "OK: ${SCHEMA#"$ROOT"/} matches the server (seed $seed)"
else
    say "FAILED: see the failures above; rerun the same cases with API_TEST_SEED=$seed"
fi
echo "api: $passed passed, $failed failed"
((failed == 0)) && [[ "$st_status" == 0 ]]
