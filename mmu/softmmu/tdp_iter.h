// TdpIter: pre-order walk over the sptes of a direct (TDP) tree that map
// any part of [start_gfn, end_gfn) (KVM's tdp_iter). From an entry it
//   - steps down into the child table if the entry is a present non-leaf
//     and level > min_level (re-reading the spte, so an entry the caller
//     just zapped is not descended into),
//   - else steps sideways to the next entry of the same table,
//   - else steps up (repeatedly) and sideways from there,
// and ends once the next entry starts at or beyond end_gfn or the root
// table is exhausted. Every visited entry, present or not, intersects the
// range; entries are visited in ascending gfn order with a parent before its
// children. The tree must not change shape under the walk except by the
// caller clearing the entry it is at. Callers hold the mmu lock.
#ifndef FERRY_MMU_SOFTMMU_TDP_ITER_H_
#define FERRY_MMU_SOFTMMU_TDP_ITER_H_

#include <cstdint>

namespace ferry::mmu::softmmu {

class TdpIter {
 public:
  // `root` is the spt of a direct page at `root_level` whose gfn is 0.
  TdpIter(uint64_t* root, int root_level, uint64_t start_gfn,
          uint64_t end_gfn, int min_level = 1);

  bool valid() const { return valid_; }
  void Next();

  int level() const { return level_; }
  // First gfn the current entry covers.
  uint64_t gfn() const { return gfn_; }
  uint64_t* sptep() const { return &tables_[level_][index_]; }
  uint64_t spte() const { return *sptep(); }

 private:
  bool TryStepDown();
  bool TryStepSide();
  bool TryStepUp();
  void SetPosition(uint64_t target_gfn);

  uint64_t* tables_[6] = {};  // tables_[l]: the table at level l
  int root_level_;
  int min_level_;
  int level_;
  int index_ = 0;
  uint64_t gfn_ = 0;
  uint64_t start_;
  uint64_t end_;
  bool valid_ = true;
};

}  // namespace ferry::mmu::softmmu

#endif  // FERRY_MMU_SOFTMMU_TDP_ITER_H_
