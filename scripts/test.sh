#!/usr/bin/env bash
# The whole test suite, as CI runs it: install dependencies, then build and test
#   release          host, optimised
#   debug            host, AddressSanitizer + UndefinedBehaviorSanitizer
#   fuzz             libFuzzer targets (clang), each run for MOE_FUZZ_SECONDS (default 40)
#   x86-avx2         the x86 AVX2 kernels (-march=haswell) beside the host's own, so an
#                    AVX-512 host tests them too: kernel and quantization tests
#   x86-avxvnni      the same with AVX-VNNI; skipped on a host without it
#   aarch64, armv7   ARM Linux cross builds, suites under qemu-user
#   aarch64-dotprod  the ARMv8.2 int8 dot-product kernels, under qemu-aarch64 -cpu max
#   cortex-m4/m55    bare-metal firmware generating under qemu-system-arm, checked
#                    against the host engine
# Compiler warnings are errors here.
#   ./scripts/test.sh                  everything
#   ./scripts/test.sh release debug    only those presets
set -euo pipefail
cd "$(dirname "$0")/.."

presets=("$@")
if ((${#presets[@]} == 0)); then
  presets=(release debug fuzz x86-avx2 x86-avxvnni aarch64 armv7 aarch64-dotprod cortex-m4 cortex-m55)
fi
groups=()
for p in "${presets[@]}"; do
  case "$p" in
  release | debug | x86-*) ;;
  fuzz) groups+=(fuzz) ;;
  *) [[ " ${groups[*]} " == *" cross "* ]] || groups+=(cross) ;;
  esac
done
./scripts/install-deps.sh "${groups[@]}"

times=()
# The CPU features an x86-* preset's binaries execute (/proc/cpuinfo's names).
declare -A cpu_needs=([x86-avx2]="avx2 fma f16c bmi2" [x86-avxvnni]="avx2 fma f16c bmi2 avx_vnni")
cpu_flags=" $(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2) "
for preset in "${presets[@]}"; do
  missing=()
  for f in ${cpu_needs[$preset]:-}; do [[ "$cpu_flags" == *" $f "* ]] || missing+=("$f"); done
  if ((${#missing[@]})); then
    echo "== $preset: skipped, this CPU has no ${missing[*]}"
    times+=("$preset: skipped (no ${missing[*]})")
    continue
  fi
  echo "== $preset"
  start=$SECONDS
  case "$preset" in cortex-*)  # the firmware's model is converted by the host build
    [ -x build/release/tools/moe_infer ] || { cmake --preset release >/dev/null && cmake --build --preset release --target moe_convert moe_infer; } ;;
  esac
  cmake --preset "$preset" -DMOE_WERROR=ON >/dev/null
  cmake --build --preset "$preset"
  built=$SECONDS
  if [ "$preset" = fuzz ]; then
    fuzz/run.sh "${MOE_FUZZ_SECONDS:-40}"
  else
    ctest --preset "$preset"
  fi
  times+=("$preset: build $((built - start)) s, tests $((SECONDS - built)) s")
done
echo "== time per preset"
printf '  %s\n' "${times[@]}"
