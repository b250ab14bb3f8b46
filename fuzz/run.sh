#!/usr/bin/env bash
# Runs each fuzz target for FUZZ_SECONDS, minimises its corpus and prints,
# per target: executions, corpus size, crashes. `make fuzz` calls it; see
# docs/fuzzing.md. Exits non-zero when a target crashed.
#
# FUZZ_SECONDS      time per target (default 60)
# FUZZ_TARGETS      which targets (default: all of fuzz/Cargo.toml)
# FUZZ_TARGET_DIR   cargo's build directory (default: target/fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
seconds=${FUZZ_SECONDS:-60}
target_dir=${FUZZ_TARGET_DIR:-$repo/target/fuzz}
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list)}
logs=$target_dir/logs
mkdir -p "$logs"

# The workspace's lock file, so the targets build the dependency versions
# that ship (cargo adds what only the fuzz crate uses).
cp Cargo.lock fuzz/Cargo.lock
cargo +nightly fuzz build --target-dir "$target_dir"

summary=()
failed=0
for t in $targets; do
    corpus=fuzz/corpus/$t
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    # The committed seeds start (and stay in) every corpus.
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    before=$(find "fuzz/artifacts/$t" -type f | wc -l)
    echo "== $t: ${seconds}s"
    status=0
    cargo +nightly fuzz run --target-dir "$target_dir" "$t" "$corpus" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
        >"$logs/$t.log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    cargo +nightly fuzz cmin --target-dir "$target_dir" "$t" "$corpus" >"$logs/$t.cmin.log" 2>&1 \
        || echo "$t: corpus minimisation failed, see $logs/$t.cmin.log"
    size=$(find "$corpus" -type f | wc -l)
    crashes=$(($(find "fuzz/artifacts/$t" -type f | wc -l) - before))
    if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=1
        echo "$t: crashed (exit $status); input in fuzz/artifacts/$t, log in $logs/$t.log"
        grep -m 5 -E "panicked|ERROR: libFuzzer|SUMMARY" "$logs/$t.log" || true
    fi
    summary+=("$(printf '%-18s %12s %8s %8s' "$t" "${execs:-?}" "$size" "$crashes")")
done

printf '\n%-18s %12s %8s %8s\n' target executions corpus crashes
printf '%s\n' "${summary[@]}"
exit "$failed"
