#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (default 600 s each) and prints one line per
# target: executions, and whether it crashed. CI runs it for 10 s a target; by hand:
#   bash fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]
# Needs cargo-fuzz (`cargo install cargo-fuzz`); libFuzzer needs nightly features, which
# RUSTC_BOOTSTRAP=1 unlocks on the stable toolchain. A crash leaves its input under
# fuzz/artifacts/TARGET/; fix the bug and keep the input as a regression case beside the
# parser's unit tests.
set -uo pipefail
cd "$(dirname "$0")"
secs=${1:-600}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list 2>/dev/null)
fi
export RUSTC_BOOTSTRAP=1
# Build flags for cargo fuzz (FUZZ_FLAGS overrides them; CI trades AddressSanitizer, which
# finds little in code without `unsafe`, and one codegen unit for a build minutes faster).
read -r -a flags <<<"${FUZZ_FLAGS:--O}"
cargo fuzz build "${flags[@]}" || exit 1
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log=$(mktemp)
  cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1
  rc=$?
  runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | awk '{print $2}')
  [ -z "$runs" ] && runs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
  if [ $rc -eq 0 ]; then
    echo "$t: ${runs:-?} executions in ${secs} s, no crash"
  else
    failed=1
    echo "$t: CRASH after ${runs:-?} executions (exit $rc); input in fuzz/artifacts/$t/, log $log"
    continue
  fi
  rm -f "$log"
done
exit $failed
