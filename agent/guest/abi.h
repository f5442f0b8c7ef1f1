/*
 * ferry guest ABI: the contract between the VMM (agent/vmm, or the software
 * backend) and the guest workload payload. Plain C so the freestanding payload,
 * the assembler entry stub and C++ host code all include the same file.
 *
 * Guest-physical memory map (guest-virtual == guest-physical, identity mapped):
 *
 *   gpa start   gpa end     contents                              guest access
 *   ----------  ----------  ------------------------------------  ------------
 *   0x0000000   0x0001000   null guard, NOT mapped                 none
 *   0x0001000   0x0002000   GDT (+ TSS), VMM-owned                 none (S)
 *   0x0002000   0x0003000   IDT, VMM-owned, may stay empty         none (S)
 *   0x0003000   0x0004000   params page (struct ferry_guest_params) read
 *   0x0004000   0x0010000   reserved
 *   0x0010000   0x0100000   page tables (PML4 first), VMM-owned    none (S)
 *   0x0100000   0x0110000   payload image, entry = first byte      RX (+W ok)
 *   0x0110000   0x0200000   reserved for payload growth
 *   0x0200000   0x0240000   status pages, vCPU i at +i*4 KiB        RW
 *   0x0240000   0x0400000   reserved
 *   0x0400000   0x0500000   stacks, 16 KiB per vCPU, vCPU i's top   RW
 *                           at 0x400000 + (i+1)*16 KiB
 *   0x0500000   0x0800000   reserved
 *   0x0800000   0x1000000   default expected-stamp table            RW
 *                           (u64 per working-set page, <= 1 Mi pages)
 *   0x1000000   ...         default working set, ws_pages * 4 KiB   RW
 *
 * "(S)" = supervisor-only is fine: the payload runs entirely at CPL3 and
 * never touches those pages. Everything marked RW/RX/read needs U=1 in every
 * level of the page tables.
 *
 * Every field is a u64 so the workload core needs only 64-bit load/store
 * hooks (the software MMU then implements two accessors, not six).
 */
#ifndef FERRY_AGENT_GUEST_ABI_H_
#define FERRY_AGENT_GUEST_ABI_H_

#define FERRY_GUEST_PAGE_SIZE 0x1000
#define FERRY_GUEST_PAGE_SHIFT 12

#define FERRY_GUEST_GDT_GPA 0x1000
#define FERRY_GUEST_IDT_GPA 0x2000
#define FERRY_GUEST_PARAMS_GPA 0x3000
#define FERRY_GUEST_PAGE_TABLES_GPA 0x10000
#define FERRY_GUEST_PAGE_TABLES_END 0x100000
#define FERRY_GUEST_LOAD_GPA 0x100000
#define FERRY_GUEST_ENTRY_GPA FERRY_GUEST_LOAD_GPA
#define FERRY_GUEST_PAYLOAD_MAX 0x10000
#define FERRY_GUEST_STATUS_GPA 0x200000
#define FERRY_GUEST_STACKS_GPA 0x400000
#define FERRY_GUEST_STACK_SIZE 0x4000
#define FERRY_GUEST_STACK_SHIFT 14
#define FERRY_GUEST_STAMP_TABLE_GPA 0x800000
#define FERRY_GUEST_STAMP_TABLE_MAX_PAGES (0x800000 / 8)
#define FERRY_GUEST_WS_GPA 0x1000000
/* Lowest gpa the table and working set may use; below is the fixed layout. */
#define FERRY_GUEST_DATA_MIN_GPA FERRY_GUEST_STAMP_TABLE_GPA

#define FERRY_GUEST_MAX_VCPUS 64

/*
 * Guest -> host rare events: one 32-bit `out` to this port (so the VMM must
 * give the payload IOPL=3, see below). Value = code | (arg << 8).
 * Progress never uses this path: it is ~18 us per exit on kvm_pvm.
 */
#define FERRY_GUEST_EVENT_PORT 0x0ff0
#define FERRY_GUEST_EVENT_STARTED 1 /* arg = vCPU index */
#define FERRY_GUEST_EVENT_FATAL 2   /* arg = FERRY_GUEST_FATAL_* code */

/* Segment selectors the payload expects (GDT index 3 = 64-bit code DPL3,
 * index 4 = data DPL3), matching what was measured in KVM-FACTS.md. */
#define FERRY_GUEST_USER_CS 0x1b
#define FERRY_GUEST_USER_DS 0x23
/* RFLAGS at entry: reserved bit 1 + IOPL=3 so `out` works at CPL3. */
#define FERRY_GUEST_ENTRY_RFLAGS 0x3002

