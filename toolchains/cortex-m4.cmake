# Bare-metal Cortex-M4F (single-precision FPU) on qemu-system-arm's mps2-an386 board.
# The scalar kernels are used (xsimd has no Cortex-M architecture).
set(MOE_ARCH_FLAGS "-mcpu=cortex-m4 -mthumb -mfpu=fpv4-sp-d16 -mfloat-abi=hard" CACHE STRING "target ISA flags")
set(MOE_QEMU_MACHINE "mps2-an386" CACHE STRING "qemu-system-arm board the firmware runs on")
set(MOE_FIRMWARE_LINKER_SCRIPT "mps2.ld" CACHE STRING "linker script in engine/firmware")
include(${CMAKE_CURRENT_LIST_DIR}/arm-none-eabi-common.cmake)
