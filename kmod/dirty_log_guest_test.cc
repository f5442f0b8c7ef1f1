// End-to-end dirty tracking with a real guest: the CPL3 guest writes a
// chosen set of data pages, and each mode must report exactly those pages —
// then, after re-protection, exactly the next round's pages.
//   (a) classic KVM_GET_DIRTY_LOG
//   (b) KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 + KVM_CLEAR_DIRTY_LOG
//   (c) the per-vCPU dirty ring, including KVM_EXIT_DIRTY_RING_FULL
// Each skips, saying why, without /dev/kvm or the capability.
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmod/kvm.h"
#include "kmod/testing/cpl3_guest.h"
#include "kmod/testing/kvm_test_util.h"
#include "kmod/vm.h"

namespace ferry::kmod {
namespace {

using ::testing::ContainerEq;
using testing::Cpl3Guest;

const std::vector<uint64_t> kRoundA = {0, 1, 63, 64, 200, 511};
const std::vector<uint64_t> kRoundB = {1, 5, 64, 300};
constexpr uint32_t kSlot = Cpl3Guest::kDataSlot;

std::set<uint64_t> SetOf(const std::vector<uint64_t>& pages) {
  return std::set<uint64_t>(pages.begin(), pages.end());
}

std::set<uint64_t> BitsOf(const std::vector<uint64_t>& bitmap) {
  std::set<uint64_t> pages;
  for (size_t word = 0; word < bitmap.size(); ++word) {
    for (int bit = 0; bit < 64; ++bit) {
      if (bitmap[word] >> bit & 1) pages.insert(word * 64 + bit);
    }
  }
  return pages;
}

// A VM with the CPL3 guest and one vCPU; `before_memory` and `before_vcpu`
// configure dirty tracking at the points KVM requires.
struct GuestVm {
  std::optional<VmFd> vm;
  std::optional<Cpl3Guest> guest;
  std::optional<VcpuFd> vcpu;

  absl::Status Round(const std::vector<uint64_t>& pages, uint64_t stamp,
                     std::function<absl::Status()> on_ring_full = {}) {
    absl::Status armed = guest->ArmWrites(*vcpu, pages, stamp);
    if (!armed.ok()) return armed;
    return guest->RunUntilDone(*vcpu, absl::Seconds(20),
                               std::move(on_ring_full));
  }

  std::set<uint64_t> DirtyBits() {
    std::vector<uint64_t> bitmap(VmFd::BitmapWords(guest->data_pages()));
    absl::Status status = vm->GetDirtyLog(kSlot, absl::MakeSpan(bitmap));
    EXPECT_TRUE(status.ok()) << status;
    return BitsOf(bitmap);
  }
};

void MakeGuestVm(Kvm& kvm, GuestVm* out, uint32_t data_pages,
                 const std::function<void(VmFd&)>& before_memory,
                 const std::function<void(VmFd&)>& before_vcpu) {
  absl::StatusOr<VmFd> vm = kvm.CreateVm();
  ASSERT_TRUE(vm.ok()) << vm.status();
  out->vm.emplace(*std::move(vm));
  before_memory(*out->vm);
  Cpl3Guest::Options options;
  options.data_pages = data_pages;
  absl::StatusOr<Cpl3Guest> guest = Cpl3Guest::Create(*out->vm, options);
  ASSERT_TRUE(guest.ok()) << guest.status();
  out->guest.emplace(*std::move(guest));
  before_vcpu(*out->vm);
  absl::StatusOr<VcpuFd> vcpu = out->vm->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  out->vcpu.emplace(*std::move(vcpu));
  absl::Status setup = out->guest->SetUpVcpu(kvm, *out->vcpu);
  ASSERT_TRUE(setup.ok()) << setup;
}

void Nothing(VmFd&) {}

TEST(DirtyLogGuestTest, ClassicGetDirtyLog) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  GuestVm g;
  ASSERT_NO_FATAL_FAILURE(MakeGuestVm(kvm, &g, 512, Nothing, Nothing));

  ASSERT_TRUE(g.Round(kRoundA, 1).ok());
  EXPECT_THAT(g.DirtyBits(), ContainerEq(SetOf(kRoundA)));
  for (uint64_t page : kRoundA) EXPECT_EQ(g.guest->ReadDataWord(page), 1u);
  // Classic mode cleared the bitmap and re-protected: nothing until the
  // guest writes again, then exactly the new writes.
  EXPECT_TRUE(g.DirtyBits().empty());
  ASSERT_TRUE(g.Round(kRoundB, 2).ok());
  EXPECT_THAT(g.DirtyBits(), ContainerEq(SetOf(kRoundB)));
}

TEST(DirtyLogGuestTest, ManualProtectAndClear) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  GuestVm g;
  bool supported = true;
  ASSERT_NO_FATAL_FAILURE(MakeGuestVm(
      kvm, &g, 512,
      [&](VmFd& vm) {
        absl::Status status = vm.EnableManualDirtyLogProtect(false);
        if (status.code() == absl::StatusCode::kFailedPrecondition) {
          supported = false;
        } else {
          ASSERT_TRUE(status.ok()) << status;
        }
      },
      Nothing));
  if (!supported) GTEST_SKIP() << "no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2";

  ASSERT_TRUE(g.Round(kRoundA, 1).ok());
  std::set<uint64_t> dirty = g.DirtyBits();
  EXPECT_THAT(dirty, ContainerEq(SetOf(kRoundA)));
  // GET no longer clears: the bits stay until KVM_CLEAR_DIRTY_LOG.
  EXPECT_THAT(g.DirtyBits(), ContainerEq(dirty));
  std::vector<uint64_t> bitmap(VmFd::BitmapWords(512));
  ASSERT_TRUE(g.vm->GetDirtyLog(kSlot, absl::MakeSpan(bitmap)).ok());
  absl::Status cleared = g.vm->ClearDirtyLog(kSlot, 0, 512, bitmap);
  ASSERT_TRUE(cleared.ok()) << cleared;
  EXPECT_TRUE(g.DirtyBits().empty());

