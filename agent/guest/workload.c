/*
 * Guest workload core: page stamping, self-check and paced workloads. See
 * workload.h for the contract and abi.h for the memory layout. Written to
 * compile both freestanding (no libc, no SSE, no statics) and hosted.
 */
#include "agent/guest/workload.h"

#include <stddef.h>
#include <stdint.h>

#define PARAM(field) \
  ((uint64_t)FERRY_GUEST_PARAMS_GPA + offsetof(struct ferry_guest_params, field))
#define STATUS(vcpu, field) \
  (FERRY_GUEST_STATUS_GPA_OF(vcpu) + offsetof(struct ferry_guest_status, field))
#define PRIVATE_GPA(vcpu) \
  (FERRY_GUEST_STATUS_GPA_OF(vcpu) + FERRY_GUEST_STATUS_PRIVATE_OFFSET)

/* Batches stay small so the pacing check (one rdtsc) runs every ~1 ms of
 * work at most, and cheap relative to the writes when unthrottled. */
#define WL_MAX_BATCH 64
#define WL_PAGES_PER_BATCH_DIVISOR 1000 /* batch ~= 1 ms of the vCPU's rate */
/* Tokens a late vCPU may spend at once. Absorbs wake-up jitter without the
 * catch-up burst a paused (e.g. just migrated) guest would otherwise make. */
#define WL_BURST_BATCHES 4
#define WL_IDLE_TICKS_NO_TSC (1ull << 20)

/*
 * Private per-vCPU state, stored as u64 words at PRIVATE_GPA(vcpu) and
 * loaded into a local copy for the duration of one step.
 */
struct wl_state {
  /* Fixed at init. */
  uint64_t kind; /* effective leaf kind: IDLE, UNIFORM, HOTCOLD, SEQUENTIAL */
  uint64_t ws_gpa;
  uint64_t table_gpa;
  uint64_t slice_first;
  uint64_t slice_pages;
  uint64_t hot_pages;
  uint64_t hot_prob; /* per mille */
  uint64_t verify_interval;
  uint64_t verify_chunk;
  uint64_t fill_words;
  uint64_t writers; /* vCPUs that write (effective kind != IDLE) */
  uint64_t rank;    /* this vCPU's index among the writers */
  uint64_t tsc_hz;
  /* Pacing, re-derived when params.config_seq changes. */
  uint64_t config_seq;
  uint64_t throttled;
  uint64_t share; /* this vCPU's pages/s */
  uint64_t ticks_per_page;
  uint64_t batch;
  uint64_t burst_ticks;
  /* Progress. */
  uint64_t rng;
  uint64_t seq;
  uint64_t seq_cursor;
  uint64_t verify_cursor;
  uint64_t verify_countdown;
  uint64_t next_tsc;
  /* Mirrors of the public counters. */
  uint64_t iterations;
  uint64_t pages_written;
  uint64_t last_stamp;
  uint64_t selfcheck_errors;
  uint64_t verify_passes;
  uint64_t pages_verified;
};

#define WL_STATE_WORDS (sizeof(struct wl_state) / sizeof(uint64_t))
_Static_assert(sizeof(struct wl_state) <=
                   sizeof(((struct ferry_guest_status *)0)->private_state),
               "private state fits the status page");

/* ---- small pure helpers ------------------------------------------------ */

/* floor(a * b / 2^64): maps a random u64 onto [0, b) without division or
 * modulo bias. Inline `mul`, no libgcc call, so fine freestanding. */
static uint64_t mulhi(uint64_t a, uint64_t b) {
  return (uint64_t)(((unsigned __int128)a * b) >> 64);
}

/* splitmix64 (Steele et al.): turns (seed, vcpu) into well-mixed RNG seeds. */
static uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

/* xorshift64* (Vigna): a few cycles per number, state never 0. */
static uint64_t rng_next(uint64_t *state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545f4914f6cdd1dull;
}

static uint64_t rng_seed(uint64_t seed, uint64_t vcpu) {
  uint64_t s = splitmix64(seed ^ splitmix64(vcpu + 1));
  return s ? s : 1;
}

static uint64_t load_param(struct wl_ctx *ctx, uint64_t gpa) {
  return wl_load64(ctx, gpa);
}

/* ---- params validation ------------------------------------------------- */

