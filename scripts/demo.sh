#!/usr/bin/env bash
# The main job, end to end: install dependencies, build, train a Shakespeare MoE model
# (moe_train --preset quick: 1,500 steps, about 2 minutes on 2 cores), convert it with the default recipe
# (int4 experts, int8 attention and embeddings), generate a continuation, print latency.
#   ./scripts/demo.sh ["PROMPT"]
# The full makeMoE recipe (5,000 steps, about 6 minutes, val loss 1.75):
#   ./build/release/trainer/moe_train --preset makemoe --out out/shakespeare-full
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-ROMEO:}"

./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target moe_train moe_convert moe_infer

./build/release/trainer/moe_train --preset quick --data data/tinyshakespeare.txt --out out/shakespeare --log-interval 250 --eval-interval 500
echo
./build/release/converter/moe_convert out/shakespeare -o out/shakespeare.moe
echo
./build/release/tools/moe_infer --model out/shakespeare.moe --prompt "$prompt" -n 200 --temp 0.8 --top-p 0.9 --seed 1
