/*
 * Workload-core hooks for the freestanding guest payload: memory is identity
 * mapped (guest-virtual == guest-physical), so an access is a volatile
 * dereference; time is the TSC; events are one `out` to the ABI port.
 * Included only through workload.h when FERRY_GUEST_BUILD is defined.
 */
#ifndef FERRY_AGENT_GUEST_HOOKS_GUEST_H_
#define FERRY_AGENT_GUEST_HOOKS_GUEST_H_

#include <stdint.h>

#include "agent/guest/abi.h"

/* The guest needs no context; the pointer is always NULL. */
struct wl_ctx;

static inline uint64_t wl_load64(struct wl_ctx *ctx, uint64_t gpa) {
  (void)ctx;
  /* SAFETY: the core only passes gpas inside regions validated against
   * params.mem_size at init, all identity mapped with U=1 by the VMM.
   * Volatile: the host observes and migrates this memory behind our back. */
  return *(volatile const uint64_t *)(uintptr_t)gpa;
}

static inline void wl_store64(struct wl_ctx *ctx, uint64_t gpa, uint64_t v) {
  (void)ctx;
  /* SAFETY: as in wl_load64. */
  *(volatile uint64_t *)(uintptr_t)gpa = v;
}

static inline uint64_t wl_now(struct wl_ctx *ctx) {
  (void)ctx;
  uint32_t lo, hi;
  /* rdtsc is allowed at CPL3 while CR4.TSD=0; no fence: pacing only needs
   * ~microsecond accuracy, not ordering against loads. */
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

static inline void wl_wait_until(struct wl_ctx *ctx, uint64_t deadline) {
  /* `pause`, never `hlt`: hlt at CPL3 is #GP, and with no IDT a triple
   * fault (KVM_EXIT_SHUTDOWN). */
  while (wl_now(ctx) < deadline) __asm__ volatile("pause");
}

static inline void wl_event(struct wl_ctx *ctx, uint64_t vcpu, uint64_t code,
                            uint64_t arg) {
  (void)ctx;
  (void)vcpu; /* the VMM knows which vCPU exited */
  uint32_t value = (uint32_t)(code | (arg << 8));
  uint16_t port = FERRY_GUEST_EVENT_PORT;
  /* Needs RFLAGS.IOPL=3 (FERRY_GUEST_ENTRY_RFLAGS), else #GP. "memory" so
   * the status page is written before the host looks at it. */
  __asm__ volatile("outl %0, %1" : : "a"(value), "Nd"(port) : "memory");
}

#endif /* FERRY_AGENT_GUEST_HOOKS_GUEST_H_ */
