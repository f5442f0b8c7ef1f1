// ShadowMmu: a userspace model of KVM's x86 MMU for one VM. Guest memory is
// a fixed set of memslots (host memory at hva pointers). Soft vCPUs
// (soft_vcpu.h) translate guest accesses through shadow page tables that
// this class builds on demand:
//   - shadow mode (guest paging on, long mode or 32-bit): the shadow tables
//     mirror the guest's tables, which are write-protected so that the
//     mirror cannot go stale (KVM's shadow paging);
//   - direct mode (paging off, or TDP/EPT): one direct tree gpa -> hva.
//
// Data structures (all guarded by mu_, KVM's mmu_lock):
//   page_hash_   gfn -> shadow pages with that gfn; (gfn, role) is unique.
//   active_      every shadow page (KVM's active_mmu_pages), for scans.
//   spt_owner_   spt address -> its shadow page (KVM's page->private).
//   rmap         per memslot, per 4 KiB page: the leaf sptes mapping it.
//   dirty        per memslot dirty bitmap (atomic words; see below).
//
// Invariants (CheckInvariants verifies every one):
//   I1 Every present leaf spte is in the rmap of the gfn it maps, maps the
//      hva of that gfn, and its page's slot_bitmap has the slot; every rmap
//      entry is such a spte. Leaf sptes are exactly the level-1 entries.
//   I2 Every present non-leaf spte points at the spt of a shadow page one
//      level down whose parent_ptes contains it, and vice versa.
//   I3 Every shadow page is in page_hash_ under its gfn, once per role, in
//      active_ at its active_index, in spt_owner_; non-roots have parents.
//   I4 Write protection: no writable spte maps a gfn that some indirect
//      shadow page shadows, nor a page of a dirty-logged slot whose dirty
//      bit is clear. W implies mmu-writable implies present.
//   I5 Indirect sptes mirror the guest: a present spte of an indirect page
//      agrees with the current gpte (present, accessed, same frame, no more
//      access), which holds because of I4 plus the gpte-write handling.
//
// Guest writes to shadowed gfns trap (I4), are emulated, and the affected
// sptes of every shadow page of that gfn are updated from the new gpte
// (KVM's kvm_mmu_pte_write + update_pte, "prefetch") or, with
// MmuOptions::zap_on_gpte_write, zapped. Non-leaf entries are always zapped.
//
// TLB generation and the lock-free fast path. Each vCPU caches gva page ->
// (hva, writable) with the generation gen_ read at fill time. Any change
// that removes or narrows a present spte sets need_flush_, and the
// operation bumps gen_ (seq_cst RMW + full fence) before it drops mu_ and
// returns ("remote TLB flush"). The fast path: load gen_ (acquire), check
// the entry's gen, store to guest memory, full fence, load gen_ again; if it
// moved, call AfterRacyWrite. Why no dirty-logged write is missed:
//   - A writable TLB entry for page P with gen g exists only if, when it
//     was filled under mu_ at gen g, P's spte was writable; by I4 P's dirty
//     bit was then set, after the last Collect that took P (Collect and the
//     fill are both under mu_, and Collect bumps gen past g).
//   - Collect C takes the dirty bits, write-protects, then bumps gen_ with a
//     seq_cst RMW and fence. A writer that stored X with entry gen g:
//     (a) its second load saw g: by the store-buffering (Dekker) argument
//         over the two full fences, X is visible to everything C does after
//         its bump — the copy the caller makes after Collect returns. And P
//         was dirty (above), so C or an earlier Collect not yet superseded
//         reports P. Nothing is lost.
//     (b) it saw a newer gen: it calls AfterRacyWrite, which marks P dirty
//         (a later Collect reports it) and, if P is now shadowed, re-syncs
//         the sptes of the gptes it wrote, like an emulated write.
//   - The same argument covers shadowing: the fault path write-protects a
//     new page table, flushes, then re-reads the gptes it walked
//     (GptesChanged); a write that slipped in before the flush is seen
//     there, one after it comes through AfterRacyWrite.
// Installing sptes or adding permissions never bumps gen_: stale entries
// are then merely narrower than the spte and refill through the slow path.
#ifndef FERRY_MMU_SOFTMMU_SHADOW_MMU_H_
#define FERRY_MMU_SOFTMMU_SHADOW_MMU_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/memslot.h"
#include "mmu/softmmu/guest_walker.h"
#include "mmu/softmmu/pte_list.h"
#include "mmu/softmmu/role.h"
#include "mmu/softmmu/shadow_page.h"

