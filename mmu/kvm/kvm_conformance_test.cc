// The conformance suite against the real kernel: a CPL3 guest
// (kmod/testing/cpl3_guest.h) stamps pages of its data slot; the host runs
// it to its `out` ("done" — the stop handshake: the vCPU is out of KVM_RUN
// when RunIteration returns), then collects. One instantiation per KVM
// mode; each skips, saying why, without /dev/kvm or the capability.
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "kmod/caps.h"
#include "kmod/kvm.h"
#include "kmod/testing/cpl3_guest.h"
#include "kmod/vcpu.h"
#include "kmod/vm.h"
#include "mmu/kvm/ring_tracker.h"
#include "mmu/kvm/select.h"
#include "mmu/testing/host_writer_target.h"
#include "mmu/testing/tracker_conformance.h"

namespace ferry::mmu::kvm {
namespace {

using kmod::testing::Cpl3Guest;
using testing::ConformanceParam;
using testing::ConformanceParamName;
using testing::DirtyTrackingTarget;
using testing::TrackerConformanceTest;

constexpr uint32_t kDataPages = 2048;
// Fewer than Cpl3Guest::kMaxWrites; more than the ring's soft limit, so
// the ring mode sees KVM_EXIT_DIRTY_RING_FULL.
constexpr uint64_t kMaxWrites = 1500;
// 1024 entries: soft-full at 1024 - 64 (- 512 with Intel PML).
constexpr uint32_t kRingBytes = 16384;

class KvmGuestTarget : public DirtyTrackingTarget {
 public:
  static absl::StatusOr<std::unique_ptr<DirtyTrackingTarget>> Create(
      DirtyTrackingMode mode) {
    std::unique_ptr<KvmGuestTarget> t(new KvmGuestTarget);
    absl::StatusOr<kmod::Kvm> kvm = kmod::Kvm::Open();
    if (!kvm.ok()) {
      return absl::UnavailableError(
          absl::StrCat("needs /dev/kvm: ", kvm.status().message()));
    }
    t->kvm_.emplace(*std::move(kvm));
    ASSIGN_OR_RETURN(kmod::VmFd vm, t->kvm_->CreateVm());
    t->vm_.emplace(std::move(vm));
    // The ring is a VM-creation decision: before the memslots and vCPU.
    if (mode == DirtyTrackingMode::kRing) {
      absl::Status s = t->vm_->EnableDirtyRing(kRingBytes);
      if (s.code() == absl::StatusCode::kFailedPrecondition) {
        return absl::UnavailableError(s.message());
      }
      RETURN_IF_ERROR(s);
    }
    if (mode == DirtyTrackingMode::kClearLog) {
      ASSIGN_OR_RETURN(int bits, t->vm_->CheckExtension(
                                     kmod::Cap::kManualDirtyLogProtect2));
      if (bits <= 0) {
        return absl::UnavailableError(
            "this kernel lacks KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2");
      }
    }
    Cpl3Guest::Options options;
    options.data_pages = kDataPages;
    options.data_slot_flags = 0;  // the tracker turns logging on
    ASSIGN_OR_RETURN(Cpl3Guest guest, Cpl3Guest::Create(*t->vm_, options));
    t->guest_.emplace(std::move(guest));
    ASSIGN_OR_RETURN(kmod::VcpuFd vcpu, t->vm_->CreateVcpu(0));
    t->vcpu_.emplace(std::move(vcpu));  // not moved again: rings point in
    RETURN_IF_ERROR(t->guest_->SetUpVcpu(*t->kvm_, *t->vcpu_));

    ASSIGN_OR_RETURN(kmod::Memslot data,
                     t->vm_->GetMemslot(Cpl3Guest::kDataSlot));
    t->slots_.push_back(Memslot{Cpl3Guest::kDataSlot, data.gpa, data.size,
                                reinterpret_cast<uint8_t*>(data.hva), 0});
    std::vector<kmod::DirtyRing*> rings;
    if (mode == DirtyTrackingMode::kRing) rings.push_back(t->vcpu_->dirty_ring());
    ASSIGN_OR_RETURN(t->tracker_,
                     CreateKvmDirtyTracker(mode, &*t->vm_, std::move(rings)));
    return std::unique_ptr<DirtyTrackingTarget>(std::move(t));
  }

  DirtyTracker* tracker() override { return tracker_.get(); }
  absl::Span<const Memslot> slots() const override { return slots_; }

  absl::Status RunIteration(uint64_t stamp, uint64_t seed) override {
    std::vector<uint64_t> pages;
    for (uint64_t gpa : testing::HostWriterTarget::PagesFor(seed, slots_,
                                                            kMaxWrites)) {
      pages.push_back((gpa - Cpl3Guest::kDataGpa) / Cpl3Guest::kPageSize);
    }
    RETURN_IF_ERROR(guest_->ArmWrites(*vcpu_, pages, stamp));
    std::function<absl::Status()> on_full;
    if (RingTracker* ring = AsRingTracker(tracker_.get())) {
      on_full = [ring] { return ring->OnRingFull(0); };
    }
    return guest_->RunUntilDone(*vcpu_, absl::Seconds(20), on_full);
  }

  absl::StatusOr<uint64_t> ReadStamp(uint64_t gpa) override {
    return guest_->ReadDataWord((gpa - Cpl3Guest::kDataGpa) /
                                Cpl3Guest::kPageSize);
  }

 private:
  KvmGuestTarget() = default;

  // Destroyed bottom-up: tracker, vCPU (and its ring), guest memory, VM.
  std::optional<kmod::Kvm> kvm_;
  std::optional<kmod::VmFd> vm_;
  std::optional<Cpl3Guest> guest_;
  std::optional<kmod::VcpuFd> vcpu_;
  std::vector<Memslot> slots_;
  std::unique_ptr<DirtyTracker> tracker_;
};

INSTANTIATE_TEST_SUITE_P(
    Kvm, TrackerConformanceTest,
    ::testing::Values(
        ConformanceParam{"bitmap",
                         [] {
                           return KvmGuestTarget::Create(
                               DirtyTrackingMode::kBitmap);
                         }},
        ConformanceParam{"clear_log",
                         [] {
                           return KvmGuestTarget::Create(
                               DirtyTrackingMode::kClearLog);
                         }},
        ConformanceParam{"ring",
                         [] {
                           return KvmGuestTarget::Create(
                               DirtyTrackingMode::kRing);
                         }}),
    ConformanceParamName);

}  // namespace
}  // namespace ferry::mmu::kvm
