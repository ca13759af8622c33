#!/usr/bin/env bash
# Runs every test suite of keepalive from a fresh clone: formatting, lints, API docs, the Rust
# unit and integration tests, and the browser tests in headless Chromium. Installs what the
# suites need when it is missing (Debian packages, npm packages) and does nothing more when it
# is there, so it can be run again and again.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Debian packages: promtool validates /metrics and the alert rules, redis-server serves the
# Redis tests, nginx and Caddy front keepalive in the forward-authentication tests, Chromium
# runs the browser tests (driven by playwright-core; no browser download), kubectl builds the
# Kubernetes kustomizations (`kubectl kustomize`, no cluster needed). Any kubectl will do;
# Debian's kubernetes-client (1.20) builds deploy/kubernetes but its kustomize is too old for
# deploy/kubernetes/monitoring, which the tests then only check file by file.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v kubectl >/dev/null || missing+=(kubernetes-client)
command -v redis-server >/dev/null || missing+=(redis-server)
# Debian's nginx lives in /usr/sbin, which is not on every user's PATH.
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# Debian's caddy also installs a caddy service (port 80, admin API on localhost:2019), started
# where systemd runs. The tests need none of it and do not conflict with it: their Caddy has no
# admin API, listens on free ports of 127.0.0.1 and keeps its data in a temporary directory.
command -v caddy >/dev/null || missing+=(caddy)
command -v chromium >/dev/null || missing+=(chromium)
# systemd-analyze verifies the systemd unit and rates its sandbox (Debian's systemd package;
# systemd need not be running), strace records what the server does to hold it to that sandbox.
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v strace >/dev/null || missing+=(strace)
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# PyYAML for the python3 the tests call (the first on PATH), which reads the deployment YAML.
if ! python3 -c 'import yaml' 2>/dev/null; then
    log "installing PyYAML"
    python3 -m pip install --quiet pyyaml
fi

# kubernetes-validate checks the Kubernetes manifests against the API schemas it bundles
# (offline): pinned, since each release adds the next Kubernetes version's schemas.
kubernetes_validate=1.37.0
if ! python3 -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$kubernetes_validate')" 2>/dev/null; then
    log "installing kubernetes-validate $kubernetes_validate"
    python3 -m pip install --quiet "kubernetes-validate==$kubernetes_validate"
fi

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "cargo doc (broken or private links in the API docs)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --document-private-items --locked

# The Express application the drop-in tests serve sessions for (express, express-session,
# connect-redis and redis from the npm registry, pinned in its package.json and lock file).
if [ ! -d tests/express/node_modules ] || [ tests/express/package-lock.json -nt tests/express/node_modules/.package-lock.json ]; then
    log "npm packages of tests/express"
    npm ci --prefix tests/express --no-audit --no-fund
fi

# The deployment files' linters, pinned, under target/ (npm): dockerfile-utils checks
# deploy/docker/Dockerfile, dclint checks the compose files against the Compose specification.
# Both work offline and need no Docker engine.
deploy_lint="dockerfile-utils@0.16.3 dclint@3.1.0"
if [ "$(cat target/deploy-lint/installed 2>/dev/null)" != "$deploy_lint" ]; then
    log "npm packages of the deployment tests: $deploy_lint"
    rm -rf target/deploy-lint && mkdir -p target/deploy-lint
    # shellcheck disable=SC2086 # one word per package
    npm install --prefix target/deploy-lint --no-save --no-audit --no-fund $deploy_lint
    echo "$deploy_lint" >target/deploy-lint/installed
fi

# The browser client as the npm package frontend teams install (client/): dist/ must be the build
# of src/ (the server embeds dist/), then npm pack, an install of the tarball into a scratch
# project, imports from Node (ES module and CommonJS), an esbuild bundle, tsc on the types, size.
if [ ! -d client/node_modules ] || [ client/package-lock.json -nt client/node_modules/.package-lock.json ]; then
    log "npm packages of client"
    npm ci --prefix client --no-audit --no-fund
fi
log "browser client package (client/)"
npm test --prefix client

log "Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi

log "start-up tests on the release build (the binary that ships)"
# The binary operators run is the release build: it must start where the tests' build does (a
# pod with Kubernetes service links, NODE_ENV of a Node application, systemd's notify socket,
# the serve flags) and name its version and commit.
cargo build --release --locked --bin keepalive
if cargo nextest --version >/dev/null 2>&1; then
    KEEPALIVE_BIN="$PWD/target/release/keepalive" cargo nextest run --test it --locked -E 'test(/^startup::/)'
else
    KEEPALIVE_BIN="$PWD/target/release/keepalive" cargo test --test it --locked startup::
fi

log "fuzz targets (cargo fuzz, 10 s each)"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# cargo fuzz passes compiler flags that are nightly-only; RUSTC_BOOTSTRAP lets this stable
# toolchain accept them for these builds only. A dev build compiles in half the time, which
# matters more here than executions per second.
mkdir -p target
for target in cookie session_id config record_codec; do
    output="target/fuzz-$target.log"
    if ! RUSTC_BOOTSTRAP=1 cargo fuzz run --dev --sanitizer none "$target" -- \
        -max_total_time=10 -rss_limit_mb=2048 >"$output" 2>&1; then
        tail -n 40 "$output"
        echo "fuzz target $target failed: the input is in fuzz/artifacts/$target" >&2
        exit 1
    fi
    grep -E '^Done' "$output" | sed "s/^/fuzz $target: /"
done

log "browser tests (headless Chromium)"
# The server binary as the Rust tests built it: the same build invocation as theirs, so a
# no-op after them. A plain `cargo build --bin keepalive` resolves the dependencies' features
# without the tests' ones and compiles the crate and a dozen dependencies again (close to two
# minutes on a 2-core machine) for a binary that differs in unused features only.
cargo test --workspace --locked --no-run
if [ ! -d tests/browser/node_modules ] || [ tests/browser/package-lock.json -nt tests/browser/node_modules/.package-lock.json ]; then
    npm ci --prefix tests/browser --no-audit --no-fund
fi
# The framework recipes of examples/client (React, Vue and Angular from the npm registry, pinned
# in its package.json and lock file): type-checked with tsc and their demo apps bundled with
# esbuild, for test/recipes.test.js.
if [ ! -d examples/client/node_modules ] || [ examples/client/package-lock.json -nt examples/client/node_modules/.package-lock.json ]; then
    npm ci --prefix examples/client --no-audit --no-fund
fi
npm run build --prefix examples/client
KEEPALIVE_BIN="$PWD/target/debug/keepalive" npm test --prefix tests/browser

log "API tests (schemathesis against docs/openapi.yaml)"
# A fixed seed keeps CI reproducible; run tests/api/run.sh with API_TEST_SEED unset to explore.
API_TEST_SEED="${API_TEST_SEED:-20261125}" KEEPALIVE_BIN="$PWD/target/debug/keepalive" tests/api/run.sh
