#!/usr/bin/env bash
# The Express drop-in benchmark in one command: keepalive serving an Express application's
# sessions (KEEPALIVE_SESSION_FORMAT=express), against the application's own keepalive route.
#
# It starts a throw-away redis-server and the Express application of tests/express
# (express-session + connect-redis, the seed's stack) on free loopback ports, then runs
# `keepalive-bench load` in pairs, the two runs of a pair back to back and their order
# alternating from pair to pair, every session created by the application's own login
# (`--login-url`):
#   - keepalive in express mode (the bench starts it): its keepalive vs its /livez, the
#     standard ratio (target >= 0.5, as for keepalive's own sessions in Redis);
#   - the application itself: its own GET /api/v1/keepalive/ (the route keepalive takes over)
#     vs its /livez.
# For each pair it prints keepalive's keepalive throughput over the application's (target: at
# least 10x, the median of the pairs), and what a keepalive costs each in CPU: the server's
# process (keepalive, or node) plus redis-server, measured from /proc (steadier than req/s on
# a shared machine).
#
# Knobs (environment): PAIRS (3), ROUNDS per run (3), CONNECTIONS (64), SESSIONS (2000),
# DURATION (3s), WARMUP (1s), LATENCY_ROUNDS of keepalive's fixed-rate phase per run (1),
# ROLLING (false), BENCH_DIR (where the JSON reports go).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
if [ ! -d tests/express/node_modules ]; then
    npm ci --prefix tests/express --no-audit --no-fund
fi

app_port="$(free_port)"
work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

start_redis "$work"
pids+=("$redis_pid")

secret="bench-secret-of-the-express-application"
(cd tests/express && PORT="$app_port" REDIS_URL="redis://127.0.0.1:$redis_port" \
    NODE_ENV=production SESSION_SECRETS="[\"$secret\"]" MAX_AGE_MS=3600000 ROLLING="${ROLLING:-false}" \
    exec node app.mjs >"$work/app.log" 2>&1) &
app_pid=$!
pids+=("$app_pid")
for _ in $(seq 200); do
    grep -q "^listening on" "$work/app.log" 2>/dev/null && break
    sleep 0.05
done
grep -q "^listening on" "$work/app.log" || { cat "$work/app.log" >&2; exit 1; }

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${BENCH_DIR:-$target_dir/bench}"
mkdir -p "$out"
common=(--connections "${CONNECTIONS:-64}" --sessions "${SESSIONS:-2000}"
    --duration "${DURATION:-3s}" --warmup "${WARMUP:-1s}" --rounds "${ROUNDS:-3}"
    --login-url "http://127.0.0.1:$app_port/login" --redis-pid "$redis_pid")

run_keepalive() {
    echo "== pair $1: keepalive serving the Express application's sessions" >&2
    "$target_dir/release/keepalive-bench" load "${common[@]}" \
        --latency-rounds "${LATENCY_ROUNDS:-1}" \
        --server-bin "$target_dir/release/keepalive" \
        --server-env "REDIS_URL=redis://127.0.0.1:$redis_port" \
        --server-env KEEPALIVE_SESSION_FORMAT=express \
        --server-env "KEEPALIVE_EXPRESS_SECRETS=$secret" \
        --server-env "KEEPALIVE_EXPRESS_ROLLING=${ROLLING:-false}" \
        --json "$out/express-keepalive-$stamp-$1.json" >&2
}
run_app() {
    echo "== pair $1: the Express application's own keepalive route" >&2
    "$target_dir/release/keepalive-bench" load "${common[@]}" \
        --url "http://127.0.0.1:$app_port" --server-pid "$app_pid" --latency-rounds 0 \
        --json "$out/express-app-$stamp-$1.json" >&2
}

pairs="${PAIRS:-3}"
for pair in $(seq "$pairs"); do
    if [ $((pair % 2)) -eq 1 ]; then
        run_keepalive "$pair"
        run_app "$pair"
    else
        run_app "$pair"
        run_keepalive "$pair"
    fi
done

python3 - "$out" "$stamp" "$pairs" <<'PY'
import json, statistics, sys
out, stamp, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])

def cost(median):
    parts = [median.get("server_cpu_us_per_response"), median.get("redis_cpu_us_per_response")]
    return None if None in parts else sum(parts)

ratios, times, costs = [], [], []
print("pair  keepalive req/s  ratio vs /livez  app req/s  throughput x  "
      "CPU µs per keepalive: keepalive+redis  app+redis  cost x")
for pair in range(1, pairs + 1):
    ours = json.load(open(f"{out}/express-keepalive-{stamp}-{pair}.json"))["median"]
    theirs = json.load(open(f"{out}/express-app-{stamp}-{pair}.json"))["median"]
    k, a = ours["keepalive"]["requests_per_sec"], theirs["keepalive"]["requests_per_sec"]
    livez = ours["livez"]["requests_per_sec"]
    ratio, x = k / livez, k / a
    kc, ac = cost(ours["keepalive"]), cost(theirs["keepalive"])
    ratios.append(ratio)
    times.append(x)
    cx = "-"
    if kc and ac:
        costs.append(ac / kc)
        cx = f"{ac / kc:.1f}"
    print(f"{pair:<5} {k:>15.0f}  {ratio:>15.3f}  {a:>9.0f}  {x:>12.1f}  "
          f"{kc or 0:>36.1f}  {ac or 0:>9.1f}  {cx:>6}")
ratio, x = statistics.median(ratios), statistics.median(times)
print(f"median of {pairs} pairs: keepalive/livez ratio {ratio:.3f}  target >= 0.5: "
      f"{'MET' if ratio >= 0.5 else 'MISSED'}; keepalive over the application's own route "
      f"{x:.1f}x  target >= 10x: {'MET' if x >= 10 else 'MISSED'}"
      + (f"; CPU per keepalive {statistics.median(costs):.1f}x less" if costs else ""))
PY
echo "JSON reports: $out/express-{keepalive,app}-$stamp-*.json" >&2
