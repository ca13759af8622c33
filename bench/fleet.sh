#!/usr/bin/env bash
# The fleet benchmark in one command: INSTANCES keepalive instances over one Redis (and over a
# Redis Cluster of three masters), behind a real nginx configured by deploy/nginx/keepalive.conf
# (sticky: `hash ... consistent` on the session cookie, as shipped; round-robin: the same file
# without its `hash` line). For each Redis and each routing:
#
#   1. SESSIONS sessions are created through nginx and each gets PASSES keepalives
#      (`keepalive-bench populate`): behind round-robin they land anywhere;
#   2. each instance's mirror (`keepalive_sessions_live`), resident memory (VmRSS) and data
#      directory on disk, and Redis's memory (`used_memory`, and the median `MEMORY USAGE` of a
#      session key), are read;
#   3. under a fixed-rate keepalive load over all those sessions (`keepalive-bench keep`, RATE
#      a second), the instances are restarted one by one as a rolling update does (SIGTERM,
#      start again on the same data directory, wait for /readyz, SETTLE more): the time to
#      ready, the Redis commands issued meanwhile beyond what the keepalives served would
#      have made (INFO commandstats of every master, by command, less a baseline taken under
#      the same load before the first restart) and what the instance wrote back (its re-sync
#      counters) are recorded;
#   4. every keepalive that did not answer 200 during the load is counted (nginx retries a
#      keepalive on another instance when one is gone, as it would for a browser).
#
# Knobs (environment): INSTANCES (3), SESSIONS (1000000), REDIS_MODES ("single cluster"),
# ROUTINGS ("sticky round-robin"), PASSES (2), CONNECTIONS (64), RATE (2000), SETTLE (5),
# BENCH_DIR (where the reports go). Loopback only; everything it starts it stops. At the
# default size, about six minutes per Redis and routing on a 2-core machine.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

instances="${INSTANCES:-3}"
sessions="${SESSIONS:-1000000}"
settle="${SETTLE:-5}"
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
[ -x "$nginx_bin" ] || { echo "nginx is not installed (scripts/test.sh installs it)" >&2; exit 1; }

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="${BENCH_DIR:-$target_dir/bench}"
mkdir -p "$out"
work="$(mktemp -d)"
# nginx's workers run as `nobody` when started as root; they must reach the prefix.
chmod 755 "$work"
pids=()
# SIGTERM first: nginx's master stops its workers on it (SIGKILL would orphan them).
stop_all() {
    local pid alive
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        alive=0
        # An exited child stays a zombie until waited for: not alive.
        for pid in "$@"; do ps -o stat= -p "$pid" | grep -qv Z && alive=1; done
        [ "$alive" = 0 ] && return
        sleep 0.1
    done
    for pid in "$@"; do kill -9 "$pid" 2>/dev/null || true; done
}
cleanup() {
    stop_all "${pids[@]}"
    wait 2>/dev/null || true
    # The servers' and nginx's logs (warnings, and the failover's steps) outlive the run.
    for log in "$work"/*/server-*.log "$work"/*/nginx/error.log; do
        [ -f "$log" ] || continue
        mkdir -p "$out/fleet-$stamp-logs"
        cp "$log" "$out/fleet-$stamp-logs/$(basename "$(dirname "$log")")-$(basename "$log")"
    done
    rm -rf "$work"
}
trap cleanup EXIT

summary="$out/fleet-$stamp.json"
echo "[]" >"$summary"

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
rss_bytes() { awk '/^VmRSS:/ { print $2 * 1024 }' "/proc/$1/status"; }
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# INFO commandstats of every master, summed by command: "command calls" lines.
commandstats() {
    for port in "${redis_ports[@]}"; do redis-cli -p "$port" info commandstats; done |
        awk -F'[_:=,]' '/^cmdstat_/ { calls[$2] += $4 } END { for (c in calls) print c, calls[c] }' |
        LC_ALL=C sort
}
# The calls made between two `commandstats`: "command=calls,..." for those that grew.
delta() {
    LC_ALL=C join -a 2 -e 0 -o 0,1.2,2.2 <(echo "$1") <(echo "$2") |
        awk '$3 - $2 > 0 { printf "%s%s=%d", sep, $1, $3 - $2; sep = "," }'
}
redis_memory() {
    for port in "${redis_ports[@]}"; do redis-cli -p "$port" info memory; done |
        awk -F: '/^used_memory:/ { sum += $2 } END { print sum }'
}
# The median `MEMORY USAGE` of a session key, over the session keys of one `SCAN` call (about
# a hundred) of each Redis. One call, read to its end: a reader that stopped early would end
# redis-cli with SIGPIPE, which `pipefail` turns into the script's exit.
redis_key_usage() {
    for port in "${redis_ports[@]}"; do
        redis-cli -p "$port" scan 0 match 'keepalive:{*}' count 200 | awk 'NR > 1' |
            sed 's/^/MEMORY USAGE /' | redis-cli -p "$port"
    done | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'
}
redis_keys() {
    for port in "${redis_ports[@]}"; do redis-cli -p "$port" dbsize; done | awk '{ sum += $1 } END { print sum }'
}

