#include "mmu/softmmu/tdp_iter.h"

#include <algorithm>

#include "mmu/softmmu/spte.h"

namespace ferry::mmu::softmmu {

TdpIter::TdpIter(uint64_t* root, int root_level, uint64_t start_gfn,
                 uint64_t end_gfn, int min_level)
    : root_level_(root_level),
      min_level_(min_level),
      level_(root_level),
      start_(start_gfn),
      end_(end_gfn) {
  tables_[root_level] = root;
  const uint64_t root_span = PagesPerSpte(root_level) * 512;
  if (root == nullptr || start_gfn >= end_gfn || start_gfn >= root_span) {
    valid_ = false;
    return;
  }
  SetPosition(start_gfn);
}

// Points at the entry of tables_[level_] covering `target_gfn`.
void TdpIter::SetPosition(uint64_t target_gfn) {
  const uint64_t span = PagesPerSpte(level_);
  index_ = static_cast<int>((target_gfn / span) & 511);
  gfn_ = target_gfn & ~(span - 1);
}

bool TdpIter::TryStepDown() {
  if (level_ <= min_level_ || level_ == 1) return false;
  const uint64_t spte = *sptep();  // re-read: the caller may have zapped it
  if (!IsPresent(spte)) return false;
  tables_[level_ - 1] = SpteChildTable(spte);
  const uint64_t target = std::max(start_, gfn_);
  --level_;
  SetPosition(target);
  return true;
}

bool TdpIter::TryStepSide() {
  if (index_ == 511) return false;
  ++index_;
  gfn_ += PagesPerSpte(level_);
  if (gfn_ >= end_) valid_ = false;
  return true;
}

bool TdpIter::TryStepUp() {
  if (level_ == root_level_) return false;
  ++level_;
  gfn_ &= ~(PagesPerSpte(level_) - 1);
  index_ = static_cast<int>((gfn_ / PagesPerSpte(level_)) & 511);
  return true;
}

void TdpIter::Next() {
  if (!valid_) return;
  if (TryStepDown()) return;
  while (true) {
    if (TryStepSide()) return;
    if (!TryStepUp()) {
      valid_ = false;
      return;
    }
  }
}

}  // namespace ferry::mmu::softmmu
