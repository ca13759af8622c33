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
