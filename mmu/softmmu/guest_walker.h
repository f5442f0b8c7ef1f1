// The guest page-table walker (KVM's paging_tmpl.h walk_addr): translates a
// gva through the guest's own tables in guest memory, checks present /
// write / user, and on success sets accessed (every level) and dirty (the
// leaf, on writes) bits in the gptes like the hardware would.
//
// Guest paging modes modelled:
//   kLongMode  4 levels, 8-byte gptes, 512 per table; 2 MiB pages (PS in a
//              PDE); PS in a PML4E or PDPTE is a reserved-bit fault (no
//              1 GiB pages in our CPUID), as are PDE bits 13..20 of a 2 MiB
//              page. Bits 52..63 are ignored (no NX).
//   kLegacy32  2 levels, 4-byte gptes, 1024 per table; CR4.PSE on: PS in a
//              PDE maps 4 MiB (bits 22..31; bits 12..21 ignored).
//   kDirect    paging off / TDP: gva == gpa, no walk.
// CR0.WP is on (supervisor writes honour W); SMEP/SMAP/NX are off.
//
// A/D bits are set only after the walk succeeded (no update on a fault), by
// atomic OR into guest memory, and each changed gpte's page is reported to
// GuestPhys::MarkWritten (dirty logging sees A/D updates, as in KVM).
#ifndef FERRY_MMU_SOFTMMU_GUEST_WALKER_H_
#define FERRY_MMU_SOFTMMU_GUEST_WALKER_H_

#include <cstdint>

namespace ferry::mmu::softmmu {

enum class PagingMode : uint8_t { kDirect, kLegacy32, kLongMode };

inline int GuestLevels(PagingMode m) {
  return m == PagingMode::kLongMode ? 4 : m == PagingMode::kLegacy32 ? 2 : 0;
}

// x86 page-fault error code bits.
inline constexpr uint32_t kPfPresent = 1;
inline constexpr uint32_t kPfWrite = 2;
inline constexpr uint32_t kPfUser = 4;
inline constexpr uint32_t kPfRsvd = 8;

// gpte bits shared by both formats.
inline constexpr uint64_t kGptePresent = 1u << 0;
inline constexpr uint64_t kGpteWrite = 1u << 1;
inline constexpr uint64_t kGpteUser = 1u << 2;
inline constexpr uint64_t kGpteAccessed = 1u << 5;
inline constexpr uint64_t kGpteDirty = 1u << 6;
inline constexpr uint64_t kGptePs = 1u << 7;

// Guest-physical memory as the walker needs it.
class GuestPhys {
 public:
  virtual ~GuestPhys() = default;
  // Host address of the 4 KiB page `gfn`, or nullptr if no memslot has it.
  virtual uint8_t* GfnToHva(uint64_t gfn) = 0;
  // The walker changed guest memory in page `gfn` (an A/D update).
  virtual void MarkWritten(uint64_t gfn) = 0;
};

struct GuestWalk {
  enum class Result { kOk, kPageFault, kUnmappedTable };
  Result result = Result::kOk;
  uint32_t error_code = 0;  // kPageFault
  uint64_t fault_gpa = 0;   // kUnmappedTable: gpa of the unreadable gpte
  int levels = 0;           // guest paging levels
  int leaf_level = 0;       // 1, or 2 for a large page
  // Indexed by guest level 1..levels. table_gfn[l] is the table read at l,
  // gpte[l] the entry used (after A/D updates), access[l] the access allowed
  // by gptes at levels >= l. access[levels + 1] is kAccAll.
  uint64_t table_gfn[6] = {};
  uint64_t gpte[6] = {};
  uint32_t access[6] = {};
  uint64_t gfn = 0;  // the 4 KiB data page
  bool ok() const { return result == Result::kOk; }
  uint32_t final_access() const { return access[leaf_level]; }
};

// gva -> gfn through the guest tables rooted at cr3. `user` is a CPL 3
// access. Not for kDirect.
GuestWalk WalkGuest(GuestPhys& phys, PagingMode mode, uint64_t cr3,
                    uint64_t gva, bool write, bool user);

// True if any gpte the walk used now differs from what it read (a write
// raced with the walk: KVM's FNAME(gpte_changed)). Sets *changed_level to
// the highest level that changed.
bool GptesChanged(GuestPhys& phys, const GuestWalk& walk, uint64_t gva,
                  int* changed_level);

// Index of the gpte used at `level` for `gva`.
int GpteIndex(int guest_levels, uint64_t gva, int level);

// Reads entry `index` of the guest table at `hva` (4- or 8-byte gptes).
uint64_t ReadGpte(const uint8_t* table_hva, int gpte_size, int index);

// kAccWrite/kAccUser of one gpte.
uint32_t GpteAccess(uint64_t gpte);

// The gfn a 4 KiB-level gpte (or a non-leaf gpte) points to.
uint64_t GpteFrameGfn(uint64_t gpte, int gpte_size);

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_GUEST_WALKER_H_
