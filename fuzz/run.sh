#!/usr/bin/env bash
# Runs every cargo-fuzz target of tokend for N seconds each (default 60) and prints, per
# target, executions, exec/s, coverage and findings. Exits non-zero if any target crashed,
# timed out or ran out of memory. See FUZZING.md at the repository root.
#
#   fuzz/run.sh [SECONDS] [TARGET...]      e.g.  fuzz/run.sh 300 config jwt
#
# Works on the stable toolchain: RUSTC_BOOTSTRAP=1 lets stable rustc accept the -Z flags
# cargo-fuzz passes (`-Zsanitizer=...` and friends). Environment knobs:
#   FUZZ_SANITIZER  address (default) | none   (none: ~1.5-2x faster, only panics caught)
#   FUZZ_JOBS       parallel targets (default 1; the CI machine has 2 cores)
#   FUZZ_CGU        codegen units (default: cargo-fuzz's 1; 16 builds faster, runs a bit slower)
#   FUZZ_TOOLCHAIN  e.g. "+nightly" to use a real nightly instead of RUSTC_BOOTSTRAP
set -euo pipefail
cd "$(dirname "$0")"

CARGO_FUZZ_VERSION=0.13.1
SECS=${1:-60}
shift || true
SANITIZER=${FUZZ_SANITIZER:-address}
JOBS=${FUZZ_JOBS:-1}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-}
BUILD_FLAGS=(--sanitizer "$SANITIZER" --debug-assertions)
[ -n "${FUZZ_CGU:-}" ] && BUILD_FLAGS+=(--codegen-units "$FUZZ_CGU")
case "$SECS" in '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 2 ;; esac

if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION\b"; then
  echo "== installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# The toolchain trick: stable rustc with nightly features unlocked.
[ -z "$TOOLCHAIN" ] && export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo $TOOLCHAIN fuzz list)
fi

fuzz() { cargo $TOOLCHAIN fuzz "$@"; }

echo "== building ${#targets[@]} targets (sanitizer: $SANITIZER)"
start=$(date +%s)
if [ $# -gt 0 ]; then
  for t in "${targets[@]}"; do fuzz build "${BUILD_FLAGS[@]}" "$t"; done
else
  fuzz build "${BUILD_FLAGS[@]}" # every target, one cargo invocation
fi
echo "== built in $(($(date +%s) - start)) s"

mkdir -p logs
run_one() {
  local t=$1 log="logs/$1.log"
  mkdir -p "corpus/$t" "artifacts/$t"
  local seeds=() dict=dicts/$t.dict
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  [ -f "$dict" ] || dict=dicts/provider.dict # the six provider answer parsers share one
  # -timeout: one input taking > 10 s is a finding (a hang); -rss_limit_mb: likewise memory.
  if fuzz run "${BUILD_FLAGS[@]}" "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -dict="$dict" -print_final_stats=1 >"$log" 2>&1; then
    echo ok >"logs/$t.status"
  else
    echo "FAILED (exit $?)" >"logs/$t.status"
  fi
}

running=0
for t in "${targets[@]}"; do
  echo "== fuzzing $t for $SECS s"
  run_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$JOBS" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
printf '\n%-18s %12s %8s %7s %7s %8s  %s\n' target executions exec/s cov ft corpus result
for t in "${targets[@]}"; do
  log="logs/$t.log"
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9a-zA-Z]*\).*/\1/p' <<<"$last")
  result=$(cat "logs/$t.status" 2>/dev/null || echo "FAILED (no status)")
  if [ "$result" != ok ]; then
    failed=1
    arts=$(find "artifacts/$t" -type f 2>/dev/null | tr '\n' ' ')
    result="$result; artifacts: ${arts:-none}; see fuzz/$log"
  fi
  printf '%-18s %12s %8s %7s %7s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}" "$result"
done
if [ "$failed" -ne 0 ]; then
  echo
  echo "fuzzing found problems; reproduce with:"
  echo "  RUSTC_BOOTSTRAP=1 cargo fuzz run ${BUILD_FLAGS[*]} TARGET ARTIFACT"
  exit 1
fi
