#!/usr/bin/env bash
# A/B of two moe_infer builds on bench_e2e.sh's models: the two binaries alternate, round
# after round and first/second in turn, so both see the same machine load (this machine
# is shared and noisy), and the table gives each side's median over rounds and their
# ratio.
#   bench/ab_e2e.sh OLD_MOE_INFER NEW_MOE_INFER [ROUNDS=5] [MODELS_DIR=out/bench-e2e] [extra moe_infer flags...]
# Models: MODELS_DIR/<model>-<weights>.moe as bench_e2e.sh leaves them; AB_MODELS picks
# which (default: every tiny-a/bench-s/bench-m f32/f16/int8 file found).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=$1 new=$2 rounds=${3:-5} dir=${4:-$root/out/bench-e2e}
shift $(( $# < 4 ? $# : 4 ))
models=${AB_MODELS:-$(cd "$dir" && ls tiny-a-*.moe bench-s-*.moe bench-m-*.moe 2>/dev/null | sed 's/\.moe$//' | tr '\n' ' ')}
[ -n "$models" ] || { echo "ab_e2e.sh: no models in $dir (run bench/bench_e2e.sh first)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=bench/ab_lib.sh
source "$(dirname "$0")/ab_lib.sh"
for ((r = 0; r < rounds; ++r)); do
  for m in $models; do
    # Odd rounds run new first: whichever binary runs second in a pair measured up to
    # 15% slower on this machine, whichever it was.
    sides="old new"; ((r % 2)) && sides="new old"
    for side in $sides; do
      bin=$old; [ $side = new ] && bin=$new
      reps=3; [[ $m == tiny-a* ]] && reps=41  # a tiny-a run lasts ~2 ms: scheduler noise needs more of them
      "$bin" -m "$dir/$m.moe" --bench --bench-prompt 64 --bench-tokens 128 --bench-reps $reps --json "$tmp/j" "$@" >/dev/null
      echo "$(field prefill_tok_s "$tmp/j") $(field decode_tok_s "$tmp/j")" >> "$tmp/$m.$side"
    done
  done
done
echo "| model | pp64 old | pp64 new | ratio | tg128 old | tg128 new | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for m in $models; do
  po=$(cut -d' ' -f1 "$tmp/$m.old" | med) pn=$(cut -d' ' -f1 "$tmp/$m.new" | med)
  to=$(cut -d' ' -f2 "$tmp/$m.old" | med) tn=$(cut -d' ' -f2 "$tmp/$m.new" | med)
  awk -v m="$m" -v po="$po" -v pn="$pn" -v to="$to" -v tn="$tn" \
    'BEGIN {printf "| %s | %.0f | %.0f | %.2f | %.0f | %.0f | %.2f |\n", m, po, pn, pn / po, to, tn, tn / to}'
done
