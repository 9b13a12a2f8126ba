/* Cortex-M start-up for the firmware example: the vector table, a reset handler that
 * turns the FPU on and copies .data from flash to RAM, then newlib's _start (zeroes
 * .bss, runs constructors, calls main, exits through semihosting). Faults report and
 * exit instead of spinning. */
#include <stdint.h>

extern uint32_t __StackTop, __etext, __data_start__, __data_end__;
extern void _start(void);
void semihost_write(const char* text);
void semihost_exit(int code);

void Reset_Handler(void) {
  /* CPACR: full access to coprocessors 10 and 11 (the FPU); without it the first float
     instruction faults. */
  *(volatile uint32_t*)0xE000ED88u |= 0xFu << 20;
  __asm volatile("dsb\n\tisb" ::: "memory");
  const uint32_t* src = &__etext;
  for (uint32_t* dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  _start();
  for (;;) {
  }
}

static void Fault_Handler(void) {
  semihost_write("moe firmware: processor fault\n");
  semihost_exit(2);
}

__attribute__((section(".isr_vector"), used)) const void* const vector_table[16] = {
    &__StackTop,
    (const void*)Reset_Handler,
    (const void*)Fault_Handler,
    (const void*)Fault_Handler,
    (const void*)Fault_Handler,
    (const void*)Fault_Handler,
    (const void*)Fault_Handler,
    0,
    0,
    0,
    0,
    (const void*)Fault_Handler,
    (const void*)Fault_Handler,
    0,
    (const void*)Fault_Handler,
    (const void*)Fault_Handler,
};
