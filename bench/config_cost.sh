#!/usr/bin/env bash
# What a compiled config key costs: moe_infer alone (MOE_ONLY_CONFIGS), compile time and
# stripped size, for one key and for one, two and three more (the real shapes of
# bench/real_shapes.sh, and a key with a shared expert and q/k/v biases).
#   bench/config_cost.sh [BUILD_DIR]     (default build/config-cost; ~1 min)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build/config-cost}
mx=llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c128
gr=llama-d1024-l24-h16-kv8-hd64-e32-k8-f512-v49155-c4096
ol=llama-d2048-l16-h16-kv16-hd128-e64-k8-f1024-v50304-c4096-qkw
q2=llama-d64-l2-h4-kv4-hd16-e8-k2-f32-v256-c128-qkvb-s64
for set in "$mx" "$mx;$gr" "$mx;$gr;$ol" "$mx;$q2"; do
  rm -rf "$build"
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_ONLY_CONFIGS="$set" -DMOE_BUILD_TESTS=OFF \
    -DMOE_BUILD_BENCH=OFF -DMOE_BUILD_TRAINER=OFF >/dev/null
  cmake --build "$build" --target moe_platform >/dev/null  # not part of the per-key cost
  start=$(date +%s.%N)
  cmake --build "$build" --target moe_infer >/dev/null
  end=$(date +%s.%N)
  strip -o "$build/moe_infer.stripped" "$build/tools/moe_infer"
  printf '%s: compile %.1f s, stripped %s bytes\n' "$set" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" \
    "$(stat -c %s "$build/moe_infer.stripped")"
done
