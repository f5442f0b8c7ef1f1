/*
 * The guest workload core, shared by the freestanding payload (one vCPU of a
 * real KVM guest runs it at CPL3) and host builds (the software backend runs
 * it on host threads; unit tests run it over a plain buffer).
 *
 * All guest memory goes through wl_load64/wl_store64 and all time through
 * wl_now/wl_wait_until; the build picks the hooks:
 *   FERRY_GUEST_BUILD defined  -> hooks_guest.h (volatile pointers, rdtsc, out)
 *   otherwise                  -> hooks_host.h  (struct wl_ctx with ops)
 *
 * Every bit of per-vCPU state lives in that vCPU's status page (abi.h), none
 * in C statics, so a step can be resumed from guest memory alone: after a
 * migration the software backend simply calls wl_vcpu_step() again on the
 * destination. Steps are the unit: a host thread must stop between steps.
 *
 * Write protocol for one page (program order, x86 TSO keeps it visible in
 * that order):
 *   status.cur_page = page; table[page] = stamp; page[0] = stamp;
 *   page[4088] = stamp
 * A snapshot taken mid-write can therefore disagree only at status.cur_page,
 * which is reset to FERRY_GUEST_NO_PAGE at the end of each step.
 */
#ifndef FERRY_AGENT_GUEST_WORKLOAD_H_
#define FERRY_AGENT_GUEST_WORKLOAD_H_

#include <stdint.h>

#include "agent/guest/abi.h"

#ifdef FERRY_GUEST_BUILD
#include "agent/guest/hooks_guest.h"
#else
#include "agent/guest/hooks_host.h"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Validates the params page for `vcpu`, initialises its status page and
 * private state, and emits FERRY_GUEST_EVENT_STARTED (or _FATAL). Returns 0
 * or a FERRY_GUEST_FATAL_* code, also recorded in the status page.
 */
uint64_t wl_vcpu_init(struct wl_ctx *ctx, uint64_t vcpu);

/*
 * One batch: wait for pacing tokens, write up to `batch` pages (none when
 * idle), verify a chunk when due, publish counters. Does nothing unless the
 * vCPU's state is RUNNING.
 */
void wl_vcpu_step(struct wl_ctx *ctx, uint64_t vcpu);

/*
 * Verifies the vCPU's whole slice now (counts into the status page like the
 * periodic verification). Returns the mismatches found by this sweep.
 */
uint64_t wl_vcpu_verify_slice(struct wl_ctx *ctx, uint64_t vcpu);

struct wl_check_result {
  uint64_t pages_checked;
  uint64_t mismatches;
  uint64_t first_bad_page; /* FERRY_GUEST_NO_PAGE if none */
  uint64_t expected;
  uint64_t actual_head;
  uint64_t actual_tail;
};

/*
 * Read-only host-side check of the whole working set against the stamp
 * table, e.g. on a migration destination with vCPUs paused. Each vCPU's
 * status.cur_page is exempt (it may be mid-write). Writes nothing. Returns
 * 0, or FERRY_GUEST_FATAL_BAD_MAGIC / _BAD_LAYOUT if the params page cannot
 * be trusted (then nothing was checked).
 */
uint64_t wl_check_all(struct wl_ctx *ctx, struct wl_check_result *out);

#ifdef __cplusplus
}
#endif

#endif /* FERRY_AGENT_GUEST_WORKLOAD_H_ */
