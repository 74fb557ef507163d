#!/usr/bin/env bash
# Runs every fuzz target for SECS seconds (default 600) on the stable toolchain, one target
# per core at a time (JOBS=N to use fewer), growing the checked-in corpus. Crashes land in fuzz/artifacts/TARGET/;
# turn each into a regression test before fixing it.
# Usage: fuzz/run.sh [SECS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-600}"; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(vsoa_decoder login url_rules text_parsers clevershow_decoder sp_decoder)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in "${targets[@]}"; do cargo fuzz build -O "$t"; done
jobs="${JOBS:-$(nproc)}"
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  while [ "$(jobs -r | wc -l)" -ge "$jobs" ]; do sleep 1; done
  (cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -print_final_stats=1 \
      > "logs-$t.txt" 2>&1; echo "$t: exit $?" ) &
done
wait
for t in "${targets[@]}"; do
  echo "== $t: $(grep -E '^stat::number_of_executed_units' "logs-$t.txt" || echo 'no stats (see fuzz/logs-'"$t"'.txt)')"
done
