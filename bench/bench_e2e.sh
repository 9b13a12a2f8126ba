#!/usr/bin/env bash
# End-to-end latency of three llama-family models with deterministic random weights, for
# fp32, fp16, int8 and int4 weights (int4: int4 experts, int8 attention and embeddings)
# and moe_convert's default recipe: prefill (pp64) and decode (tg128 after a 64-token prompt)
# tokens/s with `moe_infer --bench`, which also probes the read bandwidth and prints each
# result's fraction of the bandwidth roofline (the probe runs on as many threads as the
# result), once against its best of five passes and once paired (probe passes beside each
# of further tg runs: bench/README.md "The paired roofline"). 1 and 2 threads
# (MOE_BENCH_THREADS="1 2"). Nothing large is committed: the checkpoints come from
# moe_random_checkpoint.
#   bench/bench_e2e.sh [OUT_DIR]     (default out/bench-e2e; results.jsonl and results.md there; ~10 min)
#   MOE_BENCH_WEIGHTS="int8 int4" picks recipes; MOE_BENCH_THREADS, MOE_BENCH_RUNS, MOE_BENCH_REPS as below
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/out/bench-e2e}
mkdir -p "$out"
declare -A models=(
  [tiny-a]=llama-d64-l2-h4-kv2-hd16-e4-k2-f128-v96-c256    # mixtral-tiny-a's dims (context 256: 64 + 128 tokens)
  [bench-s]=llama-d256-l8-h8-kv4-hd32-e8-k2-f512-v65-c512
  [bench-m]=llama-d512-l8-h8-kv4-hd64-e8-k2-f1408-v256-c1024
)
order=(tiny-a bench-s bench-m)
build=$root/build/bench-e2e
configs=$(IFS=';'; for m in "${order[@]}"; do printf '%s;' "${models[$m]}"; done)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF -DMOE_BUILD_TRAINER=OFF \
  -DMOE_EXTRA_CONFIGS="${configs%;}" >/dev/null
cmake --build "$build" --target moe_infer moe_convert moe_random_checkpoint

declare -A recipes=(
  [f32]="--experts fp32 --attention fp32 --embeddings fp32"
  [f16]="--experts fp16 --attention fp16 --embeddings fp16"
  [int8]="--experts int8 --attention int8 --embeddings int8"
  [int4]="--experts int4 --attention int8 --embeddings int8"
  [default]=""
)
weights=${MOE_BENCH_WEIGHTS:-f32 f16 int8 int4 default}
: > "$out/results.jsonl"
for m in "${order[@]}"; do
  [ -f "$out/$m/model.safetensors" ] || "$build/converter/moe_random_checkpoint" --config "${models[$m]}" --out "$out/$m" --seed 1
  for r in $weights; do
    # shellcheck disable=SC2086
    "$build/converter/moe_convert" "$out/$m" -o "$out/$m-$r.moe" ${recipes[$r]} -q
  done
done
# MOE_BENCH_RUNS sweeps (default 3): this machine's load changes over minutes, so each
# figure is the median over sweeps spread across the whole run, of medians over reps.
for ((run = 1; run <= ${MOE_BENCH_RUNS:-3}; ++run)); do
  for m in "${order[@]}"; do
    for r in $weights; do
      for t in ${MOE_BENCH_THREADS:-1 2}; do
        echo "== sweep $run: $m $r, $t thread(s)"
        reps=${MOE_BENCH_REPS:-5}
        [ "$m" = tiny-a ] && reps=$((reps * 10))  # a tiny-a run lasts ~2 ms: scheduler noise needs more of them
        "$build/tools/moe_infer" -m "$out/$m-$r.moe" --bench --bench-prompt 64 --bench-tokens 128 --bench-reps "$reps" \
          --bench-paired-reps "$reps" \
          --threads "$t" --json "$out/$m-$r-t$t.json"
        sed "s/^{/{\"model\": \"$m\", \"weights\": \"$r\", /" "$out/$m-$r-t$t.json" >> "$out/results.jsonl"
      done
    done
  done
done

{
  echo "| model | weights | threads | pp64 tok/s | tg128 tok/s | weight bytes/token | roofline | paired roofline |"
  echo "|---|---|---:|---:|---:|---:|---:|---:|"
  sed -E 's/.*"model": "([^"]*)", "weights": "([^"]*)".*"threads": ([0-9]+).*"weight_bytes_per_token": ([0-9]+).*"prefill_tok_s": ([0-9.]+), "decode_tok_s": ([0-9.]+),.*"roofline_fraction": ([0-9.]+).*"roofline_fraction_paired": ([0-9.]+).*/\1 \2 \3 \4 \5 \6 \7 \8/' "$out/results.jsonl" |
    awk '
      function median(list,  a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; ++i) for (j = i; j > 1 && a[j - 1] + 0 > a[j] + 0; --j) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
      }
      { key = $1 " | " $2 " | " $3; if (!(key in pp)) { order[++count] = key; bytes[key] = $4 }
        pp[key] = pp[key] " " $5; tg[key] = tg[key] " " $6; roof[key] = roof[key] " " $7; paired[key] = paired[key] " " $8 }
      END { for (i = 1; i <= count; ++i) { k = order[i]
              printf "| %s | %.0f | %.0f | %s | %.0f%% | %.0f%% |\n", k, median(pp[k]), median(tg[k]), bytes[k],
                     100 * median(roof[k]), 100 * median(paired[k]) } }'
} | tee "$out/results.md"
