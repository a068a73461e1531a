#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit tests, the end-to-end tests against a
# real `hutch serve` (they need root, and fail rather than skip under CI=true), among them the
# API contract check by schemathesis (crates/hutch/tests/schemathesis.rs; deps.sh installs it),
# and the benchmarks in quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "== cargo test"
cargo test --locked --workspace
echo "== interpreter workers (protocol tests)"
/usr/bin/python3 -m unittest discover -s crates/hutch-agent/workers/tests
echo "== Python SDK tests (against a real hutch serve)"
HUTCH_BIN="$PWD/target/debug/hutch" target/venv-sdk/bin/pytest -q python/tests
echo "== benchmark (quick mode: checks that it runs, figures are not meaningful)"
for scenario in sessions commands files interpreter; do
    cargo run --locked -q -p hutch -- bench "$scenario" --quick
done
