#include "kmod/vm.h"

#include <sys/mman.h>

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmod/testing/kvm_test_util.h"

namespace ferry::kmod {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = 1 << 20;

// A VmFd over a memfd: every ioctl fails with ENOTTY.
VmFd NotAVm() {
  absl::StatusOr<Fd> memfd = CreateMemfd("not-a-vm", 4096);
  EXPECT_TRUE(memfd.ok());
  return VmFd::FromFd(*std::move(memfd), 4096);
}

// Anonymous memory for memslots.
Mmap Memory(size_t bytes) {
  absl::StatusOr<Mmap> map = Mmap::Create(
      -1, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, 0, "mem");
  EXPECT_TRUE(map.ok()) << map.status();
  return *std::move(map);
}

// --- Pure checks (run everywhere) ---

TEST(VmFdChecksTest, BitmapWords) {
  EXPECT_EQ(VmFd::BitmapWords(0), 0u);
  EXPECT_EQ(VmFd::BitmapWords(1), 1u);
  EXPECT_EQ(VmFd::BitmapWords(64), 1u);
  EXPECT_EQ(VmFd::BitmapWords(65), 2u);
}

TEST(VmFdChecksTest, ClearRangeFollowsTheKernelsAlignmentRules) {
  EXPECT_TRUE(VmFd::CheckClearRange(512, 0, 512, 8).ok());
  EXPECT_TRUE(VmFd::CheckClearRange(512, 64, 64, 1).ok());
  // A tail that ends at the slot's end may be any length.
  EXPECT_TRUE(VmFd::CheckClearRange(100, 64, 36, 1).ok());
  EXPECT_THAT(VmFd::CheckClearRange(512, 32, 64, 1).message(),
              HasSubstr("not a multiple of 64"));
  EXPECT_THAT(VmFd::CheckClearRange(512, 0, 100, 2).message(),
              HasSubstr("must be a multiple of 64"));
  EXPECT_THAT(VmFd::CheckClearRange(512, 448, 128, 2).message(),
              HasSubstr("run past"));
  EXPECT_THAT(VmFd::CheckClearRange(512, 0, 512, 7).message(),
              HasSubstr("bitmap has 7 words"));
}

TEST(VmFdChecksTest, DirtyRingSize) {
  EXPECT_TRUE(VmFd::ValidateDirtyRingBytes(65536, 1 << 20).ok());
  EXPECT_THAT(VmFd::ValidateDirtyRingBytes(65536 + 4096, 1 << 20).message(),
              HasSubstr("not a power of two"));
  EXPECT_THAT(VmFd::ValidateDirtyRingBytes(0, 1 << 20).message(),
              HasSubstr("not a power of two"));
  EXPECT_THAT(VmFd::ValidateDirtyRingBytes(1024, 1 << 20).message(),
              HasSubstr("smaller than a page"));
  EXPECT_THAT(VmFd::ValidateDirtyRingBytes(2 << 20, 1 << 20).message(),
              HasSubstr("exceeds"));
}

// --- Bad fds (run everywhere) ---

TEST(VmFdBadFdTest, IoctlsOnANonVmFdSayENOTTY) {
  VmFd vm = NotAVm();
  Mmap mem = Memory(kMiB);
  absl::Status status =
      vm.SetUserMemoryRegion(3, 0x100000, kMiB, mem.data(), 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(),
              HasSubstr("KVM_SET_USER_MEMORY_REGION vm slot=3 gpa=0x100000"));
  EXPECT_THAT(status.message(), HasSubstr("ENOTTY"));
  EXPECT_THAT(status.message(), HasSubstr("not a KVM VM fd"));

  EXPECT_THAT(vm.CheckExtension(Cap::kIrqchip).status().message(),
              HasSubstr("KVM_CHECK_EXTENSION vm KVM_CAP_IRQCHIP: ENOTTY"));
  EXPECT_THAT(vm.ResetDirtyRings().status().message(),
              HasSubstr("KVM_RESET_DIRTY_RINGS vm: ENOTTY"));
  EXPECT_THAT(vm.CreateIrqchip().message(),
              HasSubstr("KVM_CREATE_IRQCHIP vm: ENOTTY"));
  EXPECT_THAT(vm.GetClock().status().message(),
              HasSubstr("KVM_GET_CLOCK vm: ENOTTY"));
  EXPECT_THAT(vm.SetTssAddr(0xfffbd000).message(),
              HasSubstr("KVM_SET_TSS_ADDR vm gpa=0xfffbd000: ENOTTY"));
  EXPECT_THAT(vm.EnableDirtyRing(65536).message(), HasSubstr("ENOTTY"));
  EXPECT_THAT(vm.EnableManualDirtyLogProtect(false).message(),
              HasSubstr("ENOTTY"));
  EXPECT_THAT(vm.CreateVcpu(0).status().message(), HasSubstr("ENOTTY"));
}

TEST(VmFdBadFdTest, ClosedFdSaysEBADF) {
  VmFd vm = VmFd::FromFd(Fd(), 4096);
  absl::Status status = vm.CreateIrqchip();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("KVM_CREATE_IRQCHIP vm: EBADF"));
  EXPECT_THAT(vm.GetPit2().status().message(), HasSubstr("EBADF"));
}

