# Bare-metal Cortex-M55 (Armv8.1-M with the M-profile vector extension and FPU),
# arm-none-eabi-gcc with newlib; runs under qemu-system-arm's mps3-an547 board. As for
# toolchains/cortex-m4.cmake, only the firmware example is built; the engine uses its
# scalar kernels (the compiler may auto-vectorise them with MVE).
set(CMAKE_SYSTEM_NAME Generic)
set(CMAKE_SYSTEM_PROCESSOR arm)
set(CMAKE_C_COMPILER arm-none-eabi-gcc)
set(CMAKE_CXX_COMPILER arm-none-eabi-g++)
set(CMAKE_ASM_COMPILER arm-none-eabi-gcc)
set(CMAKE_TRY_COMPILE_TARGET_TYPE STATIC_LIBRARY)
set(MOE_ARCH_FLAGS "-mcpu=cortex-m55 -mthumb -mfloat-abi=hard" CACHE STRING "target ISA flags")
set(MOE_QEMU_MACHINE "mps3-an547" CACHE STRING "qemu-system-arm board the firmware runs on")
set(MOE_FIRMWARE_LINKER_SCRIPT "mps3-an547.ld" CACHE STRING "linker script in engine/firmware")
set(CMAKE_CROSSCOMPILING_EMULATOR "timeout;120;qemu-system-arm;-M;${MOE_QEMU_MACHINE};-nographic;-semihosting;-kernel")
