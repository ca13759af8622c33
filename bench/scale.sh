#!/usr/bin/env bash
# The scale benchmark in one command: one keepalive instance whose store grows from a thousand
# sessions to a million, and at each step what the instance costs with that many sessions:
#
#   - keepalive vs /livez throughput in the same run (`keepalive-bench load`, over the sessions
#     created for that step), which should stay flat as the store grows: the median of the
#     rounds' ratios (each round runs both endpoints back to back, so the shared machine's
#     drift cancels within it), with the lowest and highest round, and the server's CPU per
#     keepalive over its CPU per /livez (the cost ratio);
#   - with Redis, redis-server's own CPU per keepalive: what the sessions cost the shared store
#     as its keys grow;
#   - how fast sessions are created (the load's own creation phase: durable creations over
#     CONNECTIONS connections);
#   - the server's resident memory (VmRSS) per session: 2 s after the load, once the local store
#     caught up with it (settled), and after a restart;
#   - the data directory's size on disk per session;
#   - the time from a SIGKILL and a fresh start to /readyz answering 200, and with Redis to the
#     end of the background write-back that follows a crash; with Redis, the same once more
#     with a FLUSHALL between the SIGKILL and the start (Redis lost its data meanwhile), to
#     /readyz and to the end of the write-back of every session ("re-sync done").
#
# The instance keeps its data directory across steps: each step adds sessions to those of the
# steps before, then the instance is killed and started again on the same directory (and, with
# REDIS=1, the same Redis), as a crashed pod is. Sessions live 12 h so none expires during the
# run. Loopback only; everything it starts it stops.
#
# Knobs (environment): STEPS (total sessions after each step, "1000 10000 100000 1000000"),
# REDIS (0: the embedded store alone; 1: a throw-away redis-server, the local store as mirror),
# CONNECTIONS (64), DURATION (2s), WARMUP (500ms), ROUNDS (7), BENCH_DIR (where the JSON
# reports go). Many short rounds rather than a few long ones: on a shared machine the ratio of
# two phases seconds apart is steadier than either phase's throughput, and their median leaves
# out the round that a fold or a neighbour's burst fell into. Expect about ten minutes for the
# default steps on a 2-core machine.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

work="$(mktemp -d)"
pids=()
server_pid=""
cleanup() {
    if [ -n "$server_pid" ]; then { kill -9 "$server_pid" && wait "$server_pid"; } 2>/dev/null || true; fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

env_vars=(KEEPALIVE_BIND=127.0.0.1 KEEPALIVE_DATA_DIR="$work/data" KEEPALIVE_IDLE_TIMEOUT=12h
    KEEPALIVE_ABSOLUTE_LIFETIME=24h KEEPALIVE_LOG_LEVEL=warn,keepalive::store::failover=info)
if [ "${REDIS:-0}" = 1 ]; then
    start_redis "$work"
    pids+=("$redis_pid")
    env_vars+=(REDIS_URL="redis://127.0.0.1:$redis_port")
fi
port="$(free_port)"
base="http://127.0.0.1:$port"

# Starts the server; sets server_pid, and ready_secs to the seconds until /readyz answered 200.
ready_secs=""
start_server() {
    local started
    started="$(date +%s.%N)"
    started_at="$started"
    env "${env_vars[@]}" PORT="$port" "$target_dir/release/keepalive" >>"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 6000); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "$base/readyz" 2>/dev/null)" = 200 ]; then
            ready_secs="$(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')"
            return
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            tail -20 "$work/server.log" >&2
            exit 1
        fi
        sleep 0.01
    done
    echo "the server was not ready within a minute" >&2
    exit 1
}
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$server_pid/status"; }
# With Redis: the seconds from the start until the log has one more line matching $2 than
# $1 (by default the end of the background write-back of a crashed instance: its log line;
# the gauge would read 0 too while an outage interrupts it); "-" without Redis. An outage
# during it is reported on stderr: the walk began again.
written_back_secs() {
    if [ "${REDIS:-0}" != 1 ]; then echo -; return; fi
    local before="$1" line="${2:-background write-back done}"
    for _ in $(seq 6000); do
        if [ "$(grep -c "$line" "$work/server.log")" -gt "$before" ]; then
            awk -v a="$started_at" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
            if grep -q 'connection lost' <(tail -n +"$log_lines" "$work/server.log"); then
                echo "an outage interrupted the write-back (see $work/server.log)" >&2
            fi
            return
        fi
        sleep 0.1
    done
    echo "the background write-back did not end within ten minutes" >&2
    exit 1
}