# Starts instance $1 on its port and data directory; waits for /readyz; sets ready_s.
start_instance() {
    local i="$1" started
    started="$(now)"
    env KEEPALIVE_BIND=127.0.0.1 PORT="${iports[$i]}" KEEPALIVE_DATA_DIR="$run_dir/data-$i" \
        KEEPALIVE_IDLE_TIMEOUT=12h KEEPALIVE_ABSOLUTE_LIFETIME=24h REDIS_URL="$redis_url" \
        KEEPALIVE_LOG_LEVEL=warn,keepalive::store::failover=info \
        "$target_dir/release/keepalive" >>"$run_dir/server-$i.log" 2>&1 &
    ipids[$i]=$!
    pids+=("$!")
    for _ in $(seq 3000); do
        if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${iports[$i]}/readyz")" = 200 ]; then
            ready_s="$(since "$started")"
            return
        fi
        kill -0 "${ipids[$i]}" 2>/dev/null || { tail -20 "$run_dir/server-$i.log" >&2; exit 1; }
        sleep 0.01
    done
    echo "instance $i was not ready within 30 s" >&2
    exit 1
}

# SIGTERM to instance $1 and wait for it to exit (it drains first, as in production).
stop_instance() {
    local pid="${ipids[$1]}"
    kill -TERM "$pid"
    for _ in $(seq 600); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return; }
        sleep 0.1
    done
    echo "instance $1 did not stop within 60 s of SIGTERM" >&2
    exit 1
}

# The shipped nginx snippet, with the fleet's upstream servers and our port; without its `hash`
# line for round-robin.
write_nginx() {
    local routing="$1" dir="$run_dir/nginx" servers="" rest i
    mkdir -p "$dir"
    # The shipped server line's parameters (what follows its address) go on each instance's.
    rest="$(sed -n 's/^    server 127\.0\.0\.1:8080\( .*\)\?;$/\1/p' deploy/nginx/keepalive.conf)"
    for i in $(seq 0 $((instances - 1))); do servers+="    server 127.0.0.1:${iports[$i]}$rest;\n"; done
    for line in '^    hash \$keepalive_session consistent;$' '^    server 127\.0\.0\.1:8080\( .*\)\?;$' '^    listen 80;$'; do
        [ "$(grep -c "$line" deploy/nginx/keepalive.conf)" = 1 ] ||
            { echo "deploy/nginx/keepalive.conf: no single line matches $line" >&2; exit 1; }
    done
    sed -e "s|^    server 127\.0\.0\.1:8080\( .*\)\?;$|${servers%\\n}|" \
        -e "s|^    listen 80;$|    listen 127.0.0.1:$nginx_port;|" \
        deploy/nginx/keepalive.conf >"$dir/keepalive.conf"
    if [ "$routing" = round-robin ]; then
        sed -i '/^    hash \$keepalive_session consistent;$/d' "$dir/keepalive.conf"
    fi
    local user=""
    [ "$(id -u)" = 0 ] && user="user root;"
    cat >"$dir/nginx.conf" <<EOF
$user
daemon off;
worker_processes 1;
pid "$dir/nginx.pid";
error_log "$dir/error.log" warn;
events { worker_connections 4096; }
http {
    client_body_temp_path "$dir/body";
    proxy_temp_path "$dir/proxy";
    fastcgi_temp_path "$dir/fastcgi";
    uwsgi_temp_path "$dir/uwsgi";
    scgi_temp_path "$dir/scgi";
    access_log off;
    include "$dir/keepalive.conf";
}
EOF
}

