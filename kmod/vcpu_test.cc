#include "kmod/vcpu.h"

#include <utility>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmod/testing/cpl3_guest.h"
#include "kmod/testing/kvm_test_util.h"
#include "kmod/vm.h"

namespace ferry::kmod {
namespace {

using testing::Cpl3Guest;
using ::testing::HasSubstr;

constexpr size_t kFakeMmapSize = 3 * 4096;

// A VcpuFd over a memfd: kvm_run maps (zeros), every ioctl says ENOTTY.
VcpuFd NotAVcpu(uint32_t id = 0) {
  absl::StatusOr<Fd> memfd = CreateMemfd("not-a-vcpu", kFakeMmapSize);
  EXPECT_TRUE(memfd.ok());
  VcpuConfig config;
  config.id = id;
  config.mmap_size = kFakeMmapSize;
  absl::StatusOr<VcpuFd> vcpu = VcpuFd::FromFd(*std::move(memfd), config);
  EXPECT_TRUE(vcpu.ok()) << vcpu.status();
  return *std::move(vcpu);
}

// --- Run everywhere ---

TEST(VcpuBadFdTest, IoctlsOnANonVcpuFdSayENOTTY) {
  VcpuFd vcpu = NotAVcpu(2);
  absl::StatusOr<VcpuFd::RunResult> run = vcpu.Run();
  EXPECT_EQ(run.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(run.status().message(), HasSubstr("KVM_RUN vcpu 2: ENOTTY"));
  EXPECT_THAT(run.status().message(), HasSubstr("not a KVM vCPU fd"));
  EXPECT_THAT(vcpu.GetRegs().status().message(),
              HasSubstr("KVM_GET_REGS vcpu 2: ENOTTY"));
  EXPECT_THAT(vcpu.SetSregs(kvm_sregs{}).message(),
              HasSubstr("KVM_SET_SREGS vcpu 2: ENOTTY"));
  EXPECT_THAT(vcpu.GetXsave().status().message(),
              HasSubstr("KVM_GET_XSAVE vcpu 2: ENOTTY"));
  EXPECT_THAT(vcpu.GetLapic().status().message(), HasSubstr("KVM_GET_LAPIC"));
  EXPECT_THAT(vcpu.SetCpuid2({}).message(), HasSubstr("KVM_SET_CPUID2"));
  EXPECT_THAT(vcpu.GetMsrs({0x10}).status().message(),
              HasSubstr("KVM_GET_MSRS vcpu 2 nmsrs=1: ENOTTY"));
  EXPECT_THAT(vcpu.SetMsrs({{0x10, 0}}).message(),
              HasSubstr("KVM_SET_MSRS vcpu 2 nmsrs=1: ENOTTY"));
  EXPECT_THAT(vcpu.CompletePendingExit().message(), HasSubstr("ENOTTY"));
  EXPECT_THAT(vcpu.GetTscKhz().status().message(),
              HasSubstr("KVM_GET_TSC_KHZ vcpu 2: ENOTTY"));
  EXPECT_THAT(vcpu.SetTscKhz(2000000).message(),
              HasSubstr("KVM_SET_TSC_KHZ vcpu 2 khz=2000000: ENOTTY"));
  EXPECT_EQ(vcpu.SetTscKhz(0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(vcpu.dirty_ring(), nullptr);
}

TEST(VcpuBadFdTest, ClosedFdCannotBeMapped) {
  VcpuConfig config;
  config.id = 4;
  config.mmap_size = kFakeMmapSize;
  absl::StatusOr<VcpuFd> vcpu = VcpuFd::FromFd(Fd(), config);
  EXPECT_EQ(vcpu.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(vcpu.status().message(), HasSubstr("mmap kvm_run vcpu 4"));
  EXPECT_THAT(vcpu.status().message(), HasSubstr("EBADF"));
}

TEST(VcpuBadFdTest, MovedFromVcpuSaysEBADF) {
  VcpuFd vcpu = NotAVcpu();
  VcpuFd other = std::move(vcpu);
  EXPECT_THAT(
      vcpu.GetRegs().status().message(),  // NOLINT(bugprone-use-after-move)
      HasSubstr("KVM_GET_REGS vcpu 0: EBADF"));
  EXPECT_THAT(other.GetRegs().status().message(), HasSubstr("ENOTTY"));
}

TEST(VcpuBadFdTest, TooSmallMmapIsInvalid) {
  VcpuConfig config;
  config.mmap_size = 16;
  EXPECT_EQ(VcpuFd::FromFd(Fd(), config).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(VcpuRunStructTest, ImmediateExitAndExitAccessors) {
  VcpuFd vcpu = NotAVcpu();
  vcpu.set_immediate_exit(true);
  EXPECT_EQ(vcpu.run().immediate_exit, 1);
  vcpu.set_immediate_exit(false);
  EXPECT_EQ(vcpu.run().immediate_exit, 0);

  // Fake an OUT exit in the (memfd-backed) run page.
  kvm_run& run = vcpu.mutable_run();
  run.exit_reason = KVM_EXIT_IO;
  run.io.direction = KVM_EXIT_IO_OUT;
  run.io.port = 0xe0;
  run.io.size = 1;
  run.io.count = 1;
  run.io.data_offset = 4096;
  absl::StatusOr<IoExit> io = vcpu.io();
  ASSERT_TRUE(io.ok()) << io.status();
  EXPECT_TRUE(io->out);
  EXPECT_EQ(io->port, 0xe0);
  EXPECT_EQ(io->data.size(), 1u);
  EXPECT_EQ(vcpu.mmio().status().code(), absl::StatusCode::kFailedPrecondition);

  run.io.data_offset =
      kFakeMmapSize;  // a lying kernel must not make us overrun
  run.io.count = 2;
  EXPECT_EQ(vcpu.io().status().code(), absl::StatusCode::kInternal);
}

TEST(ExitReasonNameTest, Names) {
  EXPECT_EQ(ExitReasonName(KVM_EXIT_IO), "KVM_EXIT_IO");
  EXPECT_EQ(ExitReasonName(KVM_EXIT_DIRTY_RING_FULL),
            "KVM_EXIT_DIRTY_RING_FULL");
  EXPECT_EQ(ExitReasonName(9999), "KVM_EXIT_9999");
}

// --- Needs /dev/kvm ---

class VcpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Kvm> kvm = Kvm::Open();
    if (!kvm.ok()) GTEST_SKIP() << "needs /dev/kvm: " << kvm.status();
    kvm_.emplace(*std::move(kvm));
    absl::StatusOr<VmFd> vm = kvm_->CreateVm();
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_.emplace(*std::move(vm));
    absl::StatusOr<VcpuFd> vcpu = vm_->CreateVcpu(0);
    ASSERT_TRUE(vcpu.ok()) << vcpu.status();
    vcpu_.emplace(*std::move(vcpu));
  }

  std::optional<Kvm> kvm_;
  std::optional<VmFd> vm_;
  std::optional<VcpuFd> vcpu_;
};

TEST_F(VcpuTest, RegsRoundTrip) {
  absl::StatusOr<kvm_regs> regs = vcpu_->GetRegs();
  ASSERT_TRUE(regs.ok()) << regs.status();
  regs->rax = 0x1234;
  regs->rip = 0xfff0;
  ASSERT_TRUE(vcpu_->SetRegs(*regs).ok());
  absl::StatusOr<kvm_regs> again = vcpu_->GetRegs();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->rax, 0x1234u);
  EXPECT_EQ(again->rip, 0xfff0u);
}

TEST_F(VcpuTest, StateAccessorsWork) {
  EXPECT_TRUE(vcpu_->GetSregs().ok());
  EXPECT_TRUE(vcpu_->GetFpu().ok());
  absl::StatusOr<std::vector<uint32_t>> xsave = vcpu_->GetXsave();
  ASSERT_TRUE(xsave.ok()) << xsave.status();
  EXPECT_GE(xsave->size() * 4, sizeof(kvm_xsave));
  EXPECT_TRUE(vcpu_->SetXsave(*xsave).ok());
  EXPECT_TRUE(vcpu_->GetXcrs().ok());
  EXPECT_TRUE(vcpu_->GetVcpuEvents().ok());
  EXPECT_TRUE(vcpu_->GetMpState().ok());
  EXPECT_TRUE(vcpu_->GetDebugRegs().ok());
}

TEST_F(VcpuTest, InvalidSregsAreInvalidArgument) {
  absl::StatusOr<kvm_sregs> sregs = vcpu_->GetSregs();
  ASSERT_TRUE(sregs.ok());
  sregs->cr0 = 1ull << 31;  // paging without protected mode
  sregs->efer = 1ull << 8;  // LME without CPUID long mode set
  absl::Status status = vcpu_->SetSregs(*sregs);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("KVM_SET_SREGS vcpu 0: EINVAL"));
}

TEST_F(VcpuTest, RefusedMsrIsNamed) {
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid =
      kvm_->GetSupportedCpuid();
  ASSERT_TRUE(cpuid.ok());
  ASSERT_TRUE(vcpu_->SetCpuid2(*cpuid).ok());
  // IA32_TSC is accepted; 0xdeadbeef is no MSR at all.
  absl::Status status = vcpu_->SetMsrs({{0x10, 1000}, {0xdeadbeef, 1}});
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(status.message(), HasSubstr("MSR 0xdeadbeef = 0x1 refused"));
  EXPECT_THAT(status.message(), HasSubstr("entry 1 of 2"));
  absl::StatusOr<size_t> done = vcpu_->SetMsrsPrefix({{0x10, 1000}});
  ASSERT_TRUE(done.ok());
  EXPECT_EQ(*done, 1u);
  EXPECT_THAT(vcpu_->GetMsrs({0xdeadbeef}).status().message(),
              HasSubstr("MSR 0xdeadbeef unreadable"));
}

TEST_F(VcpuTest, ImmediateExitInterrupts) {
  vcpu_->set_immediate_exit(true);
  absl::StatusOr<VcpuFd::RunResult> result = vcpu_->Run();
  vcpu_->set_immediate_exit(false);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(*result, VcpuFd::RunResult::kInterrupted);
}

TEST(VcpuGuestTest, RunsTheCpl3GuestToItsOutExit) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  absl::StatusOr<VmFd> vm = kvm.CreateVm();
  ASSERT_TRUE(vm.ok()) << vm.status();
  absl::StatusOr<Cpl3Guest> guest = Cpl3Guest::Create(*vm, {});
  ASSERT_TRUE(guest.ok()) << guest.status();
  absl::StatusOr<VcpuFd> vcpu = vm->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  ASSERT_TRUE(guest->SetUpVcpu(kvm, *vcpu).ok());
  ASSERT_TRUE(guest->ArmWrites(*vcpu, {0, 7}, 0xabcd).ok());
  absl::Status done = guest->RunUntilDone(*vcpu);
  ASSERT_TRUE(done.ok()) << done;
  absl::StatusOr<IoExit> io = vcpu->io();
  ASSERT_TRUE(io.ok());
  EXPECT_EQ(io->port, Cpl3Guest::kDonePort);
  EXPECT_EQ(guest->ReadDataWord(0), 0xabcdu);
  EXPECT_EQ(guest->ReadDataWord(7), 0xabcdu);
  EXPECT_EQ(guest->ReadDataWord(1), 0u);
  EXPECT_TRUE(vcpu->CompletePendingExit().ok());
  // Left set on purpose, so a concurrent kick is never swallowed.
  EXPECT_EQ(vcpu->run().immediate_exit, 1);
  // The TSC rate reads back and can be set to itself.
  absl::StatusOr<uint32_t> khz = vcpu->GetTscKhz();
  if (khz.ok()) {
    EXPECT_GT(*khz, 0u);
    if (kvm.CheckExtension(Cap::kTscControl).value_or(0) > 0) {
      EXPECT_TRUE(vcpu->SetTscKhz(*khz).ok());
    }
  }
}

}  // namespace
}  // namespace ferry::kmod
