// Shadow page-table entry (spte) layout. Sptes live in 512-entry, 4 KiB
// aligned tables (ShadowPage::spt) and are read by the software "hardware"
// walk in ShadowMmu, never by a CPU, so the layout is ours, modelled on
// x86/EPT:
//
//   bit 0      present
//   bit 1      writable (W): the vCPU may write through this spte now
//   bit 2      user (U)
//   bit 10     mmu-writable: W may be set without consulting the guest (the
//              gpte allows writes and is dirty, and the gfn is not shadowed).
//              Dirty logging clears W but keeps this bit, so a logged write
//              is fixed by the fast path of the fault (KVM's
//              fast_page_fault); shadowing a gfn clears both.
//   bits 12-51 host address: for a leaf (level 1) the hva of the 4 KiB guest
//              page, for a non-leaf the address of the child's spt.
//
// Non-leaf sptes are always present|W|U: permissions are applied at the
// leaf, where the access of the whole guest walk is folded in.
// Invariant: W implies mmu-writable implies present.
#ifndef FERRY_MMU_SOFTMMU_SPTE_H_
#define FERRY_MMU_SOFTMMU_SPTE_H_

#include <cstdint>

namespace ferry::mmu::softmmu {

inline constexpr uint64_t kSptePresent = uint64_t{1} << 0;
inline constexpr uint64_t kSpteWritable = uint64_t{1} << 1;
inline constexpr uint64_t kSpteUser = uint64_t{1} << 2;
inline constexpr uint64_t kSpteMmuWritable = uint64_t{1} << 10;
inline constexpr uint64_t kSpteAddrMask = 0x000FFFFFFFFFF000ull;

static_assert((kSpteAddrMask & (kSptePresent | kSpteWritable | kSpteUser |
                                kSpteMmuWritable)) == 0,
              "flag bits lie outside the address field");

inline bool IsPresent(uint64_t spte) { return (spte & kSptePresent) != 0; }
inline bool IsWritable(uint64_t spte) { return (spte & kSpteWritable) != 0; }
inline bool IsUser(uint64_t spte) { return (spte & kSpteUser) != 0; }
inline bool IsMmuWritable(uint64_t spte) {
  return (spte & kSpteMmuWritable) != 0;
}

inline uint8_t* SpteHva(uint64_t spte) {
  return reinterpret_cast<uint8_t*>(spte & kSpteAddrMask);
}
inline uint64_t* SpteChildTable(uint64_t spte) {
  return reinterpret_cast<uint64_t*>(spte & kSpteAddrMask);
}

inline uint64_t MakeNonLeafSpte(const uint64_t* child_spt) {
  return (reinterpret_cast<uintptr_t>(child_spt) & kSpteAddrMask) |
         kSptePresent | kSpteWritable | kSpteUser;
}

inline uint64_t MakeLeafSpte(const uint8_t* hva, bool writable, bool user,
                             bool mmu_writable) {
  uint64_t s = (reinterpret_cast<uintptr_t>(hva) & kSpteAddrMask) |
               kSptePresent;
  if (user) s |= kSpteUser;
  if (mmu_writable) s |= kSpteMmuWritable;
  if (writable && mmu_writable) s |= kSpteWritable;
  return s;
}

// Index of `addr` (a gva, or a gpa in the direct tree) in a table at `level`.
inline int SptIndex(uint64_t addr, int level) {
  return static_cast<int>((addr >> (12 + 9 * (level - 1))) & 511);
}

// Pages covered by one spte at `level`: 1, 512, 512^2, ...
inline uint64_t PagesPerSpte(int level) {
  return uint64_t{1} << (9 * (level - 1));
}

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_SPTE_H_
