# What every bare-metal Cortex-M toolchain file shares: arm-none-eabi-gcc with newlib,
# only the firmware example built (engine/firmware), run under qemu-system-arm with
# semihosting. The including file sets MOE_ARCH_FLAGS, MOE_QEMU_MACHINE and
# MOE_FIRMWARE_LINKER_SCRIPT first.
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
# A fault would make qemu spin forever: every run is bounded.
set(CMAKE_CROSSCOMPILING_EMULATOR "timeout;120;qemu-system-arm;-M;${MOE_QEMU_MACHINE};-nographic;-semihosting;-kernel")