#define FERRY_GUEST_PARAMS_MAGIC 0x3150595252454646ull /* "FFERRYP1" LE */
#define FERRY_GUEST_STATUS_MAGIC 0x3153595252454646ull /* "FFERRYS1" LE */
#define FERRY_GUEST_ABI_VERSION 1

/* Workload kinds. 0 is reserved so an unwritten params page is rejected. */
#define FERRY_WL_UNSPECIFIED 0
#define FERRY_WL_IDLE 1
#define FERRY_WL_UNIFORM 2
#define FERRY_WL_HOTCOLD 3
#define FERRY_WL_SEQUENTIAL 4
#define FERRY_WL_MIXED 5 /* per-vCPU kind from vcpu_kind[] */
#define FERRY_WL_KIND_COUNT 6

/* vCPU states in the status page. */
#define FERRY_VCPU_STATE_NONE 0
#define FERRY_VCPU_STATE_RUNNING 1
#define FERRY_VCPU_STATE_FATAL 2

/* Fatal codes (status.fatal_code and the FATAL event's arg). */
#define FERRY_GUEST_FATAL_NONE 0
#define FERRY_GUEST_FATAL_BAD_MAGIC 1
#define FERRY_GUEST_FATAL_BAD_VERSION 2
#define FERRY_GUEST_FATAL_BAD_VCPU 3
#define FERRY_GUEST_FATAL_BAD_KIND 4
#define FERRY_GUEST_FATAL_BAD_LAYOUT 5 /* ws / table outside memory, overlap */
#define FERRY_GUEST_FATAL_NO_TSC_HZ 6  /* rate set but tsc_hz == 0 */
#define FERRY_GUEST_FATAL_BAD_PERMILLE 7

/* "No page" marker for status.first_bad_page / status.cur_page. */
#define FERRY_GUEST_NO_PAGE 0xffffffffffffffffull

/*
 * Stamp: what the guest writes into the first and last 8 bytes of a page and
 * into the page's expected-stamp table entry.
 *   bit 63     always 1, so a stamp is never 0 (0 = never written)
 *   bits 40-62 write sequence number of the writing vCPU (mod 2^23)
 *   bits 32-39 writing vCPU index
 *   bits 0-31  page index in the working set (catches a page copied to the
 *              wrong gfn, not only a stale one)
 * A stale copy passes only if it is exactly k*2^23 writes of that vCPU old.
 */
#define FERRY_STAMP_MARK (1ull << 63)
#define FERRY_STAMP_SEQ_SHIFT 40
#define FERRY_STAMP_SEQ_MASK 0x7fffffull
#define FERRY_STAMP_VCPU_SHIFT 32
#define FERRY_STAMP_VCPU_MASK 0xffull
#define FERRY_STAMP_PAGE_MASK 0xffffffffull
/* Byte offsets of the two stamp copies inside a page. */
#define FERRY_STAMP_HEAD_OFFSET 0
#define FERRY_STAMP_TAIL_OFFSET (FERRY_GUEST_PAGE_SIZE - 8)
/* params.fill_words that fills the whole page between the two stamps. */
#define FERRY_FILL_WORDS_MAX (FERRY_GUEST_PAGE_SIZE / 8 - 2)

#ifndef __ASSEMBLER__

#include <stddef.h>
#include <stdint.h>

/*
 * Params page, written by the VMM before the first KVM_RUN. The guest only
 * reads it. After start, the VMM may change target_dirty_pages_per_sec and then
 * bump config_seq (release order); each vCPU re-derives its pacing at its next
 * batch. Every other field is fixed for the life of the guest: changing the
 * partition while vCPUs run would let two vCPUs write one page.
 */
