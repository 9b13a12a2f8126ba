#!/usr/bin/env bash
# The whole test suite, as CI runs it: install dependencies, then build and test
#   release          host, optimised
#   debug            host, AddressSanitizer + UndefinedBehaviorSanitizer
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
  presets=(release debug aarch64 armv7 aarch64-dotprod cortex-m4 cortex-m55)
fi
cross=""
for p in "${presets[@]}"; do
  [ "$p" = release ] || [ "$p" = debug ] || cross=cross
done
./scripts/install-deps.sh $cross

for preset in "${presets[@]}"; do
  echo "== $preset"
  case "$preset" in cortex-*)  # the firmware's model is converted by the host build
    [ -x build/release/engine/moe_infer ] || { cmake --preset release >/dev/null && cmake --build --preset release --target moe_convert moe_infer; } ;;
  esac
  cmake --preset "$preset" -DMOE_WERROR=ON >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset"
done
