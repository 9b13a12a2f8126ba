#!/usr/bin/env bash
# The decode kernels of two versions of engine/moe, alternated token by token in one
# process over the decode weights of bench-s, bench-m and, in int8 and int4, granite's and
# OLMoE's shapes (bench/kernel_ab/driver.cpp): a finer A/B than ab_e2e.sh for a kernel change; then
# their prefill kernels, every product against 16 tokens (bench-m) or 8 (OLMoE: 64
# experts, top 8, so a 64-token chunk gives each about 8). The weights sit in huge pages,
# as `moe_infer --load read` holds a model (KERNEL_AB_PAGES=4k: 4 KB pages, as a mapped
# file's): confirm a gain with ab_files.sh or ab_e2e.sh.
#   bench/kernel_ab.sh OLD_REV [NEW_REV]     (NEW_REV default: the working tree)
#   KERNEL_AB_FLAGS (default "-O3 -march=native") compiles both; KERNEL_AB_DTYPES (default
#   "0 1 2 3": f32 f16 int8 int4) picks the weight types run; KERNEL_AB_KINDS (default
#   "decode prefill"; also "cache": decode of one layer of 2 experts, in the caches, and
#   "full": decode over granite's whole expert set, 24 layers of 32, 8 a token as granite
#   routes, 0.73 GB in int4, each token after a 256 MiB pass of `moe_infer --bench`'s
#   read-bandwidth probe, against which both sides' GB/s are also given, and against the
#   probe's loop over the token's own matrices: plain loads over the same bytes) the rows;
#   KERNEL_AB_TOKENS (1 to 64) sets every prefill row's tokens per product. KINDS may also
#   name "attention": decode's attention over granite's and OLMoE's f32 KV caches at 96
#   (tg32 after 64 tokens), 256, 1,024 and 4,096 positions, laid out as the engine's, each
#   token after a 256 MiB pass of the read-bandwidth probe, against which both sides' GB/s
#   are also given (bench/kernel_ab/attention.cpp); "chunk-attention": prefill's, a
#   64-token chunk's attention ending at 512 and 2,048 positions.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
old=${1:?usage: bench/kernel_ab.sh OLD_REV [NEW_REV]} new=${2:-}
flags=${KERNEL_AB_FLAGS:--O3 -march=native}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/old" "$tmp/new"
git -C "$root" archive "$old" engine/moe | tar -x -C "$tmp/old"
if [ -n "$new" ]; then git -C "$root" archive "$new" engine/moe | tar -x -C "$tmp/new"; else mkdir -p "$tmp/new/engine" && cp -r "$root/engine/moe" "$tmp/new/engine/"; fi
# shellcheck disable=SC2086
{
  g++ -std=c++20 $flags -DNDEBUG -I"$tmp/old/engine" -Dmoe=moe_old -DMOE_AB_FN=kernels_old -DMOE_AB_ATTN_FN=attention_old -c "$root/bench/kernel_ab/kernels_tu.cpp" -o "$tmp/old.o"
  g++ -std=c++20 $flags -DNDEBUG -I"$tmp/new/engine" -DMOE_AB_FN=kernels_new -DMOE_AB_ATTN_FN=attention_new -c "$root/bench/kernel_ab/kernels_tu.cpp" -o "$tmp/new.o"
  g++ -std=c++20 $flags "$root/bench/kernel_ab/driver.cpp" "$tmp/old.o" "$tmp/new.o" -o "$tmp/kernel_ab"
  g++ -std=c++20 $flags "$root/bench/kernel_ab/attention.cpp" "$tmp/old.o" "$tmp/new.o" -o "$tmp/attention"
}
run() {  # D F QD KVD DTYPE TOKENS [N]
  if [[ " ${KERNEL_AB_DTYPES:-0 1 2 3} " == *" $5 "* ]]; then "$tmp/kernel_ab" "$@"; fi
}
kinds=" ${KERNEL_AB_KINDS:-decode prefill} "
for _ in 1 2; do
  if [[ $kinds == *" decode "* ]]; then
    run 256 512 256 128 0 400    # bench-s f32
    run 256 512 256 128 1 1000   # bench-s f16
    run 256 512 256 128 2 2000   # bench-s int8
    run 256 512 256 128 3 2000   # bench-s int4
    run 512 1408 512 256 0 100   # bench-m f32
    run 512 1408 512 256 2 400   # bench-m int8
    run 512 1408 512 256 3 400   # bench-m int4
    run 1024 512 1024 512 3 100  # granite-1b-a400m's shapes, int4 (71 MB: from memory, unless L3 holds it, as on Emerald Rapids' 260 MB)
    run 2048 1024 2048 2048 3 40 # OLMoE-1B-7B's shapes, int4 (300 MB: from memory)
    run 1024 512 1024 512 2 100  # granite's shapes, int8 (its attention and lm_head are int8 by default)
    run 2048 1024 2048 2048 2 40 # OLMoE's shapes, int8
  fi
  if [[ $kinds == *" cache "* ]]; then  # decode in the caches: one layer of 2 experts
    run 512 1408 512 256 2 4000 1 1 2    # bench-m int8 (about 5 MB)
    run 512 1408 512 256 3 4000 1 1 2    # bench-m int4 (about 3 MB)
    run 1024 512 1024 512 3 4000 1 1 2   # granite's shapes, int4 (about 3.5 MB)
  fi
  if [[ $kinds == *" full "* ]]; then  # decode at full size: no part of it stays in L3
    KERNEL_AB_PROBE_MIB=256 KERNEL_AB_PLAIN=1 run 1024 512 1024 512 3 30 1 24 32 8   # granite-1b-a400m, int4
    KERNEL_AB_PROBE_MIB=256 KERNEL_AB_PLAIN=1 run 1024 512 1024 512 2 30 1 24 32 8   # the same in int8 (1.3 GB)
  fi
  if [[ $kinds == *" attention "* ]]; then  # decode's attention over an f32 cache, from memory
    for pos in 96 256 1024 4096; do
      "$tmp/attention" 24 8 2 64 $pos $((pos < 1024 ? 200 : 20))     # granite-1b-a400m: 8 kv heads of 2 query heads
      "$tmp/attention" 16 16 1 128 $pos $((pos < 1024 ? 100 : 10))   # OLMoE-1B-7B: 16 kv heads of 1
    done
  fi
  if [[ $kinds == *" chunk-attention "* ]]; then  # prefill's attention: a 64-token chunk's, ending at 512 or 2,048 positions
    for pos in 512 2048; do
      "$tmp/attention" 24 8 2 64 $pos $((pos < 1024 ? 20 : 4)) 64     # granite-1b-a400m
      "$tmp/attention" 16 16 1 128 $pos $((pos < 1024 ? 20 : 4)) 64   # OLMoE-1B-7B
    done
  fi
  if [[ $kinds == *" prefill "* ]]; then
    run 512 1408 512 256 2 40 "${KERNEL_AB_TOKENS:-16}"     # bench-m int8, 16 tokens a product
    run 512 1408 512 256 3 40 "${KERNEL_AB_TOKENS:-16}"     # bench-m int4
    run 2048 1024 2048 2048 2 10 "${KERNEL_AB_TOKENS:-8}"   # OLMoE's shapes int8, 8 tokens a product
    run 2048 1024 2048 2048 3 10 "${KERNEL_AB_TOKENS:-8}"   # OLMoE's shapes int4
  fi
done
