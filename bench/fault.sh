#!/usr/bin/env bash
# The Redis fault benchmark in one command: builds the release server and the
# bench tool, then runs `keepalive-bench fault`: a fixed-rate keepalive load
# over thousands of sessions while the bench SIGKILLs its own redis-server
# (a free loopback port, never 6379) and starts it again, empty.
#
# Knobs (environment): SESSIONS (5000), CONNECTIONS (32), RATE (1000 req/s),
# STEADY (5s), OUTAGE (10s), AFTER (10s), BENCH_JSON (report path). Other
# arguments are passed on to `keepalive-bench fault` (e.g. --check).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
json="${BENCH_JSON:-$target_dir/bench/fault-$stamp.json}"
mkdir -p "$(dirname "$json")"

"$target_dir/release/keepalive-bench" fault \
    --server-bin "$target_dir/release/keepalive" \
    --sessions "${SESSIONS:-5000}" \
    --connections "${CONNECTIONS:-32}" \
    --rate "${RATE:-1000}" \
    --steady "${STEADY:-5s}" \
    --outage "${OUTAGE:-10s}" \
    --after "${AFTER:-10s}" \
    --json "$json" \
    "$@"
echo "JSON report: $json" >&2