static int leaf_kind(uint64_t kind) {
  return kind >= FERRY_WL_IDLE && kind <= FERRY_WL_SEQUENTIAL;
}

/* MIXED without an override rotates the three writing shapes by vCPU. */
static uint64_t effective_kind(struct wl_ctx *ctx, uint64_t vcpu) {
  uint64_t kind = load_param(ctx, PARAM(kind));
  if (kind != FERRY_WL_MIXED) return kind;
  uint64_t k = load_param(ctx, PARAM(vcpu_kind) + 8 * vcpu);
  if (k != FERRY_WL_UNSPECIFIED) return k;
  switch (vcpu % 3) {
    case 0:
      return FERRY_WL_UNIFORM;
    case 1:
      return FERRY_WL_HOTCOLD;
    default:
      return FERRY_WL_SEQUENTIAL;
  }
}

static int region_ok(uint64_t gpa, uint64_t bytes, uint64_t mem_size) {
  return (gpa & (FERRY_GUEST_PAGE_SIZE - 1)) == 0 &&
         gpa >= FERRY_GUEST_DATA_MIN_GPA && gpa <= mem_size &&
         bytes <= mem_size - gpa;
}

static int layout_ok(struct wl_ctx *ctx) {
  uint64_t mem = load_param(ctx, PARAM(mem_size));
  uint64_t ws = load_param(ctx, PARAM(ws_gpa));
  uint64_t pages = load_param(ctx, PARAM(ws_pages));
  uint64_t table = load_param(ctx, PARAM(stamp_table_gpa));
  if (pages > (FERRY_STAMP_PAGE_MASK + 1)) return 0; /* index must fit a stamp */
  uint64_t ws_bytes = pages << FERRY_GUEST_PAGE_SHIFT;
  uint64_t table_bytes = pages * 8;
  if (!region_ok(ws, ws_bytes, mem) || !region_ok(table, table_bytes, mem))
    return 0;
  return table + table_bytes <= ws || ws + ws_bytes <= table;
}

static uint64_t validate_params(struct wl_ctx *ctx, uint64_t vcpu) {
  if (load_param(ctx, PARAM(magic)) != FERRY_GUEST_PARAMS_MAGIC)
    return FERRY_GUEST_FATAL_BAD_MAGIC;
  if (load_param(ctx, PARAM(version)) != FERRY_GUEST_ABI_VERSION)
    return FERRY_GUEST_FATAL_BAD_VERSION;
  uint64_t n = load_param(ctx, PARAM(nr_vcpus));
  if (n == 0 || n > FERRY_GUEST_MAX_VCPUS || vcpu >= n)
    return FERRY_GUEST_FATAL_BAD_VCPU;
  uint64_t kind = load_param(ctx, PARAM(kind));
  if (kind == FERRY_WL_UNSPECIFIED || kind >= FERRY_WL_KIND_COUNT)
    return FERRY_GUEST_FATAL_BAD_KIND;
  /* Every vCPU's kind, not just ours: the partition depends on all of them. */
  for (uint64_t j = 0; j < n; j++)
    if (!leaf_kind(effective_kind(ctx, j))) return FERRY_GUEST_FATAL_BAD_KIND;
  if (!layout_ok(ctx)) return FERRY_GUEST_FATAL_BAD_LAYOUT;
  if (load_param(ctx, PARAM(hot_fraction_permille)) > 1000 ||
      load_param(ctx, PARAM(hot_probability_permille)) > 1000)
    return FERRY_GUEST_FATAL_BAD_PERMILLE;
  if (load_param(ctx, PARAM(target_dirty_pages_per_sec)) != 0 &&
      load_param(ctx, PARAM(tsc_hz)) == 0)
    return FERRY_GUEST_FATAL_NO_TSC_HZ;
  return FERRY_GUEST_FATAL_NONE;
}

/* ---- state derivation -------------------------------------------------- */

/* Writers split the working set into disjoint contiguous slices, so no two
 * vCPUs ever write the same page or table entry (no cross-vCPU races). Idle
 * vCPUs own nothing: the working set is what gets written. */