# A second of light load (64 more sessions): the allocator gives back what a thread freed
# only once that thread allocates again.
light_load() {
    "$target_dir/release/keepalive-bench" load --url "$base" --sessions 64 --connections 8 \
        --duration 1s --warmup 0s --rounds 1 --latency-rounds 0 >/dev/null 2>&1
    total=$((total + 64))
}
# Waits (up to a minute) until the local store's count of written changes stays the same for
# a second: the commits caught up with the load.
settle_writes() {
    local before after
    before="$(writes_total)"
    for _ in $(seq 60); do
        sleep 1
        after="$(writes_total)"
        if [ "$after" = "$before" ]; then return; fi
        before="$after"
    done
    echo "the local store was still writing a minute after the load" >&2
}
writes_total() { curl -s "$base/metrics" | awk '/^keepalive_store_writes_total / { print $2 }'; }

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${BENCH_DIR:-$target_dir/bench}"
mkdir -p "$out"
mode=$([ "${REDIS:-0}" = 1 ] && echo redis || echo embedded)
summary="$out/scale-$mode-$stamp.tsv"
printf 'sessions\tkeepalive_rps\tlivez_rps\tratio\tratio_low\tratio_high\tcost_ratio\tcreated_per_s\trss_bytes\trss_bytes_settled\trss_bytes_after_restart\tdisk_b_per_session\trestart_to_ready_s\twritten_back_s\tready_after_flush_s\tresynced_after_flush_s\tredis_cpu_us\n' >"$summary"

start_server
total=0
for step in ${STEPS:-1000 10000 100000 1000000}; do
    need=$((step - total))
    if [ "$need" -le 0 ]; then continue; fi
    echo "== $step sessions: creating $need more, then keepalive vs /livez" >&2
    json="$out/scale-$mode-$stamp-$step.json"
    "$target_dir/release/keepalive-bench" load --url "$base" --server-pid "$server_pid" \
        --sessions "$need" --connections "${CONNECTIONS:-64}" --duration "${DURATION:-2s}" \
        --warmup "${WARMUP:-500ms}" --rounds "${ROUNDS:-7}" --latency-rounds 0 \
        ${redis_pid:+--redis-pid "$redis_pid"} --json "$json" >&2
    total=$step
    # Let the last batch of writes reach the disk before measuring it.
    sleep 2
    rss="$(rss_bytes)"
    # Settled: once the local store wrote what the load left in memory (its count of writes
    # still for a second), and after a second of light load, as after the restart below.
    settle_writes
    light_load
    sleep 1
    rss_settled="$(rss_bytes)"
    disk="$(du -sb "$work/data" | cut -f1)"
    { kill -9 "$server_pid" && wait "$server_pid"; } 2>/dev/null || true
    done_before="$(grep -c 'background write-back done' "$work/server.log" || true)"
    log_lines="$(($(wc -l <"$work/server.log") + 1))"
    start_server
    ready="$ready_secs"
    written_back="$(written_back_secs "$done_before")"
    light_load
    sleep 1
    rss_after="$(rss_bytes)"
    # With Redis, once more as if Redis had lost its data while the instance was down (a
    # FLUSHALL between the SIGKILL and the start): ready as soon as the local store is open,
    # every session written back to Redis meanwhile (its "re-sync done" line).
    ready_flushed=- resynced=-
    if [ "${REDIS:-0}" = 1 ]; then
        { kill -9 "$server_pid" && wait "$server_pid"; } 2>/dev/null || true
        redis-cli -p "$redis_port" flushall >/dev/null
        done_before="$(grep -c 're-sync done' "$work/server.log" || true)"
        log_lines="$(($(wc -l <"$work/server.log") + 1))"
        start_server
        ready_flushed="$ready_secs"
        resynced="$(written_back_secs "$done_before" 're-sync done')"
    fi
    python3 - "$json" "$step" "$rss" "$rss_settled" "$rss_after" "$disk" "$ready" "$written_back" \
        "$ready_flushed" "$resynced" >>"$summary" <<'PY'
