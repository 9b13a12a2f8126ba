#!/usr/bin/env bash
# Installs the Debian 12 packages moe-edge builds and tests with. Installs only what is
# missing; uses sudo when not run as root.
#   ./scripts/install-deps.sh          host build: compilers, libraries, test tools
#   ./scripts/install-deps.sh cross    also the ARM toolchains and qemu (the ARM suites)
#   ./scripts/install-deps.sh fuzz     also clang and libFuzzer (the fuzz preset); both words may be given
set -euo pipefail

packages=(
  build-essential cmake ninja-build
  libxsimd-dev xtl-dev                             # SIMD (xsimd 8.1)
  flatbuffers-compiler libflatbuffers-dev          # the .moe format (FlatBuffers 2.0.8)
  libgtest-dev googletest libbenchmark-dev         # tests (and GoogleTest's sources, for ARM) and benchmarks
  nlohmann-json3-dev libcli11-dev                  # tools: JSON, command lines
  libyaml-cpp-dev                                  # moe_merge: YAML recipes
  libutf8proc-dev                                  # the Unicode tables of BPE tokenizers (generated, checked)
)
for what in "$@"; do
  case "$what" in
  cross) packages+=(
    g++-aarch64-linux-gnu g++-arm-linux-gnueabihf  # ARM Linux cross compilers
    gcc-arm-none-eabi libnewlib-arm-none-eabi      # bare-metal Cortex-M
    libstdc++-arm-none-eabi-newlib                 # (only a Recommends of the above: named here)
    qemu-user qemu-system-arm                      # running ARM binaries and firmware
  )
  ;;
  fuzz) packages+=(clang-14 libclang-rt-14-dev) ;;  # libFuzzer, ASan, UBSan runtimes
  *) echo "install-deps: unknown group '$what' (cross, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