static void derive_layout(struct wl_ctx *ctx, uint64_t vcpu, struct wl_state *st) {
  uint64_t n = load_param(ctx, PARAM(nr_vcpus));
  for (uint64_t j = 0; j < n; j++) {
    if (effective_kind(ctx, j) == FERRY_WL_IDLE) continue;
    if (j < vcpu) st->rank++;
    st->writers++;
  }
  st->kind = effective_kind(ctx, vcpu);
  st->ws_gpa = load_param(ctx, PARAM(ws_gpa));
  st->table_gpa = load_param(ctx, PARAM(stamp_table_gpa));
  st->tsc_hz = load_param(ctx, PARAM(tsc_hz));
  if (st->kind != FERRY_WL_IDLE) {
    uint64_t pages = load_param(ctx, PARAM(ws_pages));
    st->slice_first = st->rank * pages / st->writers;
    st->slice_pages = (st->rank + 1) * pages / st->writers - st->slice_first;
  }
  uint64_t frac = load_param(ctx, PARAM(hot_fraction_permille));
  st->hot_pages = st->slice_pages * frac / 1000;
  if (frac != 0 && st->hot_pages == 0 && st->slice_pages != 0) st->hot_pages = 1;
  st->hot_prob = load_param(ctx, PARAM(hot_probability_permille));
  st->verify_interval = load_param(ctx, PARAM(verify_interval_batches));
  st->verify_chunk = load_param(ctx, PARAM(verify_chunk_pages));
  st->fill_words = load_param(ctx, PARAM(fill_words));
  if (st->fill_words > FERRY_FILL_WORDS_MAX) st->fill_words = FERRY_FILL_WORDS_MAX;
  st->verify_countdown = st->verify_interval;
}

/* Token bucket in TSC ticks: each page costs ticks_per_page. The VM-wide
 * rate is split over the writers, remainder to the lowest ranks, so the
 * shares add up exactly. Integer ticks_per_page makes the rate at most
 * share/tsc_hz relatively too high (< 0.1% for any sane setting). */
static void derive_pacing(struct wl_ctx *ctx, struct wl_state *st) {
  uint64_t total = load_param(ctx, PARAM(target_dirty_pages_per_sec));
  st->config_seq = load_param(ctx, PARAM(config_seq));
  st->share = 0;
  if (st->writers != 0)
    st->share = total / st->writers + (st->rank < total % st->writers);
  st->ticks_per_page = st->share ? st->tsc_hz / st->share : 0;
  /* A share above tsc_hz cannot be paced in whole ticks: run flat out. */
  st->throttled = total != 0 && !(st->share != 0 && st->ticks_per_page == 0);
  st->batch = WL_MAX_BATCH;
  if (st->throttled) {
    uint64_t b = st->share / WL_PAGES_PER_BATCH_DIVISOR;
    st->batch = b < 1 ? 1 : (b > WL_MAX_BATCH ? WL_MAX_BATCH : b);
  }
  st->burst_ticks = WL_BURST_BATCHES * st->batch * st->ticks_per_page;
  st->next_tsc = wl_now(ctx);
}

/* ---- state load / store ------------------------------------------------ */

static void load_state(struct wl_ctx *ctx, uint64_t vcpu, struct wl_state *st) {
  uint64_t *w = (uint64_t *)st;
  for (uint64_t i = 0; i < WL_STATE_WORDS; i++)
    w[i] = wl_load64(ctx, PRIVATE_GPA(vcpu) + 8 * i);
}

/* Saves the private state and publishes the counters the host reads. */
static void save_state(struct wl_ctx *ctx, uint64_t vcpu,
                       const struct wl_state *st) {
  const uint64_t *w = (const uint64_t *)st;
  for (uint64_t i = 0; i < WL_STATE_WORDS; i++)
    wl_store64(ctx, PRIVATE_GPA(vcpu) + 8 * i, w[i]);
  wl_store64(ctx, STATUS(vcpu, iterations), st->iterations);
  wl_store64(ctx, STATUS(vcpu, pages_written), st->pages_written);
  wl_store64(ctx, STATUS(vcpu, last_stamp), st->last_stamp);
  wl_store64(ctx, STATUS(vcpu, cur_page), FERRY_GUEST_NO_PAGE);
  wl_store64(ctx, STATUS(vcpu, selfcheck_errors), st->selfcheck_errors);
  wl_store64(ctx, STATUS(vcpu, verify_passes), st->verify_passes);
  wl_store64(ctx, STATUS(vcpu, pages_verified), st->pages_verified);
  wl_store64(ctx, STATUS(vcpu, heartbeat_tsc), wl_now(ctx));
}

