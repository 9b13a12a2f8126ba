#!/usr/bin/env bash
# The decode kernels of two versions of engine/moe, alternated token by token in one
# process over bench-s's and bench-m's decode weights (bench/kernel_ab/driver.cpp): a
# finer A/B than ab_e2e.sh for a kernel change. The weights sit in heap buffers (4 KB
# pages), unlike moe_infer's mapped model file: confirm a gain with ab_e2e.sh.
#   bench/kernel_ab.sh OLD_REV [NEW_REV]     (NEW_REV default: the working tree)
#   KERNEL_AB_FLAGS (default "-O3 -march=native") compiles both.
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
  g++ -std=c++20 $flags -DNDEBUG -I"$tmp/old/engine" -Dmoe=moe_old -DMOE_AB_FN=kernels_old -c "$root/bench/kernel_ab/kernels_tu.cpp" -o "$tmp/old.o"
  g++ -std=c++20 $flags -DNDEBUG -I"$tmp/new/engine" -DMOE_AB_FN=kernels_new -c "$root/bench/kernel_ab/kernels_tu.cpp" -o "$tmp/new.o"
  g++ -std=c++20 -O2 "$root/bench/kernel_ab/driver.cpp" "$tmp/old.o" "$tmp/new.o" -o "$tmp/kernel_ab"
}
for rep in 1 2; do
  "$tmp/kernel_ab" 256 512 256 128 0 400    # bench-s f32
  "$tmp/kernel_ab" 256 512 256 128 1 1000   # bench-s f16
  "$tmp/kernel_ab" 256 512 256 128 2 2000   # bench-s int8
  "$tmp/kernel_ab" 512 1408 512 256 0 100   # bench-m f32
  "$tmp/kernel_ab" 512 1408 512 256 2 400   # bench-m int8
done
