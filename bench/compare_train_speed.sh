#!/usr/bin/env bash
# moe_train against PyTorch makeMoE: the same recipe (batch 16 x block 32, d 128, 8 heads,
# 8 layers, 8 experts, top-2, noisy gating, capacity 1.0, dropout 0.1, AdamW), on the same
# machine, in the same run. Prints mean ms/iteration and tokens/s for both, and the ratio.
#
#   ./bench/compare_train_speed.sh            # 100 timed steps each
#   STEPS=300 ./bench/compare_train_speed.sh
#
# The baseline needs Debian's PyTorch with OpenBLAS (without libopenblas0-pthread, torch
# falls back to the reference BLAS and runs about 6x slower):
#   sudo apt-get install python3-torch libopenblas0-pthread
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-100}
warmup=10
build=${BUILD:-build/release}
if [ ! -x "$build/trainer/moe_train" ]; then cmake --preset release >/dev/null && cmake --build --preset release --target moe_train; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

"$build/trainer/moe_train" --out "$tmp/run" --steps $((steps + warmup)) --eval-interval 1000000 --checkpoint-interval 1000000 \
  --log-interval 1000000 --threads 2 >/dev/null
ours_ms=$(tail -n "$steps" "$tmp/run/metrics.csv" | awk -F, '{s += $8} END {printf "%.1f", s / NR}')
echo "moe_train threads=2 ms_per_iter=$ours_ms tokens_per_s=$(awk -v m="$ours_ms" 'BEGIN {printf "%.0f", 512 / m * 1000}')"

if /usr/bin/python3 -c "import torch" 2>/dev/null; then
  /usr/bin/python3 bench/pytorch_makemoe.py --iters "$steps" --warmup "$warmup" --threads 1,2 | tee "$tmp/torch.txt"
  best=$(sed -E 's/.*ms_per_iter=([0-9.]+).*/\1/' "$tmp/torch.txt" | sort -n | head -1)
  echo "PyTorch at its best thread setting: $best ms/iteration; moe_train: $ours_ms ms/iteration;" \
       "moe_train is $(awk -v a="$best" -v b="$ours_ms" 'BEGIN {printf "%.2f", a / b}')x faster"
else
  echo "PyTorch not found (sudo apt-get install python3-torch libopenblas0-pthread): no baseline in this run"
fi