namespace ferry::mmu::softmmu {

class SoftVcpu;

struct MmuOptions {
  // Zap (instead of update) the sptes of a written gpte: KVM's later
  // behaviour, kept to measure the refaults the update saves.
  bool zap_on_gpte_write = false;
  // Dirty-log enable visits only shadow pages whose slot_bitmap has the
  // slot; false scans every shadow page (for comparison).
  bool slot_bitmap_filter = true;
};

struct MmuStats {
  uint64_t faults = 0;          // full faults (guest walk / direct build)
  uint64_t fast_fixes = 0;      // dirty-log write faults fixed in place
  uint64_t tlb_refills = 0;     // slow path found a usable spte
  uint64_t emulated_writes = 0; // writes to shadowed gfns
  uint64_t gpte_updates = 0;    // sptes re-derived from a written gpte
  uint64_t gpte_zaps = 0;       // sptes zapped for a written gpte
  uint64_t pages_created = 0;
  uint64_t pages_freed = 0;
  uint64_t flushes = 0;         // generation bumps
  uint64_t racy_writes = 0;     // fast-path writes that saw gen move
  uint64_t fault_retries = 0;   // gptes changed under a fault
};

struct MmuMemory {
  uint64_t direct_pages = 0;
  uint64_t indirect_pages = 0;
  uint64_t shadow_page_bytes = 0;  // objects + spts + gfns arrays
  uint64_t rmap_head_bytes = 0;    // one word per slot page
  uint64_t pte_list_desc_bytes = 0;
  uint64_t leaf_sptes = 0;         // present leaf sptes
};

enum class AccessStatus : uint8_t { kOk, kPageFault, kUnmappedGpa };

struct AccessResult {
  AccessStatus status = AccessStatus::kOk;
  uint32_t error_code = 0;  // kPageFault: x86 PFEC
  uint64_t addr = 0;        // faulting gva, or the unmapped gpa
  bool ok() const { return status == AccessStatus::kOk; }
  friend bool operator==(const AccessResult& a, const AccessResult& b) {
    return a.status == b.status && a.error_code == b.error_code &&
           a.addr == b.addr;
  }
};

class ShadowMmu {
 public:
  // Slots must be page aligned, non-overlapping, at most kMaxSlots, with
  // distinct ids and non-null page-aligned hvas.
  static absl::StatusOr<std::unique_ptr<ShadowMmu>> Create(
      std::vector<Memslot> slots, MmuOptions options = {});
  ~ShadowMmu();
  ShadowMmu(const ShadowMmu&) = delete;
  ShadowMmu& operator=(const ShadowMmu&) = delete;

  absl::Span<const Memslot> memslots() const { return memslots_; }
  const MmuOptions& options() const { return options_; }

  // Host-side (device model / emulator) guest-physical accesses. Writes go
  // through the same trap as a vCPU write: they mark dirty pages and update
  // sptes of written gptes. NOT_FOUND if any byte is outside every slot.
  absl::Status WriteGpa(uint64_t gpa, const void* src, size_t len);
  absl::Status ReadGpa(uint64_t gpa, void* dst, size_t len) const;

  // Dirty logging (write-protection based).
  absl::Status EnableDirtyLogging(uint32_t slot);
  absl::Status DisableDirtyLogging(uint32_t slot);
  // KVM_GET_DIRTY_LOG: *out (resized to the slot) gets the dirty pages.
  // With `clear_and_protect` the bits are taken and the pages
  // write-protected again; without (manual-protect mode) they stay until
  // ClearDirtyLog. Returns the number of pages reported.
  absl::StatusOr<uint64_t> GetDirtyLog(uint32_t slot, DirtyBitmap* out,
                                       bool clear_and_protect = true);
  // KVM_CLEAR_DIRTY_LOG: clears and re-protects the dirty pages among
  // [first_page, first_page + npages). Returns pages re-protected.
  absl::StatusOr<uint64_t> ClearDirtyLog(uint32_t slot, uint64_t first_page,
                                         uint64_t npages);
  bool dirty_logging(uint32_t slot) const;

  // Zaps every spte (roots stay, empty). Like kvm_mmu_zap_all.
  void ZapAll();
  // Zaps the leaf sptes mapping [start, end) through the rmap (all trees).
  uint64_t ZapGfnRange(uint64_t start_gfn, uint64_t end_gfn);

  // Range operations on the direct (TDP) tree with TdpIter (tdp_mmu.cc).
  // Zap: leaves in range, and whole subtrees entirely inside it.
  uint64_t TdpZapGfnRange(uint64_t start_gfn, uint64_t end_gfn);
  // Clears W on writable leaves in range; returns how many.
  uint64_t TdpWriteProtectGfnRange(uint64_t start_gfn, uint64_t end_gfn);
  // Harvests dirtiness from W: appends each writable leaf's gfn to *gfns
  // and write-protects it (KVM's clear_dirty_gfn_range without A/D bits).
  uint64_t TdpHarvestDirtyGfnRange(uint64_t start_gfn, uint64_t end_gfn,
                                   std::vector<uint64_t>* gfns);

  // OK or INTERNAL naming the first broken invariant (I1..I5).
  absl::Status CheckInvariants() const;

  MmuStats stats() const;
  MmuMemory memory() const;
  uint64_t generation() const { return gen_.load(std::memory_order_acquire); }
  size_t num_shadow_pages() const;
  // Roles of the shadow pages with this gfn (tests, debugging).
  std::vector<PageRole> RolesOf(uint64_t gfn) const;

