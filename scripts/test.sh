#!/usr/bin/env bash
# The whole test suite, as CI runs it: install dependencies, then build and test twice,
# once optimised and once with AddressSanitizer + UndefinedBehaviorSanitizer.
# Compiler warnings are errors here.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
for preset in release debug; do
  echo "== $preset"
  cmake --preset "$preset" -DMOE_WERROR=ON >/dev/null
  cmake --build --preset "$preset"
  ctest --preset "$preset"
done