/* ---- writing ----------------------------------------------------------- */

static uint64_t page_gpa(const struct wl_state *st, uint64_t page) {
  return st->ws_gpa + (page << FERRY_GUEST_PAGE_SHIFT);
}

/* Returns a slice-relative page index. */
static uint64_t pick_hotcold(struct wl_state *st) {
  uint64_t cold = st->slice_pages - st->hot_pages;
  int hot = cold == 0 ||
            (st->hot_pages != 0 && mulhi(rng_next(&st->rng), 1000) < st->hot_prob);
  if (hot) return mulhi(rng_next(&st->rng), st->hot_pages);
  return st->hot_pages + mulhi(rng_next(&st->rng), cold);
}

static uint64_t pick_page(struct wl_state *st) {
  if (st->kind == FERRY_WL_SEQUENTIAL) {
    uint64_t p = st->seq_cursor;
    st->seq_cursor = p + 1 == st->slice_pages ? 0 : p + 1;
    return p;
  }
  if (st->kind == FERRY_WL_HOTCOLD) return pick_hotcold(st);
  return mulhi(rng_next(&st->rng), st->slice_pages);
}

/* Table first, then the page: see the write protocol in workload.h. The tail
 * copy catches a torn page (first half new, second half old). */
static void write_page(struct wl_ctx *ctx, uint64_t vcpu, struct wl_state *st,
                       uint64_t page) {
  uint64_t stamp = ferry_stamp_make(++st->seq, vcpu, page);
  uint64_t gpa = page_gpa(st, page);
  wl_store64(ctx, STATUS(vcpu, cur_page), page);
  wl_store64(ctx, st->table_gpa + 8 * page, stamp);
  wl_store64(ctx, gpa + FERRY_STAMP_HEAD_OFFSET, stamp);
  /* Filler: xorshift64 seeded by the stamp, so every write of a page
   * changes all of it (incompressible, no useful XOR delta). */
  uint64_t x = stamp ^ 0x6a09e667f3bcc909ull;
  for (uint64_t i = 0; i < st->fill_words; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    wl_store64(ctx, gpa + 8 + 8 * i, x);
  }
  wl_store64(ctx, gpa + FERRY_STAMP_TAIL_OFFSET, stamp);
  st->last_stamp = stamp;
  st->pages_written++;
}

static void write_batch(struct wl_ctx *ctx, uint64_t vcpu, struct wl_state *st) {
  for (uint64_t i = 0; i < st->batch; i++)
    write_page(ctx, vcpu, st, st->slice_first + pick_page(st));
}

/* Waits for the tokens of one batch. Called before writing it. The deadline
 * is never more than one batch ahead of now in normal running; further ahead
 * means the clock went backwards (a destination restored a lower guest TSC),
 * and waiting it out would stall the guest, so restart the bucket instead. */
static void pace(struct wl_ctx *ctx, struct wl_state *st) {
  if (!st->throttled) return;
  uint64_t now = wl_now(ctx);
  uint64_t batch_ticks = st->batch * st->ticks_per_page;
  if (now < st->next_tsc && st->next_tsc - now > batch_ticks) st->next_tsc = now;
  if (now < st->next_tsc)
    wl_wait_until(ctx, st->next_tsc);
  else if (now - st->next_tsc > st->burst_ticks)
    st->next_tsc = now - st->burst_ticks;
  st->next_tsc += batch_ticks;
}

static void idle_wait(struct wl_ctx *ctx, const struct wl_state *st) {
  uint64_t ticks = st->tsc_hz ? st->tsc_hz / 1000 : WL_IDLE_TICKS_NO_TSC;
  wl_wait_until(ctx, wl_now(ctx) + ticks);
}

static int writes_pages(const struct wl_state *st) {
  return st->kind != FERRY_WL_IDLE && st->slice_pages != 0 &&
         !(st->throttled && st->share == 0);
}

/* ---- verification ------------------------------------------------------ */

struct wl_page_view {
  uint64_t expected, head, tail;
};

