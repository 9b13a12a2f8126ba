#!/usr/bin/env bash
# Runs each fuzz target for a bounded time on its committed seeds (fuzz/corpus/, left
# unchanged) plus a scratch corpus, two at a time. A crash leaves its input in
# build/fuzz/artifacts/ and fails the run. Reproduce one:  build/fuzz/fuzz/fuzz_model_file <input>
#   fuzz/run.sh [seconds per target, default 60] [target ...]
#   cmake --preset fuzz && cmake --build --preset fuzz   # first
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
((${#targets[@]})) || targets=(model_file checkpoint prompt recipe tokenizer)
out=build/fuzz/artifacts
mkdir -p "$out"

fuzz_one() {
  local t=$1 scratch=build/fuzz/scratch/$1
  mkdir -p "$scratch"
  build/fuzz/fuzz/fuzz_$t "$scratch" fuzz/corpus/$t -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -artifact_prefix="$out/$t-" -print_final_stats=1 > "build/fuzz/$t.log" 2>&1
  local rc=$?
  local execs
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "build/fuzz/$t.log" | grep -o '[0-9]*$')
  if ((rc == 0)); then
    echo "fuzz_$t: ${execs:-?} executions in ${seconds} s, no crash"
  else
    echo "fuzz_$t: FAILED (exit $rc); the log's end:"
    tail -40 "build/fuzz/$t.log"
  fi
  return $rc
}

status=0
pids=()
for t in "${targets[@]}"; do
  fuzz_one "$t" &
  pids+=($!)
  if ((${#pids[@]} == 2)); then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
