// PageRole: what a shadow page shadows, packed into 32 bits like KVM's
// union kvm_mmu_page_role. Two shadow pages are the same page iff they have
// the same gfn and the same role word, so everything that changes how the
// sptes of a page are derived from the guest must be in the role:
//
//   level         1..4, the shadow paging level of the page (1 = 4 KiB ptes).
//   guest_levels  paging levels of the guest whose tables it shadows: 4 (long
//                 mode, 8-byte gptes), 2 (32-bit non-PAE, 4-byte gptes), 0
//                 for the direct (TDP / paging-off) tree.
//   quadrant      which part of a 4-byte-gpte guest table this page shadows.
//                 A guest table has 1024 entries, a shadow table 512, and at
//                 level 2 each 4 MiB guest entry becomes two 2 MiB shadow
//                 entries: a guest PT needs 2 shadow pages (quadrant = gva
//                 bit 21), a guest PD needs 4 (quadrant = gva bits 30..31).
//                 Always 0 for 8-byte gptes and for direct pages.
//   direct        no guest table behind the page ("metaphysical"): the page
//                 maps a contiguous gfn range starting at its gfn (TDP tree,
//                 or a guest large page shadowed with 4 KiB sptes, or the
//                 4-entry PAE-style root of a 32-bit guest).
//   access        kAccWrite | kAccUser allowed by every gpte above the page.
#ifndef FERRY_MMU_SOFTMMU_ROLE_H_
#define FERRY_MMU_SOFTMMU_ROLE_H_

#include <cstdint>

namespace ferry::mmu::softmmu {

inline constexpr uint32_t kAccWrite = 1;
inline constexpr uint32_t kAccUser = 2;
inline constexpr uint32_t kAccAll = kAccWrite | kAccUser;

// One bit field of a 32-bit word.
template <int kShift, int kBits>
struct BitField {
  static constexpr uint32_t kMask = ((uint32_t{1} << kBits) - 1) << kShift;
  static constexpr uint32_t Get(uint32_t w) { return (w & kMask) >> kShift; }
  static constexpr uint32_t Set(uint32_t w, uint32_t v) {
    return (w & ~kMask) | ((v << kShift) & kMask);
  }
};

class PageRole {
 public:
  using Level = BitField<0, 3>;
  using GuestLevels = BitField<3, 3>;
  using Quadrant = BitField<6, 2>;
  using Direct = BitField<8, 1>;
  using Access = BitField<9, 2>;
  static constexpr uint32_t kUsedBits = 11;

  constexpr PageRole() = default;
  static constexpr PageRole Make(int level, int guest_levels, int quadrant,
                                 bool direct, uint32_t access) {
    uint32_t w = 0;
    w = Level::Set(w, static_cast<uint32_t>(level));
    w = GuestLevels::Set(w, static_cast<uint32_t>(guest_levels));
    w = Quadrant::Set(w, static_cast<uint32_t>(quadrant));
    w = Direct::Set(w, direct ? 1 : 0);
    w = Access::Set(w, access);
    return PageRole(w);
  }

  constexpr int level() const { return static_cast<int>(Level::Get(word_)); }
  constexpr int guest_levels() const {
    return static_cast<int>(GuestLevels::Get(word_));
  }
  constexpr int quadrant() const {
    return static_cast<int>(Quadrant::Get(word_));
  }
  constexpr bool direct() const { return Direct::Get(word_) != 0; }
  constexpr uint32_t access() const { return Access::Get(word_); }
  // 4 for 32-bit guests' tables, 8 otherwise.
  constexpr int gpte_size() const { return guest_levels() == 2 ? 4 : 8; }
  constexpr uint32_t word() const { return word_; }

  friend constexpr bool operator==(PageRole a, PageRole b) {
    return a.word_ == b.word_;
  }
  friend constexpr bool operator!=(PageRole a, PageRole b) {
    return a.word_ != b.word_;
  }

 private:
  explicit constexpr PageRole(uint32_t w) : word_(w) {}
  uint32_t word_ = 0;
};

static_assert(sizeof(PageRole) == 4, "a role is one 32-bit word");
static_assert((PageRole::Level::kMask & PageRole::GuestLevels::kMask) == 0 &&
                  (PageRole::GuestLevels::kMask & PageRole::Quadrant::kMask) ==
                      0 &&
                  (PageRole::Quadrant::kMask & PageRole::Direct::kMask) == 0 &&
                  (PageRole::Direct::kMask & PageRole::Access::kMask) == 0,
              "role fields must not overlap");
static_assert((PageRole::Level::kMask | PageRole::GuestLevels::kMask |
               PageRole::Quadrant::kMask | PageRole::Direct::kMask |
               PageRole::Access::kMask) ==
                  (uint32_t{1} << PageRole::kUsedBits) - 1,
              "role fields are packed from bit 0 without holes");
static_assert(PageRole::Make(4, 4, 0, false, kAccAll).word() == 0x624,
              "level=4 guest_levels=4 access=3");
static_assert(PageRole::Make(2, 2, 3, false, kAccUser).level() == 2 &&
                  PageRole::Make(2, 2, 3, false, kAccUser).quadrant() == 3 &&
                  PageRole::Make(2, 2, 3, false, kAccUser).access() == kAccUser,
              "fields round-trip");

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_ROLE_H_