static int page_ok(struct wl_ctx *ctx, uint64_t ws_gpa, uint64_t table_gpa,
                   uint64_t page, struct wl_page_view *v) {
  uint64_t gpa = ws_gpa + (page << FERRY_GUEST_PAGE_SHIFT);
  v->expected = wl_load64(ctx, table_gpa + 8 * page);
  v->head = wl_load64(ctx, gpa + FERRY_STAMP_HEAD_OFFSET);
  v->tail = wl_load64(ctx, gpa + FERRY_STAMP_TAIL_OFFSET);
  return v->head == v->expected && v->tail == v->expected;
}

/* Keeps the first mismatch for diagnosis; later ones only count. */
static void record_bad(struct wl_ctx *ctx, uint64_t vcpu, uint64_t page,
                       const struct wl_page_view *v) {
  if (wl_load64(ctx, STATUS(vcpu, first_bad_page)) != FERRY_GUEST_NO_PAGE)
    return;
  wl_store64(ctx, STATUS(vcpu, first_bad_expected), v->expected);
  wl_store64(ctx, STATUS(vcpu, first_bad_actual_head), v->head);
  wl_store64(ctx, STATUS(vcpu, first_bad_actual_tail), v->tail);
  wl_store64(ctx, STATUS(vcpu, first_bad_page), page);
}

static void verify_pages(struct wl_ctx *ctx, uint64_t vcpu, struct wl_state *st,
                         uint64_t n) {
  for (uint64_t i = 0; i < n; i++) {
    uint64_t page = st->slice_first + st->verify_cursor;
    struct wl_page_view v;
    st->pages_verified++;
    if (!page_ok(ctx, st->ws_gpa, st->table_gpa, page, &v)) {
      st->selfcheck_errors++;
      record_bad(ctx, vcpu, page, &v);
    }
    if (++st->verify_cursor == st->slice_pages) {
      st->verify_cursor = 0;
      st->verify_passes++;
    }
  }
}

/* A chunk every verify_interval batches keeps the cost spread out, so the
 * dirty rate stays smooth instead of stalling for a whole-slice sweep. */
static void maybe_verify(struct wl_ctx *ctx, uint64_t vcpu, struct wl_state *st) {
  if (st->verify_interval == 0 || st->slice_pages == 0) return;
  if (--st->verify_countdown != 0) return;
  st->verify_countdown = st->verify_interval;
  uint64_t n = st->slice_pages;
  if (st->verify_chunk != 0 && st->verify_chunk < n) n = st->verify_chunk;
  verify_pages(ctx, vcpu, st, n);
}

/* ---- public entry points ----------------------------------------------- */

static void reset_status(struct wl_ctx *ctx, uint64_t vcpu) {
  for (uint64_t off = 0; off < FERRY_GUEST_PAGE_SIZE; off += 8)
    wl_store64(ctx, FERRY_GUEST_STATUS_GPA_OF(vcpu) + off, 0);
  wl_store64(ctx, STATUS(vcpu, version), FERRY_GUEST_ABI_VERSION);
  wl_store64(ctx, STATUS(vcpu, vcpu_index), vcpu);
  wl_store64(ctx, STATUS(vcpu, cur_page), FERRY_GUEST_NO_PAGE);
  wl_store64(ctx, STATUS(vcpu, first_bad_page), FERRY_GUEST_NO_PAGE);
}

static uint64_t fail(struct wl_ctx *ctx, uint64_t vcpu, uint64_t code) {
  wl_store64(ctx, STATUS(vcpu, fatal_code), code);
  wl_store64(ctx, STATUS(vcpu, state), FERRY_VCPU_STATE_FATAL);
  wl_store64(ctx, STATUS(vcpu, magic), FERRY_GUEST_STATUS_MAGIC);
  wl_event(ctx, vcpu, FERRY_GUEST_EVENT_FATAL, code);
  return code;
}

