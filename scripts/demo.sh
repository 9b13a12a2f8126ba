#!/usr/bin/env bash
# The main job, end to end: install dependencies, build, take a Shakespeare model,
# convert it to int8 experts, generate a continuation, print latency.
#   ./scripts/demo.sh ["PROMPT"]
set -euo pipefail
cd "$(dirname "$0")/.."
prompt="${1:-ROMEO:}"

./scripts/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release --target moe_convert moe_infer

# The model: makeMoE's reference architecture, trained on tiny Shakespeare
# (tests/fixtures/makemoe-tiny, written by PyTorch).
mkdir -p out
./build/release/converter/moe_convert tests/fixtures/makemoe-tiny -o out/shakespeare.moe --experts int8
echo
./build/release/engine/moe_infer --model out/shakespeare.moe --prompt "$prompt" -n 200 --temp 0.8 --top-p 0.9 --seed 1
