#!/usr/bin/env bash
# moe_infer against llama.cpp on the same weights at the real shapes (issue 20's peer
# comparison). For each model of real_shapes_models.sh: its random bf16 checkpoint, our
# .moe files (default recipe: int4 experts, int8 attention and embeddings; and all-int4),
# and llama.cpp's files of the same checkpoint (bench/llama_cpp_gguf.py, then
# llama-quantize: Q4_0 by default, whose recipe keeps output.weight in Q6_K). Then
# VS_ROUNDS rounds, each running every file at each thread count, the two tools'
# order swapped every round: `moe_infer --bench` (pp64, and tg32 from an empty cache as
# llama-bench counts it; --load read) and `llama-bench -p 64 -n 32` (its default mmap;
# Q4_0 is repacked into its own memory at load). Prints medians over rounds with ranges,
# and our ratio to each llama.cpp file; all runs in OUT_DIR/results.jsonl.
#   LLAMA_CPP=DIR bench/vs_llama_cpp.sh [OUT_DIR]   (default out/vs-llama-cpp)
# DIR: a llama.cpp checkout built outside this tree (cmake -DCMAKE_BUILD_TYPE=Release
# -DGGML_NATIVE=ON), with DIR/build/bin/llama-bench and llama-quantize; python3 with
# numpy for the GGUF ($PYTHON if set). llama.cpp of 2025-02-20 (c392e50) aborts in tg
# with its repacked Q4_0 experts (GGML_ASSERT in forward_mul_mat_id, its issue #11476:
# work_size() reserves 8 * (1 + n_expert) * n_tokens bytes for the row lists where
# 8 * n_expert * (1 + n_tokens) are used); the figures in bench/README.md come from that
# tree with that one line corrected.
# Env: VS_MODELS (default both), VS_THREADS ("1 2"), VS_ROUNDS (3), VS_QUANTS
# (llama-quantize types, "Q4_0"; its own recipes: Q4_K_M too), VS_RECIPES ("default
# int4"), VS_REPS (3: repetitions inside each tool's run), VS_LLAMA_BUILD (build: the
# folder of DIR whose bin/llama-bench runs, e.g. an AVX2 build of llama.cpp beside
# MOE_ARCH_FLAGS=-march=haswell for ours), VS_EXTRA ("NAME=CONFIG_KEY:MODEL_TYPE ...":
# more models for VS_MODELS, e.g. bench_e2e.sh's bench-m as a mixtral checkpoint),
# VS_CHECK_LOGITS=1 (first check that both run the same model: the f16 GGUF through
# bench/llama_cpp_logits.cpp, built here against libllama, and an all-fp16 .moe of the
# same checkpoint through moe_infer --logits-out, 8 prompt positions). Disk: OLMoE's f16
# GGUF is 14 GB while it is quantized; checkpoints and f16 files are deleted unless KEEP=1.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/out/vs-llama-cpp}
llama=${LLAMA_CPP:?set LLAMA_CPP to a llama.cpp checkout built outside this tree}
llama_bench=$llama/${VS_LLAMA_BUILD:-build}/bin/llama-bench
for tool in "$llama_bench" "$llama/build/bin/llama-quantize"; do
  [ -x "$tool" ] || { echo "vs_llama_cpp.sh: no $tool" >&2; exit 1; }
