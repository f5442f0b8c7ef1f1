#include "mmu/softmmu/shadow_mmu.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "gtest/gtest.h"
#include "mmu/dirty_bitmap.h"
#include "mmu/softmmu/soft_vcpu.h"
#include "mmu/softmmu/test_util.h"

namespace ferry::mmu::softmmu {
namespace {

constexpr uint64_t kRw = kGpteWrite | kGpteUser | kGpteAccessed | kGpteDirty;
constexpr uint64_t kTablePool = 0x100000;  // guest tables from 1 MiB up

// Two slots: 0 at [0, 4 MiB), 1 at [8 MiB, 12 MiB).
class MmuTest : public ::testing::Test {
 protected:
  void SetUp() override { Init({}); }
  void Init(MmuOptions o) {
    vcpus_.clear();
    mmu_ = *ShadowMmu::Create(ram_.slots(), o);
  }
  SoftVcpu* NewVcpu() {
    vcpus_.push_back(std::make_unique<SoftVcpu>(mmu_.get()));
    return vcpus_.back().get();
  }
  // Tables written straight into RAM (before anything shadows them).
  GuestPageTables Tables(PagingMode mode, uint64_t pool = kTablePool) {
    return GuestPageTables(
        mode,
        [this](uint64_t gpa, uint64_t v, int size) {
          ASSERT_TRUE(mmu_->WriteGpa(gpa, &v, size).ok());
        },
        [this](uint64_t gpa, int size) {
          uint64_t v = 0;
          EXPECT_TRUE(mmu_->ReadGpa(gpa, &v, size).ok());
          return v;
        },
        pool);
  }
  uint64_t Gpte(uint64_t gpa, int size) {
    uint64_t v = 0;
    EXPECT_TRUE(mmu_->ReadGpa(gpa, &v, size).ok());
    return v;
  }
  void Check() { ASSERT_TRUE(mmu_->CheckInvariants().ok()) << mmu_->CheckInvariants(); }
  uint64_t W64(SoftVcpu* v, uint64_t gva, uint64_t val) {
    AccessResult r = v->Write(gva, &val, 8);
    EXPECT_TRUE(r.ok()) << "status " << int(r.status) << " ec " << r.error_code;
    return val;
  }
  uint64_t R64(SoftVcpu* v, uint64_t gva) {
    uint64_t val = 0;
    EXPECT_TRUE(v->Read(gva, &val, 8).ok());
    return val;
  }

