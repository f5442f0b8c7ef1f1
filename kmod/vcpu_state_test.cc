#include "kmod/vcpu_state.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kmod/kvm.h"
#include "kmod/testing/cpl3_guest.h"
#include "kmod/testing/kvm_test_util.h"
#include "kmod/vm.h"

namespace ferry::kmod {
namespace {

using ::testing::Contains;
using testing::Cpl3Guest;
using ::testing::HasSubstr;

constexpr uint32_t kBogusMsr = 0xdeadbeef;

// --- Runs everywhere ---

TEST(VcpuStateBadFdTest, SaveAndRestoreNameTheFailingIoctl) {
  absl::StatusOr<Fd> memfd = CreateMemfd("not-a-vcpu", 3 * 4096);
  ASSERT_TRUE(memfd.ok());
  VcpuConfig config;
  config.mmap_size = 3 * 4096;
  absl::StatusOr<VcpuFd> vcpu = VcpuFd::FromFd(*std::move(memfd), config);
  ASSERT_TRUE(vcpu.ok());
  absl::StatusOr<VcpuState> state = SaveVcpuState(*vcpu, {});
  EXPECT_THAT(state.status().message(),
              HasSubstr("KVM_GET_MP_STATE vcpu 0: ENOTTY"));
  EXPECT_THAT(RestoreVcpuState(*vcpu, VcpuState{}).message(),
              HasSubstr("KVM_SET_MP_STATE vcpu 0: ENOTTY"));
}

// --- Needs /dev/kvm ---

struct Machine {
  std::optional<VmFd> vm;
  std::optional<Cpl3Guest> guest;
  std::optional<VcpuFd> vcpu;
};

void MakeMachine(Kvm& kvm, Machine* m) {
  absl::StatusOr<VmFd> vm = kvm.CreateVm();
  ASSERT_TRUE(vm.ok()) << vm.status();
  m->vm.emplace(*std::move(vm));
  absl::StatusOr<Cpl3Guest> guest = Cpl3Guest::Create(*m->vm, {});
  ASSERT_TRUE(guest.ok()) << guest.status();
  m->guest.emplace(*std::move(guest));
  absl::StatusOr<VcpuFd> vcpu = m->vm->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok()) << vcpu.status();
  m->vcpu.emplace(*std::move(vcpu));
  ASSERT_TRUE(m->guest->SetUpVcpu(kvm, *m->vcpu).ok());
}

TEST(VcpuStateTest, SaveRestoreIntoAnotherVmContinuesTheGuest) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  Machine source, destination;
  ASSERT_NO_FATAL_FAILURE(MakeMachine(kvm, &source));
  ASSERT_NO_FATAL_FAILURE(MakeMachine(kvm, &destination));

  ASSERT_TRUE(source.guest->ArmWrites(*source.vcpu, {3}, 0x77).ok());
  ASSERT_TRUE(source.guest->RunUntilDone(*source.vcpu).ok());
  // Finish the OUT (advance RIP) before saving: KVM-FACTS pitfall.
  ASSERT_TRUE(source.vcpu->CompletePendingExit().ok());

  absl::StatusOr<std::vector<uint32_t>> msrs = kvm.GetMsrIndexList();
  ASSERT_TRUE(msrs.ok());
  SaveOptions save;
  save.msr_indices = *msrs;
  save.skip_unreadable_msrs = true;
  absl::StatusOr<VcpuState> state = SaveVcpuState(*source.vcpu, save);
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_FALSE(state->cpuid.empty());
  EXPECT_FALSE(state->lapic.has_value()) << "no in-kernel irqchip";

  std::vector<uint32_t> refused;
  RestoreOptions restore;
  restore.skip_refused_msrs = true;
  restore.refused_msrs = &refused;
  absl::Status restored = RestoreVcpuState(*destination.vcpu, *state, restore);
  ASSERT_TRUE(restored.ok()) << restored;

  absl::StatusOr<kvm_regs> regs = destination.vcpu->GetRegs();
  ASSERT_TRUE(regs.ok());
  EXPECT_EQ(regs->rip, state->regs.rip);
  EXPECT_EQ(regs->rbx, 0x77u);
  absl::StatusOr<kvm_sregs> sregs = destination.vcpu->GetSregs();
  ASSERT_TRUE(sregs.ok());
  EXPECT_EQ(sregs->cs.selector, 0x1b);
  EXPECT_EQ(sregs->cr3, state->sregs.cr3);
  EXPECT_EQ(sregs->efer, state->sregs.efer);

  // The restored vCPU runs the program in its new VM.
  ASSERT_TRUE(destination.guest->ArmWrites(*destination.vcpu, {9}, 0x88).ok());
  absl::Status done = destination.guest->RunUntilDone(*destination.vcpu);
  ASSERT_TRUE(done.ok()) << done;
  EXPECT_EQ(destination.guest->ReadDataWord(9), 0x88u);
}

TEST(VcpuStateTest, RefusedMsrsAreSkippedOrReported) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  Machine m;
  ASSERT_NO_FATAL_FAILURE(MakeMachine(kvm, &m));
  absl::StatusOr<VcpuState> state = SaveVcpuState(*m.vcpu, {});
  ASSERT_TRUE(state.ok()) << state.status();
  state->msrs = {{0x10, 12345}, {kBogusMsr, 1}, {0x10, 23456}};

  absl::Status strict = RestoreVcpuState(*m.vcpu, *state);
  EXPECT_EQ(strict.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(strict.message(), HasSubstr("MSR 0xdeadbeef"));

  std::vector<uint32_t> refused;
  RestoreOptions options;
  options.skip_refused_msrs = true;
  options.refused_msrs = &refused;
  EXPECT_TRUE(RestoreVcpuState(*m.vcpu, *state, options).ok());
  EXPECT_THAT(refused, Contains(kBogusMsr));
  EXPECT_EQ(refused.size(), 1u);

  SaveOptions save;
  save.msr_indices = {0x10, kBogusMsr};
  EXPECT_THAT(SaveVcpuState(*m.vcpu, save).status().message(),
              HasSubstr("MSR 0xdeadbeef unreadable"));
  std::vector<uint32_t> skipped;
  save.skip_unreadable_msrs = true;
  save.skipped_msrs = &skipped;
  absl::StatusOr<VcpuState> partial = SaveVcpuState(*m.vcpu, save);
  ASSERT_TRUE(partial.ok()) << partial.status();
  EXPECT_EQ(partial->msrs.size(), 1u);
  EXPECT_THAT(skipped, Contains(kBogusMsr));
}

TEST(VcpuStateTest, LapicIsSavedWithAnIrqchip) {
  FERRY_OPEN_KVM_OR_SKIP(kvm);
  absl::StatusOr<VmFd> vm = kvm.CreateVm();
  ASSERT_TRUE(vm.ok());
  FERRY_REQUIRE_CAP_OR_SKIP(*vm, Cap::kIrqchip);
  ASSERT_TRUE(vm->CreateIrqchip().ok());
  absl::StatusOr<VcpuFd> vcpu = vm->CreateVcpu(0);
  ASSERT_TRUE(vcpu.ok());
  absl::StatusOr<VcpuState> state = SaveVcpuState(*vcpu, {});
  ASSERT_TRUE(state.ok()) << state.status();
  ASSERT_TRUE(state->lapic.has_value());
  EXPECT_TRUE(RestoreVcpuState(*vcpu, *state).ok());
}

}  // namespace
}  // namespace ferry::kmod
