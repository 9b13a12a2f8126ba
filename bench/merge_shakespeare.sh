#!/usr/bin/env bash
# Model merging on tiny Shakespeare, end to end: the numbers in README's "Merging
# models" section come from this script.
#   bench/merge_shakespeare.sh [RUN_DIR]      (default runs/merge; base ~2 min, ~1 min per fine-tune, 4 min for the rest)
#
# 1. Split data/tinyshakespeare.txt into four quarters (roughly: different plays); the last
#    10% of each quarter is held out from every model.
# 2. Train a dense base (one expert per layer) on the four training parts, then fine-tune
#    it into six specialists: one per quarter (q0..q3) and one per half (h0, h1).
# 3. Merge with every method (bench/merge_recipes/*.yaml; the frankenMoE variants with
#    flags), convert, generate, and measure held-out loss (merge_eval) and where the
#    frankenMoE routers send each quarter's held-out text.
# 4. The same frankenMoE from four specialists whose texts differ in form (plain, UPPER
#    CASE, lower case, each line reversed), where routing by resemblance is possible.
# Steps whose output exists are skipped: rerun to continue.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
run=${1:-runs/merge}
mkdir -p "$run/data"
run=$(cd "$run" && pwd)
R=$root/build/release
cmake --preset release >/dev/null
cmake --build --preset release --target moe_train moe_merge moe_convert merge_eval

# 1. Data: quarters by bytes (the file is ASCII).
text=$root/data/tinyshakespeare.txt
n=$(stat -c %s "$text")
cd "$run/data"
for q in 0 1 2 3; do
  [ -f q$q.heldout.txt ] && continue
  a=$((q * n / 4)) len=$(((q + 1) * n / 4 - q * n / 4))
  train=$((len * 9 / 10))
  tail -c +$((a + 1)) "$text" | head -c $len > q$q.txt
  head -c $train q$q.txt > q$q.train.txt
  tail -c +$((train + 1)) q$q.txt > q$q.heldout.txt
  rm q$q.txt
done
cat q0.train.txt q1.train.txt q2.train.txt q3.train.txt > all.train.txt
cat q0.train.txt q1.train.txt > h0.train.txt
cat q2.train.txt q3.train.txt > h1.train.txt
cat q0.train.txt q1.train.txt > plain.train.txt
cat q0.heldout.txt q1.heldout.txt > plain.heldout.txt
for part in train heldout; do
  tr a-z A-Z < plain.$part.txt > upper.$part.txt
  tr A-Z a-z < plain.$part.txt > lower.$part.txt
  rev < plain.$part.txt > reversed.$part.txt
done
cd "$run"

# 2. The dense base and its specialists (the makeMoE model with one expert: a dense FFN).
dense=(--preset quick --experts 1 --top-k 1 --capacity-factor 0 --router-noise false --threads 2)
[ -f base/model.safetensors ] || "$R/trainer/moe_train" "${dense[@]}" --data data/all.train.txt --steps 2000 --out base > base.log
for s in q0 q1 q2 q3 h0 h1 plain upper lower reversed; do
  [ -f spec-$s/model.safetensors ] ||
    "$R/trainer/moe_train" "${dense[@]}" --init-from base --data data/$s.train.txt --steps 600 --out spec-$s > spec-$s.log
done

# 3. Merges.
for recipe in linear slerp task_arithmetic ties dare_ties dare_linear passthrough frankenmoe; do
  "$R/trainer/merge/moe_merge" --config "$root/bench/merge_recipes/$recipe.yaml" --out merged-$recipe
done
experts=()
for q in 0 1 2 3; do experts+=(--expert spec-q$q --prompts data/q$q.train.txt); done
merge="$R/trainer/merge/moe_merge --method moe --base base"
$merge "${experts[@]}" --experts-per-token 1 --out merged-frankenmoe-k1
$merge "${experts[@]}" --gate-mode classifier --out merged-frankenmoe-classifier
$merge "${experts[@]}" --gate-mode random --seed 1 --out merged-frankenmoe-random
forms=()
for f in plain upper lower reversed; do forms+=(--expert spec-$f --prompts data/$f.train.txt); done
for mode in hidden classifier random; do $merge "${forms[@]}" --gate-mode $mode --seed 1 --out merged-forms-$mode; done

eval=("$R/bench/merge_eval" --routing)
quarters=(--text q0=data/q0.heldout.txt --text q1=data/q1.heldout.txt --text q2=data/q2.heldout.txt --text q3=data/q3.heldout.txt)
models=(--model base=base)
for s in q0 q1 q2 q3 h0 h1; do models+=(--model spec-$s=spec-$s); done
for m in linear slerp task_arithmetic ties dare_ties dare_linear passthrough frankenmoe frankenmoe-k1 frankenmoe-classifier frankenmoe-random; do
  models+=(--model $m=merged-$m)
done
"${eval[@]}" "${quarters[@]}" "${models[@]}" | tee merge_eval.md
texts=()
models=(--model base=base)
for f in plain upper lower reversed; do texts+=(--text $f=data/$f.heldout.txt) models+=(--model spec-$f=spec-$f); done
for mode in hidden classifier random; do models+=(--model forms-$mode=merged-forms-$mode); done
"${eval[@]}" "${texts[@]}" "${models[@]}" | tee merge_eval_forms.md

# Convert and generate with moe_infer, built for the merged models' configs.
configs=""
for m in merged-*/; do
  m=${m%/}
  key=$("$R/converter/moe_convert" "$m" -o "$m.moe" | sed -n 's/^config *\([a-z]*-d[0-9a-z-]*\).*/\1/p')
  configs="$configs;$key"
done
cmake -S "$root" -B "$root/build/merge" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOE_BUILD_TESTS=OFF -DMOE_BUILD_BENCH=OFF \
  -DMOE_BUILD_TRAINER=OFF -DMOE_EXTRA_CONFIGS="${configs#;}" >/dev/null
cmake --build "$root/build/merge" --target moe_infer
for m in merged-*.moe; do
  echo "== $m"
  "$root/build/merge/tools/moe_infer" -m "$m" -p "ROMEO:" -n 120 -s 1
done | tee generations.txt