run() {
    local mode="$1" routing="$2" i
    run_dir="$work/$mode-$routing"
    mkdir -p "$run_dir"
    chmod 755 "$run_dir"
    echo "== $instances instances, Redis $mode, routing $routing, $sessions sessions" >&2
    if [ "$mode" = cluster ]; then
        start_cluster 3 "$run_dir"
        redis_ports=("${ports[@]}")
        redis_pids=("${masters[@]}")
        local seeds
        seeds="$(printf '127.0.0.1:%s,' "${ports[@]}")"
        redis_url="redis+cluster://${seeds%,}"
    else
        start_redis "$run_dir"
        pids+=("$redis_pid")
        redis_ports=("$redis_port")
        redis_pids=("$redis_pid")
        redis_url="redis://127.0.0.1:$redis_port"
    fi
    iports=()
    ipids=()
    for i in $(seq 0 $((instances - 1))); do iports[$i]="$(free_port)"; done
    for i in $(seq 0 $((instances - 1))); do start_instance "$i"; done
    nginx_port="$(free_port)"
    write_nginx "$routing"
    "$nginx_bin" -p "$run_dir/nginx" -c "$run_dir/nginx/nginx.conf" 2>>"$run_dir/nginx/error.log" &
    local nginx_pid=$!
    pids+=("$nginx_pid")
    for _ in $(seq 200); do
        curl -s -o /dev/null "http://127.0.0.1:$nginx_port/api/v1/session" && break
        sleep 0.05
    done

    local prefix="$out/fleet-$stamp-$mode-$routing"
    "$target_dir/release/keepalive-bench" populate --url "http://127.0.0.1:$nginx_port" \
        --sessions "$sessions" --passes "${PASSES:-2}" --connections "${CONNECTIONS:-64}" \
        --cookies "$run_dir/cookies" --json "$prefix-populate.json" >&2
    # Copies of keepalives are batched; let the last batch land.
    sleep 3
    local held=()
    for i in $(seq 0 $((instances - 1))); do
        held+=("$(metric "${iports[$i]}" keepalive_sessions_live) $(rss_bytes "${ipids[$i]}") $(du -sb "$run_dir/data-$i" | cut -f1)")
    done
    local redis_bytes redis_count key_usage
    redis_bytes="$(redis_memory)"
    redis_count="$(redis_keys)"
    key_usage="$(redis_key_usage)"

    # The rolling restart, under load.
    local lead=5 budget=10
    local keep_secs=$((1 + lead + instances * (budget + settle) + 5))
    "$target_dir/release/keepalive-bench" keep --url "http://127.0.0.1:$nginx_port" \
        --cookies "$run_dir/cookies" --connections "${CONNECTIONS:-64}" --rate "${RATE:-2000}" \
        --duration "${keep_secs}s" --json "$prefix-keep.json" >&2 &
    local keep_pid=$!
    # The commands the load alone makes (a keepalive's script calls GET, SETRANGE... inside
    # Redis, and those count too): the baseline the restarts' own commands are told from.
    sleep 1
    local restarts="$run_dir/restarts.tsv" base_before
    base_before="$(commandstats)"
    sleep "$lead"
    printf 'baseline\t%s\n' "$(delta "$base_before" "$(commandstats)")" >"$restarts"
    for i in $(seq 0 $((instances - 1))); do
        local before after t0 stopped_s
        before="$(commandstats)"
        t0="$(now)"
        stop_instance "$i"
        stopped_s="$(since "$t0")"
        start_instance "$i"
        sleep "$settle"
        after="$(commandstats)"
        local spent
        spent="$(delta "$before" "$after")"
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$i" "$t0" "$stopped_s" "$ready_s" "$spent" \
            "$(metric "${iports[$i]}" keepalive_redis_resynced_sessions_total)" \
            "$(metric "${iports[$i]}" keepalive_redis_resynced_logouts_total)" \
            "$(metric "${iports[$i]}" keepalive_sessions_live)" >>"$restarts"
        echo "instance $i: stopped in ${stopped_s} s, ready in ${ready_s} s; Redis commands: $spent" >&2
    done
    local restarts_end
    restarts_end="$(now)"
    wait "$keep_pid"
    local after_restart=()
    for i in $(seq 0 $((instances - 1))); do
        after_restart+=("$(metric "${iports[$i]}" keepalive_sessions_live) $(rss_bytes "${ipids[$i]}")")
    done

    python3 - "$summary" "$mode" "$routing" "$sessions" "$prefix" "$restarts" "$restarts_end" \
        "$redis_bytes" "$redis_count" "$key_usage" "${#held[@]}" "${held[@]}" "${after_restart[@]}" <<'PY'
import json, sys
summary, mode, routing, sessions, prefix, restarts, restarts_end, redis_bytes, redis_count, key_usage, n, *rest = sys.argv[1:]
n = int(n)
held, after = rest[:n], rest[n:]
populate = json.load(open(prefix + "-populate.json"))
keep = json.load(open(prefix + "-keep.json"))
sessions = int(sessions)
per_instance = []
for i, (h, a) in enumerate(zip(held, after)):
    mirror, rss, disk = (int(float(x)) for x in h.split())
    mirror_after, rss_after = (int(float(x)) for x in a.split())
    per_instance.append({"instance": i, "mirror": mirror, "mirror_share": mirror / sessions,
                         "rss_bytes": rss, "disk_bytes": disk,
                         "mirror_after_restart": mirror_after, "rss_after_restart_bytes": rss_after})
def calls(text):
    return {k: int(v) for k, v in (kv.split("=") for kv in text.split(",") if kv)}
lines = open(restarts).read().splitlines()
baseline = calls(lines[0].split("\t")[1])
rolling = []
for line in lines[1:]:
    i, t0, stopped, ready, spent, resynced, logouts, mirror = line.split("\t")
    commands = calls(spent)
    # Beyond what the keepalives served meanwhile would have made (in the baseline's
    # proportions to EVALSHA, the keepalive's own command); EVALSHA itself is left out, so a
    # write-back's scripts show in the re-sync counters, not here.
    scale = commands.get("evalsha", 0) / max(baseline.get("evalsha", 0), 1)
    beyond = {k: round(v - baseline.get(k, 0) * scale) for k, v in commands.items() if k != "evalsha"}
    beyond = {k: v for k, v in beyond.items() if v > 0}
    rolling.append({"instance": int(i), "at_s": round(float(t0) - keep["started_unix_s"], 2),
                    "stopped_s": float(stopped), "ready_s": float(ready),
                    "redis_commands": commands, "redis_commands_beyond_load": beyond,
                    "redis_commands_beyond_load_total": sum(beyond.values()),
                    "resynced_sessions": float(resynced or 0), "resynced_logouts": float(logouts or 0),
                    "mirror_after": int(float(mirror or 0))})
load_end = keep["started_unix_s"] + keep["all"]["seconds"]
row = {"redis": mode, "routing": routing, "sessions": sessions, "baseline_commands": baseline,
       "created_per_sec": round(populate["created_per_sec"]), "populate_failed": populate["failed"],
       "populate_keepalives_per_sec": round(populate["keepalives_per_sec"]),
       "redis_used_memory_bytes": int(redis_bytes), "redis_keys": int(redis_count),
       "redis_session_key_usage_bytes": int(key_usage),
       "instances": per_instance, "rolling_restart": rolling,
       "restarts_within_load": float(restarts_end) < load_end,
       "keep": {"rate": keep["rate"], "requests": keep["all"]["requests"], "ok": keep["all"]["ok"],
                "failed": keep["all"]["failed"], "failures": keep["all"]["failures"],
                "failed_by_second": keep["failed_by_second"], "latency": keep["all"]["latency"]}}
rows = json.load(open(summary))
rows.append(row)
json.dump(rows, open(summary, "w"), indent=2)
PY
    stop_all "${ipids[@]}" "$nginx_pid" "${redis_pids[@]}"
    wait 2>/dev/null || true
}