struct ferry_guest_params {
  uint64_t magic;                      /* FERRY_GUEST_PARAMS_MAGIC */
  uint64_t version;                    /* FERRY_GUEST_ABI_VERSION */
  uint64_t mem_size;                   /* guest RAM bytes from gpa 0 */
  uint64_t nr_vcpus;                   /* 1..FERRY_GUEST_MAX_VCPUS */
  uint64_t kind;                       /* FERRY_WL_* */
  uint64_t ws_gpa;                     /* page aligned, >= DATA_MIN_GPA */
  uint64_t ws_pages;                   /* working-set size in 4 KiB pages */
  uint64_t stamp_table_gpa;            /* page aligned, ws_pages * 8 bytes */
  uint64_t target_dirty_pages_per_sec; /* whole VM; 0 = unthrottled */
  uint64_t tsc_hz;                     /* guest TSC frequency, VMM-calibrated */
  uint64_t seed;                       /* RNG seed; print it in tests */
  uint64_t hot_fraction_permille;      /* HOTCOLD: hot share of the slice */
  uint64_t hot_probability_permille;   /* HOTCOLD: share of writes that hit it */
  uint64_t verify_interval_batches;    /* verify a chunk every N batches; 0=off */
  uint64_t verify_chunk_pages;         /* pages per verify step; 0 = whole slice */
  uint64_t config_seq;                 /* bump after changing the dirty rate */
  uint64_t fill_words; /* pseudo-random u64s after the head stamp; 0..510 */
  uint64_t reserved[15];
  uint64_t vcpu_kind[FERRY_GUEST_MAX_VCPUS]; /* MIXED; 0 = default rotation */
};

/*
 * Per-vCPU status page. Written only by its vCPU; the host reads it at any
 * time (fields are individually consistent, not as a group). The second half
 * of the page is the core's private state (see workload.c): keeping it in
 * guest memory means it migrates with the guest and a software-backend vCPU
 * can be resumed from memory alone.
 */
struct ferry_guest_status {
  uint64_t magic;            /* FERRY_GUEST_STATUS_MAGIC once initialised */
  uint64_t version;          /* FERRY_GUEST_ABI_VERSION */
  uint64_t vcpu_index;
  uint64_t state;            /* FERRY_VCPU_STATE_* */
  uint64_t fatal_code;       /* FERRY_GUEST_FATAL_* */
  uint64_t kind;             /* effective kind of this vCPU */
  uint64_t slice_first_page; /* first owned page (working-set index) */
  uint64_t slice_pages;      /* number of owned pages; 0 for idle vCPUs */
  uint64_t iterations;       /* batches (steps) completed */
  uint64_t pages_written;    /* page writes completed */
  uint64_t last_stamp;       /* stamp of the last completed write */
  uint64_t cur_page;         /* page being written right now, or NO_PAGE;
                                host checkers exempt it (mid-write snapshot) */
  uint64_t selfcheck_errors; /* mismatches found by verification */
  uint64_t verify_passes;    /* completed sweeps over the whole slice */
  uint64_t pages_verified;
  uint64_t first_bad_page;   /* NO_PAGE until the first mismatch */
  uint64_t first_bad_expected;
  uint64_t first_bad_actual_head;
  uint64_t first_bad_actual_tail;
  uint64_t heartbeat_tsc;    /* guest clock at the last batch */
  uint64_t start_tsc;        /* guest clock at init */
  uint64_t reserved[235];
  uint64_t private_state[256]; /* workload core's own; not an interface */
};

#define FERRY_GUEST_STATUS_PRIVATE_OFFSET 0x800

#define FERRY_GUEST_STATUS_GPA_OF(vcpu) \
  ((uint64_t)FERRY_GUEST_STATUS_GPA + (uint64_t)(vcpu) * FERRY_GUEST_PAGE_SIZE)
#define FERRY_GUEST_STACK_TOP_OF(vcpu) \
  ((uint64_t)FERRY_GUEST_STACKS_GPA + ((uint64_t)(vcpu) + 1) * FERRY_GUEST_STACK_SIZE)

static inline uint64_t ferry_stamp_make(uint64_t seq, uint64_t vcpu,
                                        uint64_t page) {
  return FERRY_STAMP_MARK | ((seq & FERRY_STAMP_SEQ_MASK) << FERRY_STAMP_SEQ_SHIFT) |
         ((vcpu & FERRY_STAMP_VCPU_MASK) << FERRY_STAMP_VCPU_SHIFT) |
         (page & FERRY_STAMP_PAGE_MASK);
}
static inline uint64_t ferry_stamp_seq(uint64_t stamp) {
  return (stamp >> FERRY_STAMP_SEQ_SHIFT) & FERRY_STAMP_SEQ_MASK;
}
static inline uint64_t ferry_stamp_vcpu(uint64_t stamp) {
  return (stamp >> FERRY_STAMP_VCPU_SHIFT) & FERRY_STAMP_VCPU_MASK;
}
static inline uint64_t ferry_stamp_page(uint64_t stamp) {
  return stamp & FERRY_STAMP_PAGE_MASK;
}

/* Where the expected-stamp table goes: the fixed slot below the working set
 * while it fits (<= 4 GiB of working set), else right after the working set. */
