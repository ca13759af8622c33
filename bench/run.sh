#!/usr/bin/env bash
# The standard load benchmark in one command: builds the release server and the
# bench tool, then runs keepalive vs /livez on one freshly started server:
# closed-loop saturation rounds (throughput ratio), then fixed-rate rounds at
# 25 % of the measured /livez saturation throughput (latency, corrected for
# coordinated omission). `bench/run.sh --redis` does the same against a
# throw-away redis-server the bench starts on a free loopback port.
#
# Knobs (environment): CONNECTIONS (64), SESSIONS (5000), DURATION (3s),
# WARMUP (1s), ROUNDS (9), BENCH_JSON (report path). Short phases and many
# rounds pair the two endpoints closely in time, so background load on a
# shared machine hits both alike, and a median of 9 shrugs off 4 bad rounds. Any arguments are passed
# on to `keepalive-bench load`, e.g. `bench/run.sh --redis` or `bench/run.sh --rate 5000`.
# The figures are only comparable when nothing else heavy runs: the load
# generator and the server share the machine's cores.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
json="${BENCH_JSON:-$target_dir/bench/load-$stamp.json}"
mkdir -p "$(dirname "$json")"

"$target_dir/release/keepalive-bench" load \
    --server-bin "$target_dir/release/keepalive" \
    --connections "${CONNECTIONS:-64}" \
    --sessions "${SESSIONS:-5000}" \
    --duration "${DURATION:-3s}" \
    --warmup "${WARMUP:-1s}" \
    --rounds "${ROUNDS:-9}" \
    --json "$json" \
    "$@"
echo "JSON report: $json" >&2