for mode in ${REDIS_MODES:-single cluster}; do
    for routing in ${ROUTINGS:-sticky round-robin}; do
        run "$mode" "$routing"
    done
done

python3 - "$summary" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))
for r in rows:
    if r["populate_failed"]:
        print(f"!! {r['populate_failed']} keepalives failed while populating (see the logs)")
    print(f"== Redis {r['redis']}, {r['routing']}: {r['sessions']} sessions, created {r['created_per_sec']}/s; "
          f"Redis {r['redis_used_memory_bytes'] / r['sessions']:.0f} B/session ({r['redis_keys']} keys), "
          f"MEMORY USAGE of a session key {r['redis_session_key_usage_bytes']} B (median)")
    print(f"{'instance':>8} {'mirror':>9} {'share':>6} {'RSS MB':>7} {'B/mirrored':>10} {'disk MB':>8} "
          f"{'ready s':>8} {'Redis cmds':>10} {'RSS MB after':>12}")
    for p, q in zip(r["instances"], r["rolling_restart"]):
        per = p["rss_bytes"] / max(p["mirror"], 1)
        print(f"{p['instance']:>8} {p['mirror']:>9} {p['mirror_share']:>6.2f} {p['rss_bytes'] / 1e6:>7.0f} "
              f"{per:>10.0f} {p['disk_bytes'] / 1e6:>8.0f} {q['ready_s']:>8.2f} "
              f"{q['redis_commands_beyond_load_total']:>10} {p['rss_after_restart_bytes'] / 1e6:>12.0f}")
    k = r["keep"]
    p99 = k["latency"]["p99_ms"] if k["latency"] else float("nan")
    mx = k["latency"]["max_ms"] if k["latency"] else float("nan")
    print(f"rolling restart under {k['rate']:.0f} keepalives/s: {k['requests']} sent, {k['failed']} failed "
          f"{k['failures'] or ''}; p99 {p99:.1f} ms, max {mx:.0f} ms"
          + ("" if r["restarts_within_load"] else "  (the restarts outlasted the load!)"))
PY
echo "reports: $out/fleet-$stamp*" >&2
