/*
 * Workload-core hooks for host builds (software backend, unit tests). Guest
 * memory is either a flat host buffer (`mem`, direct volatile access) or
 * reached through `ops->load64/store64` (e.g. the software MMU translating
 * gpa -> hva and marking pages dirty). Time and waiting are always injected,
 * so tests can use a fake clock and the software backend can sleep instead of
 * burning one of the host's two cores.
 */
#ifndef FERRY_AGENT_GUEST_HOOKS_HOST_H_
#define FERRY_AGENT_GUEST_HOOKS_HOST_H_

#include <stdint.h>

#include "agent/guest/abi.h"

#ifdef __cplusplus
extern "C" {
#endif

struct wl_host_ops {
  /* NULL load64/store64: access ctx->mem directly. */
  uint64_t (*load64)(void *opaque, uint64_t gpa);
  void (*store64)(void *opaque, uint64_t gpa, uint64_t value);
  /* Required: the guest clock, in ticks of params.tsc_hz. */
  uint64_t (*now)(void *opaque);
  /* Optional: return once now() >= deadline. NULL: spin on now(). A fake
   * clock implements it by jumping to the deadline. */
  void (*wait_until)(void *opaque, uint64_t deadline);
  /* Optional: the rare guest -> host events (FERRY_GUEST_EVENT_*). */
  void (*event)(void *opaque, uint64_t vcpu, uint64_t code, uint64_t arg);
};

struct wl_ctx {
  uint8_t *mem;      /* host address of gpa 0 (direct mode) */
  uint64_t mem_size; /* bytes at mem (direct mode) */
  const struct wl_host_ops *ops;
  void *opaque; /* passed to every op */
};

static inline uint64_t *wl_direct(struct wl_ctx *ctx, uint64_t gpa) {
  /* A gpa outside the buffer means params validation is broken: crash. */
  if (gpa > ctx->mem_size || ctx->mem_size - gpa < 8) __builtin_trap();
  /* SAFETY: in bounds (checked above); callers pass 8-aligned gpas. */
  return (uint64_t *)(ctx->mem + gpa);
}

/* Relaxed atomics, not plain or volatile accesses: other host threads (the
 * migration copier, the host checker) read guest memory while the vCPU
 * thread writes it. On x86-64 these are the same single `mov` a real vCPU
 * does; the atomics only make the sharing defined (and TSAN-clean). */
static inline uint64_t wl_load64(struct wl_ctx *ctx, uint64_t gpa) {
  if (ctx->ops->load64) return ctx->ops->load64(ctx->opaque, gpa);
  return __atomic_load_n(wl_direct(ctx, gpa), __ATOMIC_RELAXED);
}

static inline void wl_store64(struct wl_ctx *ctx, uint64_t gpa, uint64_t v) {
  if (ctx->ops->store64) {
    ctx->ops->store64(ctx->opaque, gpa, v);
    return;
  }
  __atomic_store_n(wl_direct(ctx, gpa), v, __ATOMIC_RELAXED);
}

static inline uint64_t wl_now(struct wl_ctx *ctx) {
  return ctx->ops->now(ctx->opaque);
}

static inline void wl_wait_until(struct wl_ctx *ctx, uint64_t deadline) {
  if (ctx->ops->wait_until) {
    ctx->ops->wait_until(ctx->opaque, deadline);
    return;
  }
  while (wl_now(ctx) < deadline) {
  }
}

static inline void wl_event(struct wl_ctx *ctx, uint64_t vcpu, uint64_t code,
                            uint64_t arg) {
  if (ctx->ops->event) ctx->ops->event(ctx->opaque, vcpu, code, arg);
}

#ifdef __cplusplus
}
#endif

#endif /* FERRY_AGENT_GUEST_HOOKS_HOST_H_ */