 private:
  friend class SoftVcpu;
  friend class MmuLock;
  class Phys;
  struct SlotState;
  struct LeafRef {
    ShadowPage* sp = nullptr;
    int index = 0;
    uint64_t* sptep() const { return &sp->spt[index]; }
  };
  struct FaultOutcome {
    AccessResult result;
    LeafRef leaf;
    uint64_t gfn = 0;
    bool retry = false;
  };

  ShadowMmu(std::vector<Memslot> slots, MmuOptions options);

  // --- vCPU interface (soft_vcpu.cc) ---
  ShadowPage* AcquireRoot(PagingMode mode, uint64_t cr3);
  void ReleaseRoot(ShadowPage* root);
  AccessResult SlowAccess(SoftVcpu* v, uint64_t gva, uint8_t* buf,
                          size_t len, bool write, bool user);
  // A fast-path store saw gen_ move after the store (see above).
  void AfterRacyWrite(uint32_t slot_index, uint64_t gfn, uint32_t offset,
                      uint32_t len);

  // --- everything below needs mu_ ---
  int FindSlotIndex(uint64_t gfn) const;
  uint8_t* GfnToHva(uint64_t gfn) const;
  void MarkDirty(uint64_t gfn) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FlushIfNeeded() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Shadow page lifecycle (shadow_mmu.cc).
  ShadowPage* FindPage(uint64_t gfn, PageRole role) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ShadowPage* GetPage(uint64_t gfn, PageRole role, bool* created)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FreePage(ShadowPage* sp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool IsShadowed(uint64_t gfn) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  ShadowPage* OwnerOf(const uint64_t* sptep) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void LinkChild(uint64_t* sptep, ShadowPage* child)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropSpte(ShadowPage* sp, int index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropAllSptes(ShadowPage* sp) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetLeafSpte(ShadowPage* sp, int index, uint64_t gfn, int slot_index,
                   uint64_t spte) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Clears W (and, for shadowing, mmu-writable) on every spte mapping gfn.
  bool WriteProtectGfn(uint64_t gfn, bool keep_mmu_writable)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Faults and guest writes (shadow_fault.cc).
  LeafRef LookupLeaf(ShadowPage* root, uint64_t addr) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  FaultOutcome DirectFault(SoftVcpu* v, uint64_t gpa, bool write)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  FaultOutcome ShadowFault(SoftVcpu* v, uint64_t gva, bool write, bool user)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  PageRole ChildRole(const ShadowPage* parent, const GuestWalk& w,
                     uint64_t gva, uint64_t* child_gfn) const;
  // Installs the leaf for `gfn`; false if no memslot has it.
  bool InstallLeaf(ShadowPage* sp, int index, uint64_t gfn, uint32_t access,
                   bool gpte_dirty, bool write_fault)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Emulated write of [offset, offset + len) of shadowed page gfn, already
  // applied to guest memory: updates (or zaps) the sptes of those gptes.
  void GuestWroteGfn(uint64_t gfn, uint32_t offset, uint32_t len)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateFromGpte(ShadowPage* sp, int index, uint64_t gpte)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EmulateWrite(uint64_t gfn, uint32_t offset, const uint8_t* src,
                    uint32_t len) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Invariant helpers (invariants.cc).
  absl::Status CheckPage(const ShadowPage* sp, uint64_t* leaves) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckLeaf(const ShadowPage* sp, int i) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckMirror(const ShadowPage* sp, int i) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const MmuOptions options_;
  const std::vector<Memslot> memslots_;  // sorted by gpa
  // Shape fixed at construction; contents follow mu_ except `dirty`, whose
  // words are atomic (the fast path marks racy writes without mu_).
  std::vector<std::unique_ptr<SlotState>> slots_;

  mutable absl::Mutex mu_;
  std::atomic<uint64_t> gen_{1};
  bool need_flush_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<uint64_t, absl::InlinedVector<ShadowPage*, 2>>
      page_hash_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<const uint64_t*, ShadowPage*> spt_owner_
      ABSL_GUARDED_BY(mu_);
  std::vector<ShadowPage*> active_ ABSL_GUARDED_BY(mu_);
  MmuStats stats_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> racy_writes_{0};
};

// Holds mu_ and performs the pending TLB flush before releasing it, so no
// operation returns (or lets another in) with stale writable TLB entries.
class ABSL_SCOPED_LOCKABLE MmuLock {
 public:
  explicit MmuLock(const ShadowMmu* mmu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mmu->mu_)
      : mmu_(const_cast<ShadowMmu*>(mmu)) {
    mmu_->mu_.Lock();
  }
  ~MmuLock() ABSL_UNLOCK_FUNCTION() {
    mmu_->FlushIfNeeded();
    mmu_->mu_.Unlock();
  }

 private:
  ShadowMmu* mmu_;
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_SHADOW_MMU_H_
