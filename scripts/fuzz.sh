#!/usr/bin/env bash
# Run every target of every fuzz crate for SECONDS each; print, per target,
# the executions, executions per second, the largest input in its corpus and
# whether it crashed. Exits non-zero if any target crashed (or failed to
# build or run).
#
#   scripts/fuzz.sh SECONDS [TARGET...]     (from anywhere in the repository)
#
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz@0.13.2`); runs on
# stable rustc through RUSTC_BOOTSTRAP=1. Environment:
#   CARGO_TARGET_DIR  one build dir for all crates (default target/fuzz), so
#                     libFuzzer's C++ runtime is built once
#   FUZZ_SANITIZER    address (default) or none (faster; a panic is still a crash)
# Each target starts from its committed seeds (<crate>/fuzz/seeds/<target>/)
# and the local corpus (<crate>/fuzz/corpus/<target>/, not committed, grows
# across runs). A crash input lands in <crate>/fuzz/artifacts/<target>/.
set -uo pipefail

secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
only=("$@")
root=$(cd "$(dirname "$0")/.." && pwd)
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/fuzz}
case $CARGO_TARGET_DIR in /*) ;; *) CARGO_TARGET_DIR=$root/$CARGO_TARGET_DIR ;; esac
san=${FUZZ_SANITIZER:-address}
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

failed=0
results=()
for crate in fuzz routing/fuzz fcp/fuzz link/fuzz tunnel/fuzz; do
  dir=$root/$crate
  [ -f "$dir/Cargo.toml" ] || continue
  targets=()
  for f in "$dir"/fuzz_targets/*.rs; do
    t=$(basename "$f" .rs)
    if [ ${#only[@]} -eq 0 ] || [[ " ${only[*]} " == *" $t "* ]]; then targets+=("$t"); fi
  done
  [ ${#targets[@]} -eq 0 ] && continue
  # Build first, so a build failure is told apart from a crash.
  build=(cargo fuzz build -O -s "$san" --fuzz-dir "$dir")
  if [ ${#only[@]} -eq 0 ]; then
    (cd "$dir/.." && "${build[@]}") >"$logs/build" 2>&1
  else
    (cd "$dir/.." && for t in "${targets[@]}"; do "${build[@]}" "$t" || exit 1; done) >"$logs/build" 2>&1
  fi
  if [ $? -ne 0 ]; then
    tail -30 "$logs/build"
    echo "$crate: build failed"
    failed=1
    continue
  fi
  for t in "${targets[@]}"; do
    corpus=$dir/corpus/$t
    seeds=$dir/seeds/$t
    mkdir -p "$corpus" "$dir/artifacts/$t"
    set -- "$corpus"
    [ -d "$seeds" ] && set -- "$corpus" "$seeds"
    log=$logs/$t.log
    (cd "$dir/.." && cargo fuzz run -O -s "$san" --fuzz-dir "$dir" "$t" "$@" -- \
        -max_total_time="$secs" -print_final_stats=1 -artifact_prefix="$dir/artifacts/$t/") >"$log" 2>&1
    rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    largest=$(find "$corpus" -type f -printf '%s\n' 2>/dev/null | sort -n | tail -1)
    crashes=0
    if [ $rc -ne 0 ]; then
      crashes=1
      failed=1
      grep -E 'panicked|ERROR|SUMMARY|Test unit written|Failed to compile|error' "$log" | head -10
    fi
    results+=("$(printf '%-12s %-12s %12s %9s %9s %8s' "$crate" "$t" "${execs:-?}" "${rate:-?}" "${largest:-0}" "$crashes")")
    printf '%s\n' "${results[-1]}"
  done
done
echo
printf '%-12s %-12s %12s %9s %9s %8s\n' crate target executions exec/s max_len crashes
printf '%s\n' "${results[@]}"
exit $failed
