#!/usr/bin/env bash
# Redis Cluster in one command: one keepalive instance over a cluster of one master, then of
# three (MASTERS, "1 3"), each master a throw-away redis-server on a free loopback port with the
# hash slots split evenly between them, under the same load each time (`keepalive-bench load
# --url`: SESSIONS sessions over CONNECTIONS connections, ROUNDS saturation rounds against
# /livez). It reports keepalive's throughput and its ratio to /livez, and what each master
# spent per keepalive (CPU time, from /proc). On a machine whose cores the server and the
# generator already fill, throughput cannot grow with masters; the busiest master's CPU per
# keepalive says how much more a cluster carries before one master is the limit.
#
# Knobs (environment): MASTERS ("1 3"), SESSIONS (20000), CONNECTIONS (64), DURATION (3s),
# WARMUP (1s), ROUNDS (5), BENCH_DIR (where the JSON reports go). Loopback only; everything it
# starts it stops. About two minutes.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

work="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# CPU seconds (user + system) process $1 has used so far.
cpu_secs() {
    awk -v tck="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / tck }' "/proc/$1/stat"
}

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${BENCH_DIR:-$target_dir/bench}"
mkdir -p "$out"
summary="$out/cluster-$stamp.tsv"
printf 'masters\tkeepalive_rps\tlivez_rps\tratio\tkeepalives\tmaster_cpu_us_per_keepalive\n' >"$summary"

for n in ${MASTERS:-1 3}; do
    echo "== a cluster of $n master(s)" >&2
    start_cluster "$n" "$work"
    seeds="$(printf '127.0.0.1:%s,' "${ports[@]}")"
    port="$(free_port)"
    KEEPALIVE_BIND=127.0.0.1 PORT="$port" KEEPALIVE_DATA_DIR="$work/data-$n" \
        KEEPALIVE_LOG_LEVEL=warn REDIS_URL="redis+cluster://${seeds%,}" \
        "$target_dir/release/keepalive" >>"$work/server-$n.log" 2>&1 &
    server_pid=$!
    pids+=("$server_pid")
    for _ in $(seq 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
        sleep 0.05
    done
    before=()
    for pid in "${masters[@]}"; do before+=("$(cpu_secs "$pid")"); done
    json="$out/cluster-$stamp-$n.json"
    "$target_dir/release/keepalive-bench" load --url "http://127.0.0.1:$port" \
        --server-pid "$server_pid" --sessions "${SESSIONS:-20000}" \
        --connections "${CONNECTIONS:-64}" --duration "${DURATION:-3s}" \
        --warmup "${WARMUP:-1s}" --rounds "${ROUNDS:-5}" --latency-rounds 0 \
        --json "$json" >&2 || true
    spent=()
    for i in "${!masters[@]}"; do
        spent+=("$(awk -v a="${before[$i]}" -v b="$(cpu_secs "${masters[$i]}")" 'BEGIN { printf "%.3f", b - a }')")
    done
    python3 - "$json" "$n" "${spent[@]}" >>"$summary" <<'PY'
import json, sys
path, n, *spent = sys.argv[1:]
report = json.load(open(path))
median = report["median"]
k, l = median["keepalive"]["requests_per_sec"], median["livez"]["requests_per_sec"]
# Every keepalive answered (warm-up included) and every session created reached Redis.
keepalives = sum(r["keepalive"]["responses_total"] for r in report["rounds"])
keepalives += report["sessions"]["created"]
per = ",".join(f"{float(s) * 1e6 / keepalives:.2f}" for s in spent)
print(f"{n}\t{k:.0f}\t{l:.0f}\t{k / l:.3f}\t{keepalives}\t{per}")
PY
    tail -1 "$summary" >&2
    { for pid in "$server_pid" "${masters[@]}"; do kill -9 "$pid" && wait "$pid"; done; } \
        2>/dev/null || true
done

python3 - "$summary" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
print(f"{'masters':>7} {'keepalive/s':>11} {'ratio':>6} {'CPU µs per keepalive, each master':>34} {'busiest':>8}")
for r in rows:
    per = [float(x) for x in r["master_cpu_us_per_keepalive"].split(",")]
    print(f"{r['masters']:>7} {int(r['keepalive_rps']):>11} {float(r['ratio']):>6.3f} "
          f"{' / '.join(f'{x:.2f}' for x in per):>34} {max(per):>8.2f}")
if len(rows) > 1:
    one = max(float(x) for x in rows[0]["master_cpu_us_per_keepalive"].split(","))
    many = max(float(x) for x in rows[-1]["master_cpu_us_per_keepalive"].split(","))
    print(f"the busiest master spends {many / one:.2f}x the CPU per keepalive with "
          f"{rows[-1]['masters']} masters as with {rows[0]['masters']}: one master's core "
          f"carries {one / many:.2f}x the keepalives")
PY
echo "per-run JSON reports and the summary: $out/cluster-$stamp*" >&2
