#include "agent/vmm/soft/softmmu_port.h"

#include <atomic>
#include <memory>
#include <utility>
#include <vector>

#include "absl/base/internal/raw_logging.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "mmu/softmmu/soft_dirty_tracker.h"
#include "mmu/softmmu/soft_vcpu.h"

namespace ferry::vmm {
namespace {

using mmu::softmmu::AccessResult;
using mmu::softmmu::ShadowMmu;
using mmu::softmmu::SoftVcpu;

class SoftMmuPort : public SoftMemoryPort {
 public:
  static absl::StatusOr<std::unique_ptr<SoftMemoryPort>> Create(
      mmu::GuestMemory& memory, uint32_t vcpu_count,
      mmu::softmmu::MmuOptions options) {
    std::vector<mmu::Memslot> slots(memory.slots().begin(),
                                    memory.slots().end());
    ASSIGN_OR_RETURN(std::unique_ptr<ShadowMmu> mmu,
                     ShadowMmu::Create(std::move(slots), options));
    auto port = std::unique_ptr<SoftMmuPort>(new SoftMmuPort(std::move(mmu)));
    for (uint32_t i = 0; i < vcpu_count; ++i) {
      // Starts in direct mode (paging off): gpa == gva.
      port->vcpus_.push_back(std::make_unique<SoftVcpu>(port->mmu_.get()));
    }
    return port;
  }

  ~SoftMmuPort() override {
    vcpus_.clear();  // SoftVcpus hold root references into the MMU
  }

  uint64_t Load64(uint32_t vcpu, uint64_t gpa) override {
    uint64_t value = 0;
    Check(vcpus_[vcpu]->Read(gpa, &value, sizeof(value)), vcpu, gpa, "load");
    return value;
  }

  void Store64(uint32_t vcpu, uint64_t gpa, uint64_t value) override {
    Check(vcpus_[vcpu]->Write(gpa, &value, sizeof(value)), vcpu, gpa,
          "store");
  }

  absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>> CreateDirtyTracker(
      mmu::DirtyTrackingMode mode) override {
    if (mode != mmu::DirtyTrackingMode::kUnspecified &&
        mode != mmu::DirtyTrackingMode::kSoftMmu) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the soft backend tracks dirty pages with its software MMU only; "
          "asked for mode ",
          mmu::DirtyTrackingModeName(mode), ", use softmmu or auto"));
    }
    if (tracker_live_.exchange(true)) {
      return absl::FailedPreconditionError(
          "a dirty tracker is already active on this VM (one per VM: a "
          "migration or another tracking user holds it)");
    }
    return std::unique_ptr<mmu::DirtyTracker>(
        new OwnedTracker(mmu_.get(), &tracker_live_));
  }

 private:
  // Releases the port's one-tracker slot when destroyed.
  class OwnedTracker : public mmu::softmmu::SoftDirtyTracker {
   public:
    OwnedTracker(ShadowMmu* mmu, std::atomic<bool>* live)
        : SoftDirtyTracker(mmu), live_(live) {}
    ~OwnedTracker() override {
      (void)Stop();  // write access back to normal if the owner forgot
      live_->store(false);
    }

   private:
    std::atomic<bool>* const live_;
  };

  explicit SoftMmuPort(std::unique_ptr<ShadowMmu> mmu)
      : mmu_(std::move(mmu)) {}

  // The VMM validated the params page, so a fault here is a VMM bug
  // (memory_port.h's contract): stop loudly rather than corrupt the guest.
  static void Check(const AccessResult& r, uint32_t vcpu, uint64_t gpa,
                    const char* what) {
    if (ABSL_PREDICT_TRUE(r.ok())) return;
    ABSL_RAW_LOG(FATAL,
                 "soft vCPU %u: %s at gpa 0x%llx failed (status %d, addr "
                 "0x%llx): the VMM passed an address outside guest memory",
                 vcpu, what, static_cast<unsigned long long>(gpa),
                 static_cast<int>(r.status),
                 static_cast<unsigned long long>(r.addr));
  }

  std::unique_ptr<ShadowMmu> mmu_;
  // One per vCPU; vcpus_[i] is used only by vCPU i's thread.
  std::vector<std::unique_ptr<SoftVcpu>> vcpus_;
  std::atomic<bool> tracker_live_{false};
};

}  // namespace

SoftMemoryPortFactory SoftMmuPortFactory(mmu::softmmu::MmuOptions options) {
  return [options](mmu::GuestMemory& memory, uint32_t vcpu_count)
             -> absl::StatusOr<std::unique_ptr<SoftMemoryPort>> {
    return SoftMmuPort::Create(memory, vcpu_count, options);
  };
}

}  // namespace ferry::vmm