done
py=${PYTHON:-python3}
"$py" -c "import numpy" || { echo "vs_llama_cpp.sh: $py needs numpy (apt-get install python3-numpy; or PYTHON=...)" >&2; exit 1; }
mkdir -p "$out"
source "$root/bench/real_shapes_models.sh"
for spec in ${VS_EXTRA:-}; do  # NAME=CONFIG_KEY:MODEL_TYPE
  name=${spec%%=*} key_type=${spec#*=}
  keys[$name]=${key_type%%:*}
  types[$name]=${key_type#*:}
done
read -r -a models <<< "${VS_MODELS:-granite-1b-a400m olmoe-1b-7b}"
read -r -a threads <<< "${VS_THREADS:-1 2}"
read -r -a quants <<< "${VS_QUANTS:-Q4_0}"
read -r -a recipes <<< "${VS_RECIPES:-default int4}"
rounds=${VS_ROUNDS:-3}
reps=${VS_REPS:-3}
configs=""
for m in "${models[@]}"; do configs="$configs${configs:+;}${keys[$m]}"; done
arch=()
[ -z "${MOE_ARCH_FLAGS:-}" ] || arch=(-DMOE_ARCH_FLAGS="$MOE_ARCH_FLAGS")
bin=$root/build/vs-llama-cpp${MOE_ARCH_FLAGS:+-${MOE_ARCH_FLAGS//[^a-z0-9]/}}
cmake -S "$root" -B "$bin" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF \
  -DMOE_BUILD_TRAINER=OFF -DMOE_ONLY_CONFIGS="$configs" -DMOE_KV_CACHE=f32 "${arch[@]}" > /dev/null
cmake --build "$bin" --target moe_infer moe_convert moe_random_checkpoint

for m in "${models[@]}"; do
  for r in "${recipes[@]}"; do
    [ -f "$out/$m-$r.moe" ] && continue
    random_checkpoint "$bin" "$m" "$out"
    # shellcheck disable=SC2086
    "$bin/converter/moe_convert" "$out/$m" -o "$out/$m-$r.moe" ${recipe_flags[$r]} > "$out/$m-$r.convert.log" 2>&1
  done
  gguf_f16() {
    random_checkpoint "$bin" "$m" "$out"
    [ -f "$out/$m-f16.gguf" ] || "$py" "$root/bench/llama_cpp_gguf.py" "$llama" "$out/$m" "$out/$m-f16.gguf"
  }
  for qt in "${quants[@]}"; do
    [ -f "$out/$m-$qt.gguf" ] && continue
    gguf_f16
    "$llama/build/bin/llama-quantize" "$out/$m-f16.gguf" "$out/$m-$qt.gguf.tmp" "$qt" > "$out/$m-$qt.quantize.log" 2>&1
    mv "$out/$m-$qt.gguf.tmp" "$out/$m-$qt.gguf"
  done
  if [ "${VS_CHECK_LOGITS:-0}" = 1 ]; then  # the same model: f16 weights on both sides, logits after 8 ids
    gguf_f16
    [ -f "$out/$m-fp16.moe" ] || "$bin/converter/moe_convert" "$out/$m" -o "$out/$m-fp16.moe" --experts fp16 \
      --attention fp16 --embeddings fp16 -q
    [ -x "$out/llama_cpp_logits" ] || g++ -O2 -std=c++17 "$root/bench/llama_cpp_logits.cpp" -I"$llama/include" \
      -I"$llama/ggml/include" -L"$llama/build/bin" -lllama -lggml -lggml-base -Wl,-rpath,"$llama/build/bin" \
      -o "$out/llama_cpp_logits"
    ids=(1 2 3 5 8 13 21 34)
    "$out/llama_cpp_logits" "$out/$m-f16.gguf" "${ids[@]}" > "$out/$m-logits-llama.json" 2> /dev/null
    "$bin/tools/moe_infer" -m "$out/$m-fp16.moe" --ids "$(IFS=,; echo "${ids[*]}")" -n 0 --no-verify \
      --logits-out "$out/$m-logits-ours.json" > /dev/null
    "$py" - "$out/$m-logits-llama.json" "$out/$m-logits-ours.json" "$m" <<'PY'
import json, sys
theirs, ours = (json.load(open(f))['logits'] for f in sys.argv[1:3])
same = sum(max(range(len(a)), key=a.__getitem__) == max(range(len(b)), key=b.__getitem__) for a, b in zip(theirs, ours))
diff = max(max(abs(x - y) for x, y in zip(a, b)) for a, b in zip(theirs, ours))
spread = min(max(b) - min(b) for b in ours)
print(f"{sys.argv[3]}: llama.cpp's f16 GGUF against our fp16 .moe, {len(ours)} positions: the same top token at "
      f"{same}, largest logit difference {diff:.3g} (each position's logits span {spread:.3g} or more)")
PY
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "${out:?}/$m" "$out/$m-f16.gguf" "$out/$m-fp16.moe"
done

ours() {  # MODEL RECIPE THREADS ROUND
  "$bin/tools/moe_infer" -m "$out/$1-$2.moe" --bench --bench-prompt 64 --bench-tokens 32 --bench-reps "$reps" \
    --bench-paired-reps 0 --threads "$3" --load read --no-verify --json "$out/run.json" > /dev/null
  sed "s/^{/{\"tool\": \"moe_infer\", \"model\": \"$1\", \"file\": \"$2\", \"round\": $4, /" "$out/run.json" \
    >> "$out/results.jsonl"
  echo >> "$out/results.jsonl"
}
theirs() {  # MODEL QUANT THREADS ROUND
  "$llama_bench" -m "$out/$1-$2.gguf" -p 64 -n 32 -r "$reps" -t "$3" -o jsonl 2> /dev/null |
    sed "s/^{/{\"tool\": \"llama.cpp\", \"model\": \"$1\", \"file\": \"$2\", \"round\": $4, /" >> "$out/results.jsonl"
}
: > "$out/results.jsonl"
for ((round = 1; round <= rounds; ++round)); do
  for m in "${models[@]}"; do
    for t in "${threads[@]}"; do
      echo "round $round: $m, $t thread(s)"
      if ((round % 2)); then
        for r in "${recipes[@]}"; do ours "$m" "$r" "$t" "$round"; done
        for qt in "${quants[@]}"; do theirs "$m" "$qt" "$t" "$round"; done
      else
        for qt in "${quants[@]}"; do theirs "$m" "$qt" "$t" "$round"; done
        for r in "${recipes[@]}"; do ours "$m" "$r" "$t" "$round"; done
      fi
    done
  done
done

"$py" - "$out" <<'EOF'
import json, os, statistics, sys
out = sys.argv[1]
runs = [json.loads(line) for line in open(os.path.join(out, 'results.jsonl')) if line.strip()]
table = {}  # (model, threads, tool, file) -> {'pp': [...], 'tg': [...]}
for r in runs:
    if r['tool'] == 'moe_infer':
        key, pp, tg = (r['model'], r['threads'], r['tool'], r['file']), r['pp_tok_s'], r['tg_tok_s']
        table.setdefault(key, {'pp': [], 'tg': []})
        table[key]['pp'].append(pp)
        table[key]['tg'].append(tg)
    else:
        key = (r['model'], r['n_threads'], r['tool'], r['file'])
        kind = 'pp' if r['n_prompt'] > 0 else 'tg'
        table.setdefault(key, {'pp': [], 'tg': []})[kind].append(statistics.median(r['samples_ts']))
def cell(v):
    return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
print('| model | threads | file | MB | pp64 tok/s | tg32 tok/s (empty cache) | pp64 vs llama.cpp | tg32 vs llama.cpp |')
print('|---|---:|---|---:|---:|---:|---|---|')
for (model, t, tool, f), v in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] != 'moe_infer', kv[0][3])):
    path = os.path.join(out, f'{model}-{f}.' + ('moe' if tool == 'moe_infer' else 'gguf'))
    mb = os.path.getsize(path) / 1e6 if os.path.exists(path) else float('nan')
    ratios = ['', '']
    if tool == 'moe_infer':
        theirs = [(k[3], w) for k, w in table.items() if k[0] == model and k[1] == t and k[2] == 'llama.cpp']
        for i, kind in enumerate(('pp', 'tg')):
            ratios[i] = ', '.join(f"{statistics.median(v[kind]) / statistics.median(w[kind]):.2f}x {q}" for q, w in theirs)
    name = f"ours {f}" if tool == 'moe_infer' else f"llama.cpp {f}"
    print(f"| {model} | {t} | {name} | {mb:.0f} | {cell(v['pp'])} | {cell(v['tg'])} | {ratios[0]} | {ratios[1]} |")
EOF