TEST(VmFdBadFdTest, DirtyLogOfAnUnknownSlotIsRefusedBeforeTheKernel) {
  VmFd vm = NotAVm();
  std::vector<uint64_t> bitmap(8);
  absl::Status status = vm.GetDirtyLog(5, absl::MakeSpan(bitmap));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(),
              HasSubstr("KVM_GET_DIRTY_LOG vm slot=5: no such memslot"));
  status = vm.ClearDirtyLog(5, 0, 64, bitmap);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(vm.SetDirtyLogging(5, true).code(), absl::StatusCode::kNotFound);
}

// --- Needs /dev/kvm ---

class VmFdTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Kvm> kvm = Kvm::Open();
    if (!kvm.ok()) GTEST_SKIP() << "needs /dev/kvm: " << kvm.status();
    kvm_.emplace(*std::move(kvm));
    absl::StatusOr<VmFd> vm = kvm_->CreateVm();
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_.emplace(*std::move(vm));
    mem_ = Memory(4 * kMiB);
  }

  std::optional<Kvm> kvm_;
  std::optional<VmFd> vm_;
  Mmap mem_;
};

TEST_F(VmFdTest, MemslotLifecycle) {
  ASSERT_TRUE(vm_->SetUserMemoryRegion(0, 0, 2 * kMiB, mem_.data(), 0).ok());
  ASSERT_TRUE(vm_->SetDirtyLogging(0, true).ok());
  absl::StatusOr<Memslot> slot = vm_->GetMemslot(0);
  ASSERT_TRUE(slot.ok());
  EXPECT_EQ(slot->flags, KVM_MEM_LOG_DIRTY_PAGES);
  EXPECT_EQ(slot->pages(), 512u);

  std::vector<uint64_t> bitmap(VmFd::BitmapWords(512), ~0ull);
  ASSERT_TRUE(vm_->GetDirtyLog(0, absl::MakeSpan(bitmap)).ok());
  for (uint64_t word : bitmap) EXPECT_EQ(word, 0u) << "nothing ran yet";

  ASSERT_TRUE(vm_->SetDirtyLogging(0, false).ok());
  ASSERT_TRUE(vm_->DeleteMemoryRegion(0).ok());
  EXPECT_EQ(vm_->GetMemslot(0).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(VmFdTest, UnalignedMemslotIsInvalidArgument) {
  absl::Status status =
      vm_->SetUserMemoryRegion(0, 0x1800, 2 * kMiB, mem_.data(), 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("KVM_SET_USER_MEMORY_REGION vm slot=0 gpa=0x1800"));
  EXPECT_THAT(status.message(), HasSubstr("page-aligned"));
}

TEST_F(VmFdTest, OverlappingMemslotIsAlreadyExists) {
  ASSERT_TRUE(vm_->SetUserMemoryRegion(0, 0, 2 * kMiB, mem_.data(), 0).ok());
  absl::Status status =
      vm_->SetUserMemoryRegion(1, kMiB, 2 * kMiB, mem_.bytes() + 2 * kMiB, 0);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(status.message(), HasSubstr("overlaps"));
}

TEST_F(VmFdTest, DirtyLogArgumentErrors) {
  ASSERT_TRUE(vm_->SetUserMemoryRegion(0, 0, 2 * kMiB, mem_.data(), 0).ok());
  std::vector<uint64_t> bitmap(VmFd::BitmapWords(512));
  // No KVM_MEM_LOG_DIRTY_PAGES: the kernel says ENOENT.
  absl::Status status = vm_->GetDirtyLog(0, absl::MakeSpan(bitmap));
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(status.message(),
              HasSubstr("KVM_GET_DIRTY_LOG vm slot=0: ENOENT"));
  // Unknown slot and short bitmap are caught before the kernel.
  EXPECT_EQ(vm_->GetDirtyLog(9, absl::MakeSpan(bitmap)).code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(vm_->SetDirtyLogging(0, true).ok());
  status = vm_->GetDirtyLog(0, absl::MakeSpan(bitmap).subspan(1));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("need 8"));
}

TEST_F(VmFdTest, ManualProtectAndClear) {
  FERRY_REQUIRE_CAP_OR_SKIP(*vm_, Cap::kManualDirtyLogProtect2);
  ASSERT_TRUE(vm_->EnableManualDirtyLogProtect(false).ok());
  EXPECT_TRUE(vm_->manual_dirty_log_protect());
  ASSERT_TRUE(vm_->SetUserMemoryRegion(0, 0, 2 * kMiB, mem_.data(),
                                       KVM_MEM_LOG_DIRTY_PAGES)
                  .ok());
  std::vector<uint64_t> bitmap(VmFd::BitmapWords(512), ~0ull);
  EXPECT_TRUE(vm_->ClearDirtyLog(0, 0, 512, bitmap).ok());
  EXPECT_TRUE(vm_->ClearDirtyLog(0, 64, 128, bitmap).ok());
  absl::Status status = vm_->ClearDirtyLog(0, 32, 64, bitmap);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(),
              HasSubstr("KVM_CLEAR_DIRTY_LOG vm slot=0 first_page=32"));
}

TEST_F(VmFdTest, DirtyRingRules) {
  absl::StatusOr<int> ring = vm_->CheckExtension(Cap::kDirtyLogRing);
  absl::StatusOr<int> acq_rel = vm_->CheckExtension(Cap::kDirtyLogRingAcqRel);
  ASSERT_TRUE(ring.ok() && acq_rel.ok());
  if (*ring <= 0 && *acq_rel <= 0) {
    GTEST_SKIP() << "this kernel has no dirty ring";
  }
  absl::Status status = vm_->EnableDirtyRing(65536 + 4096);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("not a power of two"));

  ASSERT_TRUE(vm_->EnableDirtyRing(65536).ok());
  EXPECT_EQ(vm_->dirty_ring_bytes(), 65536u);
  std::vector<uint64_t> bitmap(8);
  ASSERT_TRUE(vm_->SetUserMemoryRegion(0, 0, 2 * kMiB, mem_.data(),
                                       KVM_MEM_LOG_DIRTY_PAGES)
                  .ok());
  EXPECT_EQ(vm_->GetDirtyLog(0, absl::MakeSpan(bitmap)).code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<uint32_t> reset = vm_->ResetDirtyRings();
  ASSERT_TRUE(reset.ok()) << reset.status();
  EXPECT_EQ(*reset, 0u);
}

TEST_F(VmFdTest, DirtyRingMustPrecedeVcpus) {
  FERRY_REQUIRE_CAP_OR_SKIP(*vm_, Cap::kDirtyLogRing);
  absl::StatusOr<VcpuFd> vcpu = vm_->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  absl::Status status = vm_->EnableDirtyRing(65536);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("before the first KVM_CREATE_VCPU"));
}

