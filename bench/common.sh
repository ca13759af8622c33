# shellcheck shell=bash
# Sourced by each benchmark script: runs from the repository's root, prints the commit the
# figures belong to, builds the release server and the bench tool, and offers what the scripts
# that start their own processes share. Everything they start listens on loopback only.

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

# The commit is not in the tool's report; print it so results can be tied to
# code. Taken before the build, which is what the binaries are built from.
rev="$(git rev-parse --short HEAD 2>/dev/null || echo none)"
if [ -n "$(git status --porcelain 2>/dev/null | grep -v '^??' || true)" ]; then
    rev="$rev+dirty"
fi
echo "commit: $rev" >&2

# One cargo invocation for both so they share the workspace's build cache.
cargo build --release -p keepalive -p keepalive-bench

# A free TCP port of 127.0.0.1.
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Starts a throw-away redis-server on a free loopback port (never the shared 6379), without
# persistence, its log in directory $1, and waits until it answers. Sets redis_port and
# redis_pid; the caller stops it.
start_redis() {
    redis_port="$(free_port)"
    while [ "$redis_port" = 6379 ]; do redis_port="$(free_port)"; done
    redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$1" --logfile "$1/redis.log" &
    redis_pid=$!
    for _ in $(seq 100); do
        redis-cli -p "$redis_port" ping >/dev/null 2>&1 && return
        sleep 0.05
    done
    echo "redis-server did not answer on port $redis_port" >&2
    kill "$redis_pid" 2>/dev/null || true
    return 1
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

# Starts a Redis Cluster of $1 masters, each a throw-away redis-server in a directory of $2,
# with the slots split evenly, and waits until it is up. Sets ports and masters (their pids) and
# adds the pids to the caller's pids array; the caller stops them.
start_cluster() {
    local n="$1" dir="$2" port i per lo hi
    ports=()
    masters=()
    for i in $(seq 0 $((n - 1))); do
        port="$(cluster_port)"
        mkdir -p "$dir/$port"
        redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
            --cluster-enabled yes --cluster-config-file "$dir/$port/nodes.conf" \
            --dir "$dir/$port" --logfile "$dir/$port/redis.log" &
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
