#!/usr/bin/env bash
# The checker of the session invariants in its long form, in one command: builds the release
# server and the bench tool, then runs `keepalive-bench check` once per seed: three instances
# over one redis-server (free loopback ports, never 6379), simulated users, every kind of fault
# from a seeded schedule (Redis killed, for a moment, past the idle timeout or past the
# absolute lifetime, frozen, restarted empty, flushed, evicting; an instance SIGKILLed or
# SIGTERMed and started again; either while Redis is down), the history judged against the
# invariants. Seeds take turns: users reaching the instances directly, through nginx
# round-robin, and through nginx routing by the session cookie as deploy/nginx/keepalive.conf
# ships.
#
# Knobs (environment): SEEDS (1-5), FAULTS_PER_KIND (4 per seed), PERSONS (12, two devices
# each), ENTRY (alternate, direct, nginx or nginx-sticky), BENCH_JSON (report path). Other
# arguments are passed on to `keepalive-bench check` (e.g. --check, --keep-dir). About 50
# minutes after the build with the defaults: 5 seeds of 44 faults, 20 of each kind in all (the
# outages past the absolute lifetime, a minute each, are twenty of those minutes).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
json="${BENCH_JSON:-$target_dir/bench/check-$stamp.json}"
mkdir -p "$(dirname "$json")"

"$target_dir/release/keepalive-bench" check \
    --server-bin "$target_dir/release/keepalive" \
    --seeds "${SEEDS:-1-5}" \
    --faults-per-kind "${FAULTS_PER_KIND:-4}" \
    --persons "${PERSONS:-12}" \
    --entry "${ENTRY:-alternate}" \
    --json "$json" \
    "$@"
echo "JSON report: $json" >&2
