#!/usr/bin/env bash
# Runs every check and test: formatting, lints, the shell scripts and the service unit, unit
# tests, the end-to-end tests against a real `hutch serve`, among them the API contract check
# by schemathesis (crates/hutch/tests/schemathesis.rs), the web console in a real browser
# (console/test/browser.mjs), every fuzz target for a few seconds
# (scripts/fuzz.sh), and the benchmarks in quick mode.
#
# Every step runs even when an earlier one failed; the summary at the end names the failed
# steps, and the exit status is non-zero when there are any. The one exception is the first
# step: without the dependencies nothing after it can pass, so a failed install stops the run
# at once, and the install's own error is the last thing printed.
#
# The end-to-end tests (crates/hutch/tests/) build real sandboxes and need root. Without root
# each one fails, saying so: `cargo test` never reports one that did not run as passed. To
# run the rest without root, set HUTCH_SKIP_ROOT_TESTS=1: each root-only test then prints
# "SKIPPED <test>: needs root" in the plain cargo test output and returns (never under
# CI=true, where they always fail without root).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
source scripts/lib.sh
# cargo fetches crates on a fresh clone; a dropped connection is retried, not a failed build.
export CARGO_NET_RETRY=${CARGO_NET_RETRY:-10}

failed=()
count=0
# step NAME COMMAND...: runs one step and records its failure.
step() {
    local name=$1 start=$SECONDS
    shift
    count=$((count + 1))
    echo "== $name"
    if "$@"; then
        echo "== $name: ok ($((SECONDS - start)) s)"
    else
        echo "== $name: FAILED ($((SECONDS - start)) s)"
        failed+=("$name")
    fi
}

# The scripts parse, and shellcheck finds nothing in them.
check_scripts() {
    local script ok=0
    for script in scripts/*.sh .ci/run; do
        bash -n "$script" || ok=1
    done
    shellcheck -x scripts/*.sh .ci/run || ok=1
    return $ok
}

# systemd accepts the service unit as written (it checks the binary it names exists).
check_unit() {
    local dir out
    dir=$(mktemp -d)
    sed "s|/usr/local/bin/hutch|$PWD/target/debug/hutch|" deploy/systemd/hutch.service >"$dir/hutch.service"
    out=$(systemd-analyze verify "$dir/hutch.service" 2>&1) || true
    rm -rf "$dir"
    [[ -z $out ]] || { echo "$out"; return 1; }
}

benchmarks() {
    local scenario ok=0
    for scenario in sessions commands files interpreter ports network images clients soak idle agent kube; do
        cargo run --locked -q -p hutch -- bench "$scenario" --quick || ok=1
    done
    # SQLite beside a scratch PostgreSQL (about 20 s).
    cargo run --locked -q -p hutch -- bench sessions --store postgres --quick || ok=1
    return $ok
}

# The TypeScript SDK's tests against a real server, then its benchmark in quick mode.
typescript_sdk() {
    (cd typescript && export HUTCH_BIN="$PWD/../target/debug/hutch" && npm test && npm run bench -- --quick)
}

step "install test dependencies" scripts/deps.sh test
if ((${#failed[@]})); then
    echo "test: the test dependencies could not be installed (see above); nothing else can run"
    exit 1
fi
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --locked --all-targets -- -D warnings
step "shell scripts (bash -n, shellcheck)" check_scripts
step "cargo test" cargo test --locked --workspace --no-fail-fast
step "storage contexts on S3 (the storage suite again, against moto)" \
    env HUTCH_TEST_BLOB_STORE=s3 cargo test --locked -p hutch --test storage
step "sessions as pods (the code, interpreter, processes and terminal suites again, hutch serve --runtime kubernetes on the stand-in cluster)" \
    env HUTCH_TEST_RUNTIME=kubernetes cargo test --locked -p hutch --test code --test interpreter --test processes --test pty
step "systemd unit (systemd-analyze verify)" check_unit
step "interpreter workers (protocol tests)" /usr/bin/python3 -m unittest discover -s crates/hutch-agent/workers/tests
step "Python SDK tests (against a real hutch serve)" \
    env HUTCH_BIN="$PWD/target/debug/hutch" target/venv-sdk/bin/pytest -q python/tests
step "TypeScript SDK tests (against a real hutch serve)" typescript_sdk
step "web console in a real browser (chromium against a real hutch serve)" \
    env HUTCH_BIN="$PWD/target/debug/hutch" npm --prefix console test
step "fuzzing (every target for 5 s)" scripts/fuzz.sh 5
step "MCP tests (the official MCP Python client against a real hutch serve)" \
    env HUTCH_BIN="$PWD/target/debug/hutch" target/venv-mcp/bin/pytest -q -p no:cacheprovider crates/hutch-mcp/tests/python
step "benchmarks (quick mode: checks that they run, figures are not meaningful)" benchmarks

echo
if ((${#failed[@]})); then
    echo "test: ${#failed[@]} of $count steps failed:"
    printf '  - %s\n' "${failed[@]}"
    exit 1
fi
echo "test: all $count steps passed"
