#!/usr/bin/env bash
# Fuzzes every parser that reads client or sandbox bytes with libFuzzer, coverage-guided
# (targets in crates/hutch-fuzz, listed by its corpus/ directories).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# runs each TARGET (default: all) for SECONDS (default 60). scripts/test.sh runs every target
# for a few seconds; a long run is e.g. `scripts/fuzz.sh 3600`. Stable Rust is enough: the
# runner is built with the same coverage instrumentation cargo-fuzz uses without a sanitizer.
# Inputs found to add coverage go to target/fuzz/corpus/TARGET/, crashing inputs to
# target/fuzz/artifacts/TARGET/ (add one to crates/hutch-fuzz/corpus/TARGET/ to keep it as a
# regression test). Prints the executions per target; fails when a target crashed.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
corpus=crates/hutch-fuzz/corpus
if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(ls "$corpus")
fi

host=$(rustc -vV | sed -n 's/^host: //p')
flags="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4"
flags+=" -Cllvm-args=-sanitizer-coverage-inline-8bit-counters"
flags+=" -Cllvm-args=-sanitizer-coverage-pc-table"
flags+=" -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing"
# --target keeps the instrumentation off build scripts and proc macros.
RUSTFLAGS="$flags" cargo build --locked --profile fuzz -p hutch-fuzz --features libfuzzer \
    --bin hutch-fuzz --target "$host" --target-dir target/fuzz
runner=target/fuzz/$host/fuzz/hutch-fuzz

failed=()
for target in "${targets[@]}"; do
    [[ -d $corpus/$target ]] || { echo "no target $target (see $corpus/)"; exit 2; }
    work=target/fuzz/corpus/$target
    artifacts=target/fuzz/artifacts/$target
    log=target/fuzz/$target.log
    mkdir -p "$work" "$artifacts"
    status=0
    HUTCH_FUZZ_TARGET=$target "$runner" -max_total_time="$seconds" -max_len=65536 \
        -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 -artifact_prefix="$artifacts/" \
        "$work" "$corpus/$target" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    units=$(find "$work" -type f | wc -l)
    if ((status == 0)); then
        echo "fuzz $target: ${runs:-0} executions in $seconds s, corpus $units inputs"
    else
        echo "fuzz $target: FAILED after ${runs:-?} executions (log $log):"
        grep -v '^#' "$log" | tail -30
        failed+=("$target")
    fi
done
if ((${#failed[@]} > 0)); then
    echo "fuzz: crashes in ${failed[*]}; inputs in target/fuzz/artifacts/"
    exit 1
fi
