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

# A free loopback port whose cluster bus port (10 000 above) is free too, never 6379.
cluster_port() {
    python3 - <<'PY'
import random, socket
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
while True:
    port = random.randint(20000, 55535)
    if port != 6379 and free(port) and free(port + 10000):
        print(port)
        break
PY
}

# Starts $1 masters with the slots split evenly; sets ports and masters (their pids).
start_cluster() {
    local n="$1" port i per lo hi
    ports=()
    masters=()
    for i in $(seq 0 $((n - 1))); do
        port="$(cluster_port)"
        mkdir -p "$work/$port"
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --cluster-enabled yes --cluster-config-file "$work/$port/nodes.conf" \
            --dir "$work/$port" --logfile "$work/$port/redis.log" &
        pids+=("$!")
        masters+=("$!")
        ports+=("$port")
        for _ in $(seq 100); do
            redis-cli -p "$port" ping >/dev/null 2>&1 && break
            sleep 0.05
        done
    done
    per=$((16384 / n))
    for i in $(seq 0 $((n - 1))); do
        lo=$((i * per))
        hi=$(( i == n - 1 ? 16383 : lo + per - 1 ))
        redis-cli -p "${ports[$i]}" cluster addslotsrange "$lo" "$hi" >/dev/null
        if [ "$i" -gt 0 ]; then
            redis-cli -p "${ports[0]}" cluster meet 127.0.0.1 "${ports[$i]}" >/dev/null
        fi
    done
    for _ in $(seq 200); do
        local ok=0
        for port in "${ports[@]}"; do
            redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && ok=$((ok + 1))
        done
        [ "$ok" = "$n" ] && return
        sleep 0.05
    done
    echo "the cluster of $n masters did not come up" >&2
    exit 1
}

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${BENCH_DIR:-$target_dir/bench}"
mkdir -p "$out"
summary="$out/cluster-$stamp.tsv"
printf 'masters\tkeepalive_rps\tlivez_rps\tratio\tkeepalives\tmaster_cpu_us_per_keepalive\n' >"$summary"

for n in ${MASTERS:-1 3}; do
    echo "== a cluster of $n master(s)" >&2
    start_cluster "$n"
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