TEST_F(VmFdTest, IrqchipAndClock) {
  FERRY_REQUIRE_CAP_OR_SKIP(*vm_, Cap::kIrqchip);
  ASSERT_TRUE(vm_->CreateIrqchip().ok());
  EXPECT_TRUE(vm_->has_irqchip());
  absl::StatusOr<kvm_irqchip> pic = vm_->GetIrqchip(KVM_IRQCHIP_PIC_MASTER);
  ASSERT_TRUE(pic.ok()) << pic.status();
  EXPECT_TRUE(vm_->SetIrqchip(*pic).ok());
  EXPECT_EQ(vm_->GetIrqchip(99).status().code(),
            absl::StatusCode::kInvalidArgument);

  absl::StatusOr<kvm_clock_data> clock = vm_->GetClock();
  ASSERT_TRUE(clock.ok()) << clock.status();
  EXPECT_TRUE(vm_->SetClock(*clock).ok());
}

TEST_F(VmFdTest, VcpuIds) {
  absl::StatusOr<VcpuFd> vcpu = vm_->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  EXPECT_EQ(vm_->vcpus_created(), 1);
  absl::StatusOr<VcpuFd> again = vm_->CreateVcpu(0);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_THAT(again.status().message(), HasSubstr("KVM_CREATE_VCPU vm id=0"));
  EXPECT_EQ(vm_->CreateIrqchip().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace ferry::kmod