import json, sys
path, n, rss, settled, after, disk, ready, written_back, ready_flushed, resynced = sys.argv[1:]
n, disk = int(n), int(disk)
report = json.load(open(path))
median, sessions = report["median"], report["sessions"]
k, l = median["keepalive"]["requests_per_sec"], median["livez"]["requests_per_sec"]
ratios = [r["ratio"] for r in report["rounds"] if r["ratio"] is not None]
ka, lz = (median[e]["server_cpu_us_per_response"] for e in ("keepalive", "livez"))
cost = f"{ka / lz:.3f}" if ka and lz else "-"
redis_us = median["keepalive"].get("redis_cpu_us_per_response")
redis_us = f"{redis_us:.2f}" if redis_us else "-"
print(f"{n}\t{k:.0f}\t{l:.0f}\t{median['ratio']:.3f}\t{min(ratios):.3f}\t{max(ratios):.3f}\t{cost}\t"
      f"{sessions['created'] / sessions['seconds']:.0f}\t"
      f"{rss}\t{settled}\t{after}\t{disk / n:.0f}\t{ready}\t{written_back}\t{ready_flushed}\t{resynced}\t"
      f"{redis_us}")
PY
    tail -1 "$summary" >&2
done

python3 - "$summary" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
# Memory per session is the growth from the first step, not RSS over sessions: a fresh
# instance's RSS holds what its start-up allocated and freed (the allocator keeps it until the
# thread allocates again), which is no cost of its sessions.
first = rows[0]
def per_session(row, field):
    grown = int(row["sessions"]) - int(first["sessions"])
    return "-" if grown <= 0 else f"{(int(row[field]) - int(first[field])) / grown:.0f}"
print(f"{'sessions':>9} {'keepalive/s':>11} {'ratio':>6} {'rounds':>11} {'cost':>5} {'created/s':>9} {'RSS MB':>7} "
      f"{'B/session':>9} {'settled: MB':>11} {'B/session':>9} {'after restart: MB':>17} {'B/session':>9} {'disk B/session':>14} "
      f"{'restart->ready':>14} {'written back':>12} {'flushed: ready':>14} {'written back':>12}")
for r in rows:
    spread = f"{float(r['ratio_low']):.2f}-{float(r['ratio_high']):.2f}"
    print(f"{int(r['sessions']):>9} {int(r['keepalive_rps']):>11} {float(r['ratio']):>6.3f} "
          f"{spread:>11} {r['cost_ratio']:>5} "
          f"{int(r['created_per_s']):>9} {int(r['rss_bytes']) / 1e6:>7.1f} "
          f"{per_session(r, 'rss_bytes'):>9} {int(r['rss_bytes_settled']) / 1e6:>11.1f} "
          f"{per_session(r, 'rss_bytes_settled'):>9} {int(r['rss_bytes_after_restart']) / 1e6:>17.1f} "
          f"{per_session(r, 'rss_bytes_after_restart'):>9} {int(r['disk_b_per_session']):>14} "
          f"{float(r['restart_to_ready_s']):>13.2f}s {r['written_back_s']:>11}s "
          f"{r['ready_after_flush_s']:>13}s {r['resynced_after_flush_s']:>11}s")
if len(rows) > 1:
    a, b = float(first["ratio"]), float(rows[-1]["ratio"])
    print(f"ratio from {first['sessions']} to {rows[-1]['sessions']} sessions: {a:.3f} -> {b:.3f} "
          f"({(b / a - 1) * 100:+.1f} %, target within 10 %; the median of each step's rounds); "
          f"server CPU per keepalive over CPU per /livez: {first['cost_ratio']} -> "
          f"{rows[-1]['cost_ratio']}; memory per session: the growth from {first['sessions']} sessions")
    if first["redis_cpu_us"] != "-":
        print(f"redis-server CPU per keepalive: {first['redis_cpu_us']} -> {rows[-1]['redis_cpu_us']} µs")
PY
echo "per-step JSON reports and the summary: $out/scale-$mode-$stamp*" >&2