  ASSERT_TRUE(g.Round(kRoundB, 2).ok());
  EXPECT_THAT(g.DirtyBits(), ContainerEq(SetOf(kRoundB)));
}

TEST(DirtyLogGuestTest, ManualProtectInitiallySetClearedInChunks) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  GuestVm g;
  bool supported = true;
  ASSERT_NO_FATAL_FAILURE(MakeGuestVm(
      kvm, &g, 512,
      [&](VmFd& vm) {
        absl::Status status = vm.EnableManualDirtyLogProtect(true);
        if (status.code() == absl::StatusCode::kFailedPrecondition) {
          supported = false;
        } else {
          ASSERT_TRUE(status.ok()) << status;
        }
      },
      Nothing));
  if (!supported) {
    GTEST_SKIP() << "no KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 with INITIALLY_SET";
  }

  // Every page starts dirty and unprotected.
  EXPECT_EQ(g.DirtyBits().size(), 512u);
  // Clear (= protect) in 64-page chunks, as a sender would just before
  // copying each chunk.
  const std::vector<uint64_t> ones(1, ~0ull);
  for (uint64_t first = 0; first < 512; first += 64) {
    absl::Status status = g.vm->ClearDirtyLog(kSlot, first, 64, ones);
    ASSERT_TRUE(status.ok()) << status;
  }
  EXPECT_TRUE(g.DirtyBits().empty());
  ASSERT_TRUE(g.Round(kRoundA, 1).ok());
  EXPECT_THAT(g.DirtyBits(), ContainerEq(SetOf(kRoundA)));
}

// Enables the ring (or records why it cannot). Done before the memslots, as
// QEMU does; KVM itself only insists that no vCPU exists yet.
std::function<void(VmFd&)> EnableRing(uint32_t bytes, std::string* skip) {
  return [bytes, skip](VmFd& vm) {
    absl::Status status = vm.EnableDirtyRing(bytes);
    if (status.code() == absl::StatusCode::kFailedPrecondition) {
      *skip = std::string(status.message());
    } else {
      ASSERT_TRUE(status.ok()) << status;
    }
  };
}

std::set<uint64_t> HarvestPages(GuestVm& g, size_t* count = nullptr) {
  std::set<uint64_t> pages;
  size_t n = g.vcpu->dirty_ring()->Harvest([&](const DirtyGfn& gfn) {
    EXPECT_EQ(gfn.slot, kSlot);
    pages.insert(gfn.offset);
  });
  if (count != nullptr) *count = n;
  return pages;
}

TEST(DirtyLogGuestTest, DirtyRing) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  GuestVm g;
  std::string skip;
  ASSERT_NO_FATAL_FAILURE(
      MakeGuestVm(kvm, &g, 512, EnableRing(65536, &skip), Nothing));
  if (!skip.empty()) GTEST_SKIP() << skip;
  ASSERT_NE(g.vcpu->dirty_ring(), nullptr);
  DirtyRing* rings[] = {g.vcpu->dirty_ring()};

  ASSERT_TRUE(g.Round(kRoundA, 1).ok());
  size_t count = 0;
  EXPECT_THAT(HarvestPages(g, &count), ContainerEq(SetOf(kRoundA)));
  EXPECT_EQ(count, kRoundA.size()) << "one entry per first write";
  absl::StatusOr<uint64_t> reset = g.vm->ResetDirtyRingsAndCheck(rings);
  ASSERT_TRUE(reset.ok()) << reset.status();
  EXPECT_EQ(*reset, kRoundA.size());

  ASSERT_TRUE(g.Round(kRoundB, 2).ok());
  EXPECT_THAT(HarvestPages(g), ContainerEq(SetOf(kRoundB)));
  reset = g.vm->ResetDirtyRingsAndCheck(rings);
  ASSERT_TRUE(reset.ok()) << reset.status();
  EXPECT_EQ(*reset, kRoundB.size());
}

TEST(DirtyLogGuestTest, DirtyRingFullExitIsHandledByHarvestAndReset) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  GuestVm g;
  std::string skip;
  // 1024 entries; soft-full at 1024 - 64 (- 512 with Intel PML) entries.
  constexpr uint32_t kRingBytes = 16384;
  constexpr uint32_t kPages = 2048;
  ASSERT_NO_FATAL_FAILURE(
      MakeGuestVm(kvm, &g, kPages, EnableRing(kRingBytes, &skip), Nothing));
  if (!skip.empty()) GTEST_SKIP() << skip;
  DirtyRing* rings[] = {g.vcpu->dirty_ring()};

  std::vector<uint64_t> all;
  for (uint64_t page = 0; page < kPages; ++page) all.push_back(page);
  std::set<uint64_t> seen;
  int full_exits = 0;
  auto drain = [&]() -> absl::Status {
    std::set<uint64_t> pages = HarvestPages(g);
    seen.insert(pages.begin(), pages.end());
    return g.vm->ResetDirtyRingsAndCheck(rings).status();
  };
  absl::Status done = g.Round(all, 7, [&]() {
    ++full_exits;
    return drain();
  });
  ASSERT_TRUE(done.ok()) << done;
  ASSERT_TRUE(drain().ok());
  EXPECT_GE(full_exits, 1);
  EXPECT_EQ(seen, SetOf(all));
}

}  // namespace
}  // namespace ferry::kmod
