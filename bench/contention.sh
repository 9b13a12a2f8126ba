#!/usr/bin/env bash
# A shared machine: pp64 and tg64 of bench-m (moe_convert's default recipe) at 1 thread and
# at all the physical cores, first on a quiet machine, then with a competing busy process
# pinned to the last CPU (the case where a static split waits for the worker whose core the
# other process holds). Uses bench_e2e.sh's build and models (run that first, or let this
# build them: MOE_BENCH_WEIGHTS=default bench/bench_e2e.sh).
#   bench/contention.sh [OUT_DIR]     (default out/bench-e2e; MOE_BENCH_RUNS sweeps, default 3)
# Another model: MOE_CONTENTION_MODEL=FILE and MOE_CONTENTION_INFER=a moe_infer built for
# it, MOE_CONTENTION_FLAGS=further moe_infer flags (e.g. "--load read --no-verify
# --bench-tokens 32" for the real shapes of real_shapes.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/out/bench-e2e}
infer=${MOE_CONTENTION_INFER:-$root/build/bench-e2e/tools/moe_infer}
model=${MOE_CONTENTION_MODEL:-$out/bench-m-default.moe}
read -r -a flags <<< "${MOE_CONTENTION_FLAGS:-}"
[ -x "$infer" ] && [ -f "$model" ] || { echo "contention.sh: run MOE_BENCH_WEIGHTS=default bench/bench_e2e.sh first" >&2; exit 2; }
mkdir -p "$out"
cores=$("$infer" -m "$model" --bench --bench-prompt 1 --bench-tokens 1 --bench-reps 1 --bench-paired-reps 0 --json - 2>/dev/null |
  sed -n 's/.*"threads": \([0-9]*\).*/\1/p')
last_cpu=$(taskset -pc $$ | sed 's/.*: //; s/.*[,-]//')
busy_pid=
stop_busy() { [ -z "$busy_pid" ] || kill "$busy_pid" 2>/dev/null || true; busy_pid=; }
trap stop_busy EXIT
measure() {  # threads -> "pp tg"
  "$infer" -m "$model" --bench --bench-prompt 64 --bench-tokens 64 --bench-reps 3 --bench-paired-reps 0 --threads "$1" \
    "${flags[@]}" --json - 2>/dev/null |
    sed -n 's/.*"prefill_tok_s": \([0-9.]*\).*"decode_tok_s": \([0-9.]*\).*/\1 \2/p'
}
: > "$out/contention.txt"
for ((run = 1; run <= ${MOE_BENCH_RUNS:-3}; ++run)); do
  for load in quiet busy; do
    if [ "$load" = busy ]; then
      taskset -c "$last_cpu" sh -c 'while :; do :; done' &
      busy_pid=$!
      sleep 0.5
    fi
    for t in 1 "$cores"; do echo "$load $t $(measure "$t")" | tee -a "$out/contention.txt"; done
    stop_busy
  done
done
echo "| machine | threads | pp64 tok/s | tg tok/s | pp, tg against 1 thread |"
echo "|---|---:|---:|---:|---:|"
# shellcheck source=bench/ab_lib.sh
source "$(dirname "$0")/ab_lib.sh"  # med
for load in quiet busy; do
  one=$(grep "^$load 1 " "$out/contention.txt")
  p1=$(awk '{ print $3 }' <<<"$one" | med) d1=$(awk '{ print $4 }' <<<"$one" | med)
  for t in 1 "$cores"; do
    rows=$(grep "^$load $t " "$out/contention.txt")
    p=$(awk '{ print $3 }' <<<"$rows" | med) d=$(awk '{ print $4 }' <<<"$rows" | med)
    awk -v l="$load" -v t="$t" -v p="$p" -v d="$d" -v p1="$p1" -v d1="$d1" \
      'BEGIN { printf "| %s | %d | %.0f | %.1f | %.2f, %.2f |\n", l, t, p, d, p / p1, d / d1 }'
  done
done