uint64_t wl_vcpu_init(struct wl_ctx *ctx, uint64_t vcpu) {
  if (vcpu >= FERRY_GUEST_MAX_VCPUS) return FERRY_GUEST_FATAL_BAD_VCPU;
  reset_status(ctx, vcpu);
  uint64_t fatal = validate_params(ctx, vcpu);
  if (fatal != FERRY_GUEST_FATAL_NONE) return fail(ctx, vcpu, fatal);

  struct wl_state st = {0};
  derive_layout(ctx, vcpu, &st);
  derive_pacing(ctx, &st);
  st.rng = rng_seed(load_param(ctx, PARAM(seed)), vcpu);
  save_state(ctx, vcpu, &st);
  wl_store64(ctx, STATUS(vcpu, kind), st.kind);
  wl_store64(ctx, STATUS(vcpu, slice_first_page), st.slice_first);
  wl_store64(ctx, STATUS(vcpu, slice_pages), st.slice_pages);
  wl_store64(ctx, STATUS(vcpu, start_tsc), st.next_tsc);
  wl_store64(ctx, STATUS(vcpu, state), FERRY_VCPU_STATE_RUNNING);
  /* Magic last: a host that sees it sees a complete status page. */
  wl_store64(ctx, STATUS(vcpu, magic), FERRY_GUEST_STATUS_MAGIC);
  wl_event(ctx, vcpu, FERRY_GUEST_EVENT_STARTED, vcpu);
  return FERRY_GUEST_FATAL_NONE;
}

static int running(struct wl_ctx *ctx, uint64_t vcpu) {
  return vcpu < FERRY_GUEST_MAX_VCPUS &&
         wl_load64(ctx, STATUS(vcpu, state)) == FERRY_VCPU_STATE_RUNNING;
}

void wl_vcpu_step(struct wl_ctx *ctx, uint64_t vcpu) {
  if (!running(ctx, vcpu)) return;
  struct wl_state st;
  load_state(ctx, vcpu, &st);
  if (load_param(ctx, PARAM(config_seq)) != st.config_seq)
    derive_pacing(ctx, &st);
  if (writes_pages(&st)) {
    pace(ctx, &st);
    write_batch(ctx, vcpu, &st);
  } else {
    idle_wait(ctx, &st);
  }
  maybe_verify(ctx, vcpu, &st);
  st.iterations++;
  save_state(ctx, vcpu, &st);
}

uint64_t wl_vcpu_verify_slice(struct wl_ctx *ctx, uint64_t vcpu) {
  if (!running(ctx, vcpu)) return 0;
  struct wl_state st;
  load_state(ctx, vcpu, &st);
  uint64_t before = st.selfcheck_errors;
  verify_pages(ctx, vcpu, &st, st.slice_pages);
  save_state(ctx, vcpu, &st);
  return st.selfcheck_errors - before;
}

static int exempt(const uint64_t *cur, uint64_t n, uint64_t page) {
  for (uint64_t j = 0; j < n; j++)
    if (cur[j] == page) return 1;
  return 0;
}

uint64_t wl_check_all(struct wl_ctx *ctx, struct wl_check_result *out) {
  out->pages_checked = out->mismatches = 0;
  out->first_bad_page = FERRY_GUEST_NO_PAGE;
  out->expected = out->actual_head = out->actual_tail = 0;
  if (load_param(ctx, PARAM(magic)) != FERRY_GUEST_PARAMS_MAGIC)
    return FERRY_GUEST_FATAL_BAD_MAGIC;
  if (!layout_ok(ctx)) return FERRY_GUEST_FATAL_BAD_LAYOUT;
  uint64_t n = load_param(ctx, PARAM(nr_vcpus));
  if (n > FERRY_GUEST_MAX_VCPUS) n = FERRY_GUEST_MAX_VCPUS;
  uint64_t cur[FERRY_GUEST_MAX_VCPUS];
  for (uint64_t j = 0; j < n; j++) {
    int live = wl_load64(ctx, STATUS(j, magic)) == FERRY_GUEST_STATUS_MAGIC;
    cur[j] = live ? wl_load64(ctx, STATUS(j, cur_page)) : FERRY_GUEST_NO_PAGE;
  }
  uint64_t ws = load_param(ctx, PARAM(ws_gpa));
  uint64_t table = load_param(ctx, PARAM(stamp_table_gpa));
  uint64_t pages = load_param(ctx, PARAM(ws_pages));
  for (uint64_t p = 0; p < pages; p++) {
    struct wl_page_view v;
    if (exempt(cur, n, p)) continue;
    out->pages_checked++;
    if (page_ok(ctx, ws, table, p, &v)) continue;
    if (out->mismatches++ == 0) {
      out->first_bad_page = p;
      out->expected = v.expected;
      out->actual_head = v.head;
      out->actual_tail = v.tail;
    }
  }
  return FERRY_GUEST_FATAL_NONE;
}
