/* Minimal semihosting (ARM's "bkpt 0xAB" calls, which qemu -semihosting serves): text
 * out, exit with a status. No stdio, so nothing on the output path can allocate. */
#include <stdint.h>

static int semihost_call(int op, const void* arg) {
  register int r0 __asm__("r0") = op;
  register const void* r1 __asm__("r1") = arg;
  __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void semihost_write(const char* text) { semihost_call(0x04 /* SYS_WRITE0 */, text); }

void semihost_exit(int code) {
  /* SYS_EXIT_EXTENDED: reason ADP_Stopped_ApplicationExit with a status, so qemu's exit
     code is the program's. */
  const uint32_t block[2] = {0x20026u, (uint32_t)code};
  semihost_call(0x20 /* SYS_EXIT_EXTENDED */, block);
  semihost_call(0x18 /* SYS_EXIT */, (const void*)0x20026u);
  for (;;) {
  }
}

/* The engine must not allocate: newlib's allocator entry points end the run instead. */
__attribute__((noinline)) static void heap_trap_from(const void* caller) {
  static const char hex[] = "0123456789abcdef";
  char text[64] = "moe firmware: heap allocation attempted from 0x";
  char* p = text + 47;
  for (int shift = 28; shift >= 0; shift -= 4) *p++ = hex[((unsigned)(uintptr_t)caller >> shift) & 0xf];
  *p++ = '\n';
  *p = 0;
  semihost_write(text);
  semihost_exit(3);
}
#define heap_trap() heap_trap_from(__builtin_return_address(0))
struct _reent;
void* malloc(unsigned size) {
  (void)size;
  heap_trap();
  return 0;
}
void* calloc(unsigned n, unsigned size) {
  (void)n;
  (void)size;
  heap_trap();
  return 0;
}
void* realloc(void* p, unsigned size) {
  (void)p;
  (void)size;
  heap_trap();
  return 0;
}
void free(void* p) {
  if (p) heap_trap();
}
void* _malloc_r(struct _reent* r, unsigned size) {
  (void)r;
  (void)size;
  heap_trap();
  return 0;
}
void* _calloc_r(struct _reent* r, unsigned n, unsigned size) {
  (void)r;
  (void)n;
  (void)size;
  heap_trap();
  return 0;
}
void* _realloc_r(struct _reent* r, void* p, unsigned size) {
  (void)r;
  (void)p;
  (void)size;
  heap_trap();
  return 0;
}
void _free_r(struct _reent* r, void* p) {
  (void)r;
  if (p) heap_trap();
}
