#!/usr/bin/env bash
# Size of `moe_infer` built for one model config (what a board ships), stripped, and
# where its code goes (nm). The performance issue's target: <= 200 KB on x86-64.
#   bench/binary_size.sh [CONFIG_KEY] [ARCH_FLAGS]
# (default: bench-m's key and -march=native; e.g. '-mavx2 -mfma -mf16c' for a portable x86 build)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
key=${1:-llama-d512-l8-h8-kv4-hd64-e8-k2-f1408-v256-c1024}
arch=${2:--march=native}
build=$root/build/binary-size
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF -DMOE_BUILD_TRAINER=OFF \
  -DMOE_ONLY_CONFIGS="$key" -DMOE_ARCH_FLAGS="$arch" >/dev/null
cmake --build "$build" --target moe_infer >/dev/null
strip -o "$build/moe_infer.stripped" "$build/tools/moe_infer"
echo "moe_infer for $key ($arch), stripped: $(stat -c %s "$build/moe_infer.stripped") bytes"
nm -C --size-sort -S "$build/tools/moe_infer" | awk '
  function hex(s,  i, c, v) { v = 0; for (i = 1; i <= length(s); ++i) { c = index("0123456789abcdef", tolower(substr(s, i, 1))) - 1; v = v * 16 + c } return v }
  { n = hex($2); k = ($0 ~ /moe::/) ? "moe (engine, file, sampler, tools)" : ($0 ~ /std::/) ? "std" : "other"; t[k] += n }
  END { for (k in t) printf "  %-36s %7d bytes of symbols\n", k, t[k] }'
