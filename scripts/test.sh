#!/usr/bin/env bash
# The whole test suite, as CI runs it: install dependencies, then build and test
#   release          host, optimised
#   debug            host, AddressSanitizer + UndefinedBehaviorSanitizer
#   fuzz             libFuzzer targets (clang), each run for MOE_FUZZ_SECONDS (default 40)
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
  presets=(release debug fuzz aarch64 armv7 aarch64-dotprod cortex-m4 cortex-m55)
fi
groups=()
for p in "${presets[@]}"; do
  case "$p" in
  release | debug) ;;
  fuzz) groups+=(fuzz) ;;
  *) [[ " ${groups[*]} " == *" cross "* ]] || groups+=(cross) ;;
  esac
done
./scripts/install-deps.sh "${groups[@]}"

times=()
for preset in "${presets[@]}"; do
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
