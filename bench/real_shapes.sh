#!/usr/bin/env bash
# The two real edge-sized MoE shapes of tests/fixtures/real_shapes.json, with
# deterministic random weights: granite-3.1-1b-a400m (Granite-MoE, 1.4B parameters) and
# OLMoE-1B-7B (6.9B). For each: moe_random_checkpoint writes the bf16 checkpoint in the
# Hub's sharded layout, moe_convert converts it with the default recipe (streamed,
# format version 3) under /usr/bin/time -v (peak RSS), and moe_infer --bench measures
# pp64 / tg32 at 1 and 2 threads with the bandwidth roofline, built with the f32 and
# the f16 KV cache (MOE_KV_CACHE), at context 4096. Needs about 25 GB of disk (the
# checkpoints are deleted once converted unless KEEP=1) and 3 GB of memory; ~15 min.
#   bench/real_shapes.sh [OUT_DIR]     (default out/real-shapes; results.jsonl and logs there)
# MOE_REAL_RECIPES="default int8 previous" also converts all-int8 and the previous default
# (int8 experts, fp16 attention and embeddings) beside the default (int4 experts, int8
# attention and embeddings), for the comparison in bench/README.md "int4" (each model's
# checkpoint is deleted after its last recipe, unless KEEP=1).
# MOE_REAL_BASELINE=REV (issue 20's: 6ecf1b6, the commit before its first change) also
# builds REV's moe_infer and moe_convert (from `git archive`, under OUT_DIR), converts
# each model all-int8 with REV's converter (REV reads only its own format), and runs
# bench/ab_files.sh (AB_ROUNDS rounds, default 3) with REV on that file against this
# build's default recipe, mapped (REV has no --load) and read into memory: pp64 and tg32
# against REV's int8, and each side's paired roofline (issue 20's two goals in one
# table). MOE_REAL_MODELS (default both) picks the models; MOE_ARCH_FLAGS
# (default CMake's -march=native) builds every side for another instruction set, e.g.
# -march=haswell for the AVX2 code on an AVX-512 machine.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/out/real-shapes}
mkdir -p "$out"
source "$root/bench/real_shapes_models.sh"
read -r -a order <<< "${MOE_REAL_MODELS:-granite-1b-a400m olmoe-1b-7b}"
read -r -a recipes <<< "${MOE_REAL_RECIPES:-default}"
configs="${keys[granite-1b-a400m]};${keys[olmoe-1b-7b]}"
arch=()
[ -z "${MOE_ARCH_FLAGS:-}" ] || arch=(-DMOE_ARCH_FLAGS="$MOE_ARCH_FLAGS")
build() {  # SOURCE BUILD_DIR KV TARGETS...
  cmake -S "$1" -B "$2" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF \
    -DMOE_BUILD_TRAINER=OFF -DMOE_ONLY_CONFIGS="$configs" -DMOE_KV_CACHE="$3" "${arch[@]}" >/dev/null
  cmake --build "$2" --target "${@:4}"
}
for kv in f32 f16; do
  build "$root" "$root/build/real-shapes-$kv" $kv moe_infer moe_convert moe_random_checkpoint
done
baseline=${MOE_REAL_BASELINE:-}
if [ -n "$baseline" ]; then
  base_src=$out/baseline-$baseline
  if [ ! -d "$base_src" ]; then
    mkdir -p "$base_src.tmp"
    git -C "$root" archive "$baseline" | tar -x -C "$base_src.tmp"
    mv "$base_src.tmp" "$base_src"
  fi
  build "$base_src" "$base_src/build" f32 moe_infer moe_convert
fi
bin=$root/build/real-shapes-f32
checkpoint() { random_checkpoint "$bin" "$1" "$out"; }  # MODEL
: > "$out/results.jsonl"
for m in "${order[@]}"; do
  for r in "${recipes[@]}"; do
    file=$out/$m.moe
    [ "$r" = default ] || file=$out/$m-$r.moe
    if [ ! -f "$file" ]; then
      checkpoint "$m"
      # shellcheck disable=SC2086
      /usr/bin/time -v "$bin/converter/moe_convert" "$out/$m" -o "$file" ${recipe_flags[$r]} > "$out/$m-$r.convert.log" 2>&1
    fi
    grep -E "Elapsed|Maximum resident" "$out/$m-$r.convert.log" 2>/dev/null | sed "s/^/$m $r convert: /" || true
    for kv in f32 f16; do
      for t in 1 2; do
        "$root/build/real-shapes-$kv/tools/moe_infer" -m "$file" --bench --bench-prompt 64 --bench-tokens 32 \
          --bench-reps 3 --threads $t --json "$out/run.json" | sed "s/^/$m $r kv=$kv t=$t: /"
        sed "s/^{/{\"model\": \"$m\", \"recipe\": \"$r\", /" "$out/run.json" >> "$out/results.jsonl"
      done
      /usr/bin/time -f "$m $r kv=$kv: process max RSS %M KB" "$root/build/real-shapes-$kv/tools/moe_infer" -m "$file" \
        --ids 1,2,3,4,5,6,7,8 -n 32 --temp 0 --no-verify --no-echo --no-stats > /dev/null
    done
  done
  if [ -n "$baseline" ]; then
    base_file=$out/$m-baseline-$baseline.moe
    if [ ! -f "$base_file" ]; then
      checkpoint "$m"
      # shellcheck disable=SC2086
      "$base_src/build/converter/moe_convert" "$out/$m" -o "$base_file" ${recipe_flags[int8]} > "$out/$m-baseline.convert.log" 2>&1
    fi
    echo "$m: $baseline all-int8 (mapped) against this build's default, mapped and read into memory"
    cat "$base_file" "$out/$m.moe" > /dev/null  # both in the page cache: a mapped side must not wait on the disk
    AB_REPS=${AB_REPS:-3} "$root/bench/ab_files.sh" "${AB_ROUNDS:-3}" "$base_src/build/tools/moe_infer=$base_file" \
      "$bin/tools/moe_infer=$out/$m.moe" "$bin/tools/moe_infer=$out/$m.moe=--load read" -- --no-verify
  fi
  [ "${KEEP:-0}" = 1 ] || rm -rf "${out:?}/$m"
done
