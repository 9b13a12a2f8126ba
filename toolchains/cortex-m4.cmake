# Bare-metal Cortex-M4F (single-precision FPU), arm-none-eabi-gcc with newlib. Builds
# the firmware example only (engine/firmware); it runs under qemu-system-arm's
# mps2-an386 board with semihosting, which is how ctest runs it. The scalar kernels are
# used (xsimd has no Cortex-M architecture).
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(MOE_ARCH_FLAGS "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard" CACHE STRING "target ISA flags")
set(MOE_QEMU_MACHINE "mps2-an386" CACHE STRING "qemu-system-arm board the firmware runs on")
set(MOE_FIRMWARE_LINKER_SCRIPT "mps2.ld" CACHE STRING "linker script in engine/firmware")
# A fault would make qemu spin forever: every run is bounded.
set(CMAKE_CROSSCOMPILING_EMULATOR "timeout;120;qemu-system-arm;-M;${MOE_QEMU_MACHINE};-nographic;-semihosting;-kernel")
