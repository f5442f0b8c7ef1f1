#include "mmu/softmmu/tdp_iter.h"

#include <cstdlib>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "gtest/gtest.h"
#include "mmu/softmmu/spte.h"

namespace ferry::mmu::softmmu {
namespace {

// A raw 4-level direct tree: leaves are present sptes with the gfn in the
// address field (never dereferenced).
class Tree {
 public:
  Tree() { root_ = NewTable(); }
  ~Tree() {
    for (uint64_t* t : tables_) std::free(t);
  }
  uint64_t* root() { return root_; }
  void Insert(uint64_t gfn) {
    uint64_t* t = root_;
    for (int level = 4; level > 1; --level) {
      uint64_t& e = t[SptIndex(gfn << 12, level)];
      if (!IsPresent(e)) e = MakeNonLeafSpte(NewTable());
      t = SpteChildTable(e);
    }
    t[gfn & 511] = (gfn << 12) | kSptePresent;
  }

 private:
  uint64_t* NewTable() {
    auto* t = static_cast<uint64_t*>(std::aligned_alloc(4096, 4096));
    std::fill(t, t + 512, 0);
    tables_.push_back(t);
    return t;
  }
  uint64_t* root_;
  std::vector<uint64_t*> tables_;
};

using Visit = std::tuple<int, uint64_t, uint64_t*>;

// Brute force: recursive pre-order over entries intersecting [start, end).
void Expected(uint64_t* table, int level, uint64_t base, uint64_t start,
              uint64_t end, std::vector<Visit>* out) {
  const uint64_t span = PagesPerSpte(level);
  for (int i = 0; i < 512; ++i) {
    const uint64_t gfn = base + i * span;
    if (gfn + span <= start || gfn >= end) continue;
    out->emplace_back(level, gfn, &table[i]);
    if (level > 1 && IsPresent(table[i])) {
      Expected(SpteChildTable(table[i]), level - 1, gfn, start, end, out);
    }
  }
}

std::vector<Visit> Walk(Tree& t, uint64_t start, uint64_t end) {
  std::vector<Visit> v;
  for (TdpIter it(t.root(), 4, start, end); it.valid(); it.Next()) {
    v.emplace_back(it.level(), it.gfn(), it.sptep());
  }
  return v;
}

void CheckRanges(Tree& t, uint64_t hi, std::mt19937_64& rng, int n) {
  for (int k = 0; k < n; ++k) {
    uint64_t a = rng() % hi, b = rng() % hi;
    if (a > b) std::swap(a, b);
    if (k % 4 == 0) b = a + 1 + rng() % 700;  // short, mid-table ranges
    std::vector<Visit> want;
    Expected(t.root(), 4, 0, a, b + 1, &want);
    ASSERT_EQ(Walk(t, a, b + 1), want) << "range [" << a << ", " << b + 1
                                       << ")";
  }
}

TEST(TdpIterTest, EmptyTreeVisitsOnlyRootEntries) {
  Tree t;
  auto v = Walk(t, 5, 1000);
  ASSERT_EQ(v.size(), 1u);  // one root entry covers it all
  EXPECT_EQ(std::get<0>(v[0]), 4);
  EXPECT_TRUE(Walk(t, 7, 7).empty());
}

TEST(TdpIterTest, SparseTree) {
  Tree t;
  std::mt19937_64 rng(1);
  for (int i = 0; i < 300; ++i) t.Insert(rng() % (uint64_t{1} << 30));
  t.Insert(0);
  t.Insert(511);
  t.Insert(512);
  CheckRanges(t, uint64_t{1} << 30, rng, 200);
}

TEST(TdpIterTest, FullTreeRangesStartAndEndMidTable) {
  Tree t;
  for (uint64_t g = 0; g < 3 * 512 * 512; ++g) t.Insert(g);  // 3 full PDs
  std::mt19937_64 rng(2);
  CheckRanges(t, 3 * 512 * 512 + 1000, rng, 25);
  // Exact boundaries.
  for (auto [a, b] : std::vector<std::pair<uint64_t, uint64_t>>{
           {0, 512}, {511, 513}, {512, 1024}, {262143, 262145},
           {1, 786432}}) {
    std::vector<Visit> want;
    Expected(t.root(), 4, 0, a, b, &want);
    EXPECT_EQ(Walk(t, a, b), want) << a << ".." << b;
  }
}

TEST(TdpIterTest, ZappedEntryIsNotDescended) {
  Tree t;
  for (uint64_t g = 0; g < 2048; ++g) t.Insert(g);
  int leaves = 0;
  for (TdpIter it(t.root(), 4, 0, 2048); it.valid(); it.Next()) {
    if (it.level() == 2 && it.gfn() == 512) *it.sptep() = 0;  // drop 512..1023
    if (it.level() == 1) ++leaves;
  }
  EXPECT_EQ(leaves, 2048 - 512);
}

TEST(TdpIterTest, MinLevelStopsDescent) {
  Tree t;
  for (uint64_t g = 0; g < 1024; ++g) t.Insert(g);
  int n = 0;
  for (TdpIter it(t.root(), 4, 0, 1024, /*min_level=*/2); it.valid();
       it.Next()) {
    EXPECT_GE(it.level(), 2);
    ++n;
  }
  EXPECT_EQ(n, 1 + 1 + 2);  // L4, L3, two L2 entries
}

}  // namespace
}  // namespace ferry::mmu::softmmu
