#!/usr/bin/env bash
# A/B of moe_infer builds that each need their own model file (an older build reads only
# the format of its own converter): each side is BIN=FILE, the first one the baseline.
# The sides take turns round after round (round r starts with side r mod n), at each
# thread count, so all see the same machine load; the table gives each side's median
# pp64 and tg (after the prompt) over rounds, their ranges, and its ratio to the
# baseline's; then its decode's paired roofline (each round's median over its tg runs
# with probe passes beside them: bench/README.md "The paired roofline"): the median over
# rounds and its range, which the machine's bandwidth moving between rounds moves less
# than it moves tok/s.
#   AB_THREADS="1 2" AB_REPS=5 bench/ab_files.sh ROUNDS BASE_BIN=BASE_FILE BIN=FILE [BIN=FILE...] [-- moe_infer flags]
# AB_PROMPT (default 64) and AB_TOKENS (32) set the prompt and the tokens decoded after it
# (a long prompt puts decode at a long context).
# A side may add its own moe_infer flags after a second '=': BIN=FILE="--load read".
# Example (issue 20's baseline: the build before it, all-int8, against today's default):
#   bench/ab_files.sh 3 /tmp/old/moe_infer=granite-int8-old.moe build/x/tools/moe_infer=granite.moe
# The same build and file, mapped against read into memory:
#   bench/ab_files.sh 5 build/x/tools/moe_infer=granite.moe build/x/tools/moe_infer=granite.moe="--load read"
set -euo pipefail
rounds=$1
shift
sides=()
while [ $# -gt 0 ] && [ "$1" != -- ]; do
  [[ $1 == *=* ]] || { echo "ab_files.sh: '$1' is not BIN=FILE" >&2; exit 1; }
  sides+=("$1")
  shift
done
[ $# -gt 0 ] && shift  # the --
[ ${#sides[@]} -ge 2 ] || { echo "ab_files.sh: give a baseline and at least one other BIN=FILE" >&2; exit 1; }
bin() { echo "${1%%=*}"; }
file() { local rest=${1#*=}; echo "${rest%%=*}"; }
flags() { local rest=${1#*=}; [[ $rest == *=* ]] && echo "${rest#*=}"; true; }
for s in "${sides[@]}"; do
  [ -x "$(bin "$s")" ] || { echo "ab_files.sh: $(bin "$s"): not an executable" >&2; exit 1; }
  [ -f "$(file "$s")" ] || { echo "ab_files.sh: $(file "$s"): no such file" >&2; exit 1; }
done
threads=${AB_THREADS:-1 2} reps=${AB_REPS:-5} prompt=${AB_PROMPT:-64} tokens=${AB_TOKENS:-32}
n=${#sides[@]}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=bench/ab_lib.sh
source "$(dirname "$0")/ab_lib.sh"
for ((r = 0; r < rounds; ++r)); do
  for t in $threads; do
    for ((k = 0; k < n; ++k)); do
      i=$(((r + k) % n))
      s=${sides[$i]}
      # shellcheck disable=SC2046  # a side's flags are words
      "$(bin "$s")" -m "$(file "$s")" $(flags "$s") --bench --bench-prompt "$prompt" --bench-tokens "$tokens" --bench-reps "$reps" \
        --threads "$t" --json "$tmp/j" "$@" >/dev/null
      echo "$(field prefill_tok_s "$tmp/j") $(field decode_tok_s "$tmp/j") $(field roofline_fraction_paired "$tmp/j")" >> "$tmp/$i.$t"
    done
  done
done
paired_fractions() { cut -d' ' -f3 "$1" | awk '$1 > 0'; }  # a round's paired roofline, where it has one
echo "| build = file | threads | pp$prompt tok/s (range) | ratio | tg$tokens tok/s (range) | ratio | paired roofline (range) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for t in $threads; do
  p0=$(cut -d' ' -f1 "$tmp/0.$t" | med) t0=$(cut -d' ' -f2 "$tmp/0.$t" | med)
  for ((i = 0; i < n; ++i)); do
    p=$(cut -d' ' -f1 "$tmp/$i.$t" | med) d=$(cut -d' ' -f2 "$tmp/$i.$t" | med)
    pr=$(cut -d' ' -f1 "$tmp/$i.$t" | sort -g | awk 'NR == 1 {a = $1} {b = $1} END {printf "%.0f-%.0f", a, b}')
    dr=$(cut -d' ' -f2 "$tmp/$i.$t" | sort -g | awk 'NR == 1 {a = $1} {b = $1} END {printf "%.1f-%.1f", a, b}')
    paired="—"  # builds older than the paired roofline do not report it, nor runs without paired reps (0)
    if paired_fractions "$tmp/$i.$t" | grep -q .; then
      f=$(paired_fractions "$tmp/$i.$t" | med)
      fr=$(paired_fractions "$tmp/$i.$t" | sort -g | awk 'NR == 1 {a = $1} {b = $1} END {printf "%.0f-%.0f%%", 100 * a, 100 * b}')
      paired=$(awk -v f="$f" -v fr="$fr" 'BEGIN {printf "%.0f%% (%s)", 100 * f, fr}')
    fi
    awk -v s="${sides[$i]}" -v t="$t" -v p="$p" -v p0="$p0" -v d="$d" -v d0="$t0" -v pr="$pr" -v dr="$dr" -v f="$paired" \
      'BEGIN {printf "| %s | %d | %.0f (%s) | %.2f | %.1f (%s) | %.2f | %s |\n", s, t, p, pr, p / p0, d, dr, d / d0, f}'
  done
done
