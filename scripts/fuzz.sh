#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target in fuzz/ for N seconds each (default 20) and prints, per
# target, the executions and the crashes. Exits non-zero when a target crashed; the crashing
# input is kept in fuzz/artifacts/<target>/ (reproduce it with
# `RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <file>`).
#
# Usage: scripts/fuzz.sh [seconds]
#
# Runs on the pinned stable toolchain: RUSTC_BOOTSTRAP=1 lets it take the -Z sanitizer flags
# cargo-fuzz passes. WEFT_FUZZ_SANITIZER=none turns AddressSanitizer off. The seed corpora in
# fuzz/corpus/<target>/ are read, never written: what a run discovers stays in a temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-20}"
case "$seconds" in
    '' | *[!0-9]* | 0)
        echo "scripts/fuzz.sh: seconds must be a whole number above 0, not '$seconds'" >&2
        exit 2
        ;;
esac
sanitizer="${WEFT_FUZZ_SANITIZER:-address}"
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    echo "scripts/fuzz.sh: installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" --quiet
fi
export RUSTC_BOOTSTRAP=1

targets=$(cargo fuzz list)
cargo fuzz build --sanitizer "$sanitizer"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

failed=0
summary=""
for target in $targets; do
    mkdir -p "$work/$target/corpus" "$work/$target/artifacts"
    log="$work/$target/log"
    status=0
    cargo fuzz run --sanitizer "$sanitizer" "$target" "$work/$target/corpus" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -print_final_stats=1 \
        -artifact_prefix="$work/$target/artifacts/" >"$log" 2>&1 || status=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    crashes=$(find "$work/$target/artifacts" -type f | wc -l)
    if [ "$status" -ne 0 ] && [ "$crashes" -eq 0 ]; then
        # libFuzzer failed without leaving an input behind (a build or start-up error).
        crashes=1
    fi
    line=$(printf '%-16s %4ss  executions %10s  crashes %s' "$target" "$seconds" "${execs:-?}" "$crashes")
    echo "$line"
    summary+="$line"$'\n'
    if [ "$crashes" -ne 0 ]; then
        failed=1
        mkdir -p "fuzz/artifacts/$target"
        cp "$work/$target/artifacts/"* "fuzz/artifacts/$target/" 2>/dev/null || true
        echo "--- $target: end of the libFuzzer log (inputs kept in fuzz/artifacts/$target/)" >&2
        tail -n 40 "$log" >&2
    fi
done

echo "--- fuzz summary (sanitizer: $sanitizer)"
printf '%s' "$summary"
if [ "$failed" -ne 0 ]; then
    echo "scripts/fuzz.sh: a fuzz target crashed; fix the parser and add the input to the bad-input corpus" >&2
    exit 1
fi