static inline uint64_t ferry_guest_stamp_table_gpa_for(uint64_t ws_pages) {
  if (ws_pages <= FERRY_GUEST_STAMP_TABLE_MAX_PAGES) return FERRY_GUEST_STAMP_TABLE_GPA;
  return (uint64_t)FERRY_GUEST_WS_GPA + (ws_pages << FERRY_GUEST_PAGE_SHIFT);
}

/* Smallest guest RAM (bytes from gpa 0) for a working set of ws_pages at the
 * default location, including an out-of-line stamp table. */
static inline uint64_t ferry_guest_min_mem_size(uint64_t ws_pages) {
  uint64_t end = (uint64_t)FERRY_GUEST_WS_GPA + (ws_pages << FERRY_GUEST_PAGE_SHIFT);
  if (ws_pages > FERRY_GUEST_STAMP_TABLE_MAX_PAGES)
    end += (ws_pages * 8 + FERRY_GUEST_PAGE_SIZE - 1) & ~(uint64_t)(FERRY_GUEST_PAGE_SIZE - 1);
  return end;
}

/* Fills a params page with the default layout. The caller then sets the
 * rate, tsc_hz, seed and verification; kind is required on purpose. */
static inline void ferry_guest_params_init(struct ferry_guest_params *p,
                                           uint64_t mem_size, uint64_t nr_vcpus,
                                           uint64_t kind, uint64_t ws_pages) {
  uint64_t *w = (uint64_t *)p;
  for (size_t i = 0; i < sizeof(*p) / sizeof(uint64_t); i++) w[i] = 0;
  p->magic = FERRY_GUEST_PARAMS_MAGIC;
  p->version = FERRY_GUEST_ABI_VERSION;
  p->mem_size = mem_size;
  p->nr_vcpus = nr_vcpus;
  p->kind = kind;
  p->ws_gpa = FERRY_GUEST_WS_GPA;
  p->ws_pages = ws_pages;
  p->stamp_table_gpa = ferry_guest_stamp_table_gpa_for(ws_pages);
  p->hot_fraction_permille = 100;    /* 10% of the slice ... */
  p->hot_probability_permille = 900; /* ... takes 90% of the writes */
}

/* Layout checks: the VMM, the payload and the software backend must agree. */
#ifdef __cplusplus
#define FERRY_ABI_ASSERT(c, m) static_assert(c, m)
#else
#define FERRY_ABI_ASSERT(c, m) _Static_assert(c, m)
#endif
FERRY_ABI_ASSERT(sizeof(struct ferry_guest_params) <= FERRY_GUEST_PAGE_SIZE,
                 "params fit in one page");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_params, magic) == 0, "params abi");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_params, kind) == 0x20, "params abi");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_params, tsc_hz) == 0x48,
                 "params abi");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_params, config_seq) == 0x78,
                 "params abi");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_params, vcpu_kind) == 0x100,
                 "params abi");
FERRY_ABI_ASSERT(sizeof(struct ferry_guest_status) == FERRY_GUEST_PAGE_SIZE,
                 "status is exactly one page");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_status, iterations) == 0x40,
                 "status abi");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_status, selfcheck_errors) == 0x60,
                 "status abi");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_status, start_tsc) == 0xa0,
                 "status abi");
FERRY_ABI_ASSERT(offsetof(struct ferry_guest_status, private_state) ==
                     FERRY_GUEST_STATUS_PRIVATE_OFFSET,
                 "private state offset");
FERRY_ABI_ASSERT(FERRY_GUEST_MAX_VCPUS * FERRY_GUEST_PAGE_SIZE <=
                     0x240000 - FERRY_GUEST_STATUS_GPA,
                 "status pages fit their region");
FERRY_ABI_ASSERT(FERRY_GUEST_MAX_VCPUS * FERRY_GUEST_STACK_SIZE <= 0x100000,
                 "stacks fit their region");
FERRY_ABI_ASSERT((1 << FERRY_GUEST_STACK_SHIFT) == FERRY_GUEST_STACK_SIZE,
                 "stack shift");
FERRY_ABI_ASSERT(FERRY_GUEST_MAX_VCPUS - 1 <= FERRY_STAMP_VCPU_MASK,
                 "vCPU index fits the stamp");
FERRY_ABI_ASSERT(FERRY_GUEST_LOAD_GPA + FERRY_GUEST_PAYLOAD_MAX <= 0x200000,
                 "payload below status pages");

#endif /* !__ASSEMBLER__ */
#endif /* FERRY_AGENT_GUEST_ABI_H_ */