  GuestRam ram_{{{0, 0, 1024}, {1, 0x800000, 1024}}};
  std::unique_ptr<ShadowMmu> mmu_;
  std::vector<std::unique_ptr<SoftVcpu>> vcpus_;
};

TEST_F(MmuTest, LongModeTranslatesAndSetsAccessedDirty) {
  auto pt = Tables(PagingMode::kLongMode);
  const uint64_t gva = 0x7f12345000;
  pt.Map(gva, 0x5000, kGpteWrite);  // not accessed, not dirty
  SoftVcpu* v = NewVcpu();
  ASSERT_TRUE(v->SetPaging(PagingMode::kLongMode, pt.cr3()).ok());
  EXPECT_EQ(R64(v, gva + 8), 0u);
  EXPECT_TRUE(Gpte(pt.GpteGpa(gva, 1), 8) & kGpteAccessed);
  EXPECT_FALSE(Gpte(pt.GpteGpa(gva, 1), 8) & kGpteDirty);
  W64(v, gva + 8, 42);
  EXPECT_TRUE(Gpte(pt.GpteGpa(gva, 1), 8) & kGpteDirty);
  EXPECT_EQ(Gpte(0x5008, 8), 42u);
  const uint64_t faults = v->faults();
  W64(v, gva + 16, 43);  // TLB hit now
  EXPECT_EQ(v->faults(), faults);
  Check();
}

TEST_F(MmuTest, GuestPageFaultsAndUnmappedGpa) {
  auto pt = Tables(PagingMode::kLongMode);
  pt.Map(0x1000, 0x5000, kGpteAccessed);             // read-only, supervisor
  pt.Map(0x2000, 0x600000, kRw);                     // gpa in no slot
  SoftVcpu* v = NewVcpu();
  ASSERT_TRUE(v->SetPaging(PagingMode::kLongMode, pt.cr3()).ok());
  uint64_t x = 0;
  AccessResult r = v->Read(0x3000, &x, 8);
  EXPECT_EQ(r.status, AccessStatus::kPageFault);
  EXPECT_EQ(r.error_code, 0u);
  r = v->Write(0x1000, &x, 8);
  EXPECT_EQ(r.error_code, kPfPresent | kPfWrite);
  v->set_user_mode(true);
  r = v->Read(0x1000, &x, 8);
  EXPECT_EQ(r.error_code, kPfPresent | kPfUser);
  v->set_user_mode(false);
  r = v->Read(0x2010, &x, 8);
  EXPECT_EQ(r.status, AccessStatus::kUnmappedGpa);
  EXPECT_EQ(r.addr, 0x600010u);
  // PS in a PML4E is reserved.
  uint64_t pml4e = Gpte(pt.cr3(), 8) | kGptePs;
  ASSERT_TRUE(mmu_->WriteGpa(pt.cr3(), &pml4e, 8).ok());
  r = v->Read(0x1000, &x, 8);
  EXPECT_EQ(r.error_code, kPfPresent | kPfRsvd);
  // Direct mode: gpa beyond every slot.
  SoftVcpu* d = NewVcpu();
  r = d->Read(0x700000, &x, 8);
  EXPECT_EQ(r.status, AccessStatus::kUnmappedGpa);
  Check();
}

TEST_F(MmuTest, Legacy32UsesQuadrants) {
  auto pt = Tables(PagingMode::kLegacy32);
  // PDE 0 / 300 / 700 / 1000 (quadrants 0..3 of the PD); PT entries 5 and
  // 600 of one PT (quadrants 0 and 1 of it).
  const uint64_t gvas[] = {5u << 12, (600u << 12), (300u << 22) | (5u << 12),
                           (700u << 22), (1000u << 22) | (7u << 12)};
  uint64_t data = 0x10000;
  for (uint64_t gva : gvas) pt.Map(gva, data += 0x1000, kRw);
  SoftVcpu* v = NewVcpu();
  ASSERT_TRUE(v->SetPaging(PagingMode::kLegacy32, pt.cr3()).ok());
  for (uint64_t gva : gvas) W64(v, gva, gva);
  std::vector<int> pd_quadrants;
  for (PageRole r : mmu_->RolesOf(pt.cr3() >> 12)) {
    if (r.level() == 2) pd_quadrants.push_back(r.quadrant());
  }
  std::sort(pd_quadrants.begin(), pd_quadrants.end());
  EXPECT_EQ(pd_quadrants, (std::vector<int>{0, 1, 2, 3}));
  const uint64_t pt0 = pt.GpteGpa(0, 1) >> 12;  // the PT of PDE 0
  std::vector<int> pt_quadrants;
  for (PageRole r : mmu_->RolesOf(pt0)) pt_quadrants.push_back(r.quadrant());
  std::sort(pt_quadrants.begin(), pt_quadrants.end());
  EXPECT_EQ(pt_quadrants, (std::vector<int>{0, 1}));
  for (uint64_t gva : gvas) EXPECT_EQ(R64(v, gva), gva);
  Check();
}

TEST_F(MmuTest, SameTableAtTwoLevelsGetsTwoPagesAndSameRoleIsShared) {
  auto pt = Tables(PagingMode::kLongMode);
  pt.Map(0x1000, 0x5000, kRw);
  // PML4E 1 points at the PDPT of PML4E 0, used there as a PML4... no:
  // PDPTE 1 points at the PDPT itself, so it is also used as a PD.
  const uint64_t pdpt = Gpte(pt.cr3(), 8) & ~0xFFFull;
  uint64_t self = pdpt | kGptePresent | kGpteWrite | kGpteUser | kGpteAccessed;
  ASSERT_TRUE(mmu_->WriteGpa(pdpt + 8, &self, 8).ok());
  SoftVcpu* a = NewVcpu();
  SoftVcpu* b = NewVcpu();
  ASSERT_TRUE(a->SetPaging(PagingMode::kLongMode, pt.cr3()).ok());
  ASSERT_TRUE(b->SetPaging(PagingMode::kLongMode, pt.cr3()).ok());
  W64(a, 0x1000, 1);
  // gva 1 GiB: PML4E 0 -> PDPT, PDPTE 1 -> PDPT (as PD), PDE 0 -> PD (as PT)
  uint64_t x;
  (void)b->Read(uint64_t{1} << 30, &x, 8);
  int pdpt_levels = 0;
  for (PageRole r : mmu_->RolesOf(pdpt >> 12)) pdpt_levels |= 1 << r.level();
  EXPECT_EQ(pdpt_levels, (1 << 3) | (1 << 2));
  const size_t pages = mmu_->num_shadow_pages();
  EXPECT_EQ(R64(b, 0x1000), 1u);  // same roles: b reuses a's pages
  EXPECT_EQ(mmu_->num_shadow_pages(), pages);
  Check();
}

// The seed idea: a guest write to a shadowed gpte updates the spte, so
// demand paging right after it does not fault; zap-on-write refaults once.
TEST_F(MmuTest, GpteWriteUpdatesSpteSavingOneFault) {
  uint64_t faults[2];
  for (int zap = 0; zap < 2; ++zap) {
    MmuOptions o;
    o.zap_on_gpte_write = zap != 0;
    Init(o);
    std::memset(ram_.slots()[0].hva, 0, ram_.slots()[0].size);
    auto pt = Tables(PagingMode::kLongMode);
    pt.Map(0x1000, 0x5000, kRw);  // builds the PT
    SoftVcpu* v = NewVcpu();
    ASSERT_TRUE(v->SetPaging(PagingMode::kLongMode, pt.cr3()).ok());
    W64(v, 0x1000, 1);
    const uint64_t before = v->faults();
    // The guest OS maps a new page (its pte write traps: PT is shadowed).
    const uint64_t pte = 0x6000 | kGptePresent | kRw;
    ASSERT_TRUE(mmu_->WriteGpa(pt.GpteGpa(0x2000, 1), &pte, 8).ok());
    W64(v, 0x2000, 2);
    faults[zap] = v->faults() - before;
    EXPECT_EQ(Gpte(0x6000, 8), 2u);
    Check();
  }
  EXPECT_EQ(faults[0], 0u);
  EXPECT_EQ(faults[1], 1u);
}

TEST_F(MmuTest, WritesToShadowedTablesTrapAndTakeEffect) {
  auto pt = Tables(PagingMode::kLongMode);
  pt.Map(0x1000, 0x5000, kRw);
  pt.Map(0x2000, 0x6000, kRw);
  const uint64_t pte_gpa = pt.GpteGpa(0x1000, 1);
  pt.Map(0x3000, pte_gpa & ~0xFFFull, kRw);  // the PT mapped into the guest
  SoftVcpu* v = NewVcpu();
  ASSERT_TRUE(v->SetPaging(PagingMode::kLongMode, pt.cr3()).ok());
  W64(v, 0x1000, 11);
  W64(v, 0x2000, 22);
  const uint64_t emulated = mmu_->stats().emulated_writes;
  // Through its own mapping the guest points gva 0x1000 at 0x6000.
  W64(v, 0x3000 + (pte_gpa & 0xFFF), 0x6000 | kGptePresent | kRw);
  EXPECT_EQ(mmu_->stats().emulated_writes, emulated + 1);
  EXPECT_EQ(R64(v, 0x1000), 22u);
  Check();
}

TEST_F(MmuTest, LargePagesUseDirectPagesWithoutGfnArrays) {
  auto pt = Tables(PagingMode::kLongMode);
  pt.Map(0x40000000, 0x200000, kRw, /*level=*/2);  // 2 MiB page
  auto pt32 = Tables(PagingMode::kLegacy32, 0x180000);
  pt32.Map(0x800000, 0, kRw, /*level=*/2);  // 4 MiB page at gpa 0
  SoftVcpu* v = NewVcpu();
  SoftVcpu* w = NewVcpu();
  ASSERT_TRUE(v->SetPaging(PagingMode::kLongMode, pt.cr3()).ok());
  ASSERT_TRUE(w->SetPaging(PagingMode::kLegacy32, pt32.cr3()).ok());
  W64(v, 0x40000000 + 0x123000, 7);
  W64(w, 0x800000 + 0x201000, 8);  // upper 2 MiB half of the 4 MiB page
  EXPECT_EQ(Gpte(0x323000, 8), 7u);
  EXPECT_EQ(Gpte(0x201000, 8), 8u);
  bool direct_leaf = false;
  for (PageRole r : mmu_->RolesOf(512)) {
    direct_leaf |= r.direct() && r.level() == 1;
  }
  EXPECT_TRUE(direct_leaf);
  const MmuMemory m = mmu_->memory();
  EXPECT_GT(m.direct_pages, 0u);
  EXPECT_GT(m.indirect_pages, 0u);
  EXPECT_LT(ShadowPage::BytesFor(true) * 10, ShadowPage::BytesFor(false) * 6);
  Check();
}

TEST_F(MmuTest, DirtyLoggingByWriteProtection) {
  SoftVcpu* v = NewVcpu();  // direct mode
  for (uint64_t p = 0; p < 64; ++p) W64(v, 0x800000 + p * 4096, p);
  ASSERT_TRUE(mmu_->EnableDirtyLogging(1).ok());
  Check();
  W64(v, 0x800000 + 3 * 4096, 1);
  W64(v, 0x800000 + 3 * 4096 + 8, 1);
  uint64_t x = R64(v, 0x800000 + 5 * 4096);  // reads do not dirty
  (void)x;
  W64(v, 0x800000 + 9 * 4096, 1);
  DirtyBitmap bm;
  ASSERT_EQ(*mmu_->GetDirtyLog(1, &bm), 2u);
  EXPECT_TRUE(bm.Test(3) && bm.Test(9));
  Check();
  ASSERT_EQ(*mmu_->GetDirtyLog(1, &bm), 0u);
  W64(v, 0x800000 + 9 * 4096, 2);
  ASSERT_EQ(*mmu_->GetDirtyLog(1, &bm), 1u);
  // Clear-log variant: get keeps the bits; clear re-protects a range.
  W64(v, 0x800000 + 10 * 4096, 2);
  W64(v, 0x800000 + 20 * 4096, 2);
  ASSERT_EQ(*mmu_->GetDirtyLog(1, &bm, false), 2u);
  ASSERT_EQ(*mmu_->GetDirtyLog(1, &bm, false), 2u);
  ASSERT_EQ(*mmu_->ClearDirtyLog(1, 0, 15), 1u);
  ASSERT_EQ(*mmu_->GetDirtyLog(1, &bm, false), 1u);
  W64(v, 0x800000 + 10 * 4096, 3);
  ASSERT_EQ(*mmu_->GetDirtyLog(1, &bm, false), 2u);
  Check();
  EXPECT_FALSE(mmu_->GetDirtyLog(0, &bm).ok());  // not logging
  EXPECT_FALSE(mmu_->EnableDirtyLogging(7).ok());
  EXPECT_FALSE(mmu_->ClearDirtyLog(1, 1000, 100).ok());
}

TEST_F(MmuTest, SlotBitmapCoversSlots) {
  SoftVcpu* v = NewVcpu();
  W64(v, 0x1000, 1);
  W64(v, 0x800000, 1);
  ASSERT_TRUE(mmu_->EnableDirtyLogging(0).ok());
  ASSERT_TRUE(mmu_->EnableDirtyLogging(1).ok());
  Check();  // I4 holds: the filter found every writable spte of each slot
  W64(v, 0x800000, 2);
  DirtyBitmap bm;
  EXPECT_EQ(*mmu_->GetDirtyLog(1, &bm), 1u);
  EXPECT_EQ(*mmu_->GetDirtyLog(0, &bm), 0u);
}

TEST_F(MmuTest, TdpRangeOperations) {
  SoftVcpu* v = NewVcpu();
  for (uint64_t p = 0; p < 1024; ++p) W64(v, p * 4096, p);
  const uint64_t gen = mmu_->generation();
  std::vector<uint64_t> gfns;
  EXPECT_EQ(mmu_->TdpHarvestDirtyGfnRange(100, 110, &gfns), 10u);
  EXPECT_EQ(gfns.front(), 100u);
  EXPECT_EQ(gfns.back(), 109u);
  EXPECT_GT(mmu_->generation(), gen);
  EXPECT_EQ(mmu_->TdpWriteProtectGfnRange(0, 1024), 1014u);
  Check();
  EXPECT_EQ(mmu_->TdpZapGfnRange(0, 512), 1u);  // one whole 2 MiB subtree
  EXPECT_EQ(mmu_->TdpZapGfnRange(600, 601), 1u);
  Check();
  EXPECT_EQ(R64(v, 5 * 4096), 5u);  // refaults fine
  EXPECT_EQ(mmu_->ZapGfnRange(0, 2048), 512u - 1 + 1);
  mmu_->ZapAll();
  Check();
  EXPECT_EQ(R64(v, 700 * 4096), 700u);
}

TEST_F(MmuTest, BadInputIsAStatus) {
  SoftVcpu* v = NewVcpu();
  EXPECT_FALSE(v->SetPaging(PagingMode::kLegacy32, uint64_t{1} << 33).ok());
  uint64_t x = 0;
  EXPECT_FALSE(mmu_->WriteGpa(0x500000, &x, 8).ok());
  EXPECT_FALSE(mmu_->ReadGpa(0x3FFFFC, &x, 8).ok());  // crosses out of slot
  std::vector<Memslot> overlap = {ram_.slots()[0], ram_.slots()[0]};
  overlap[1].slot = 9;
  EXPECT_FALSE(ShadowMmu::Create(overlap).ok());
  // Accesses crossing a page boundary are split.
  uint64_t y = 0x1122334455667788;
  ASSERT_TRUE(v->Write(0x1FFC, &y, 8).ok());
  uint64_t z = 0;
  ASSERT_TRUE(v->Read(0x1FFC, &z, 8).ok());
  EXPECT_EQ(z, y);
}

}  // namespace
}  // namespace ferry::mmu::softmmu
