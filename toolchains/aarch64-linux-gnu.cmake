# 64-bit ARM Linux (Raspberry Pi 3/4/5 class and up), g++-aarch64-linux-gnu.
# Tests run under qemu-aarch64 (binfmt_misc is not assumed: ctest calls qemu itself).
#   MOE_ARCH_FLAGS  -march for the target; "-march=armv8.2-a+dotprod" enables the int8
#                   dot-product kernels (vdotq_s32), which need a core that has them
#   MOE_QEMU_CPU    qemu's -cpu for running the tests ("max" has dotprod; "cortex-a72"
#                   has not, so a dotprod binary dies with SIGILL there)
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(MOE_ARCH_FLAGS "-march=armv8-a" CACHE STRING "target ISA flags")
set(MOE_QEMU_CPU "cortex-a72" CACHE STRING "qemu -cpu model for the tests")
set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-aarch64;-cpu;${MOE_QEMU_CPU};-L;/usr/aarch64-linux-gnu")
