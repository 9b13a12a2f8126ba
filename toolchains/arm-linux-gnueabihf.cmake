# 32-bit ARMv7-A Linux with NEON and VFPv4 (hard float), g++-arm-linux-gnueabihf: boards
# such as the Raspberry Pi 2 or a 32-bit OS on later ones. neon-vfpv4 gives fused
# multiply-add (vfma; plain -mfpu=neon emits non-fused vmla) and the half-precision
# conversion instructions the fp16 weights use. Tests run under qemu-arm.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR armv7l)
set(CMAKE_C_COMPILER arm-linux-gnueabihf-gcc)
set(CMAKE_CXX_COMPILER arm-linux-gnueabihf-g++)
set(CMAKE_FIND_ROOT_PATH /usr/arm-linux-gnueabihf)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
set(MOE_ARCH_FLAGS "-march=armv7-a -mfpu=neon-vfpv4 -mfloat-abi=hard -mfp16-format=ieee" CACHE STRING "target ISA flags")
set(CMAKE_CROSSCOMPILING_EMULATOR "qemu-arm;-cpu;cortex-a15;-L;/usr/arm-linux-gnueabihf")
