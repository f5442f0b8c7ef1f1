/*
 * Freestanding guest main: initialise this vCPU from the params page, then
 * run workload batches forever. All logic is in workload.c (shared with the
 * host builds); this file only adds what a bare CPL3 environment needs.
 */
#include <stddef.h>
#include <stdint.h>

#include "agent/guest/workload.h"

void guest_main(uint64_t vcpu) __attribute__((noreturn, used));

/* Parking loop for a vCPU that cannot run (bad params). `pause`, not `hlt`:
 * hlt is #GP at CPL3. The host reads why from the status page. */
static void park(void) __attribute__((noreturn));
static void park(void) {
  for (;;) __asm__ volatile("pause");
}

void guest_main(uint64_t vcpu) {
  if (wl_vcpu_init(NULL, vcpu) != FERRY_GUEST_FATAL_NONE) park();
  for (;;) wl_vcpu_step(NULL, vcpu);
}

/* GCC may emit calls to these even with -ffreestanding (struct copies and
 * zero-initialisation). The build passes -fno-tree-loop-distribute-patterns
 * so these loops are not themselves turned back into calls. */
void *memset(void *dst, int c, size_t n) {
  unsigned char *d = dst;
  while (n--) *d++ = (unsigned char)c;
  return dst;
}

void *memcpy(void *dst, const void *src, size_t n) {
  unsigned char *d = dst;
  const unsigned char *s = src;
  while (n--) *d++ = *s++;
  return dst;
}
