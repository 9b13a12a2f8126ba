# Bare-metal Cortex-M55 (Armv8.1-M with the M-profile vector extension and FPU) on
# qemu-system-arm's mps3-an547 board. The engine uses its scalar kernels (the compiler
# may auto-vectorise them with MVE).
set(MOE_ARCH_FLAGS "-mcpu=cortex-m55 -mthumb -mfloat-abi=hard" CACHE STRING "target ISA flags")
set(MOE_QEMU_MACHINE "mps3-an547" CACHE STRING "qemu-system-arm board the firmware runs on")
set(MOE_FIRMWARE_LINKER_SCRIPT "mps3-an547.ld" CACHE STRING "linker script in engine/firmware")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi-common.cmake)
