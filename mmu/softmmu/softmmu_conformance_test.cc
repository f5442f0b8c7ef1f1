// The dirty-tracking conformance suite (mmu/testing/tracker_conformance.h)
// in kSoftMmu mode: the same checks every KVM mode runs, here with writer
// threads that store through SoftVcpus, so every write takes the software
// MMU's path (TLB fast path, or a write-protect fault that logs the page).
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "mmu/guest_memory.h"
#include "mmu/softmmu/shadow_mmu.h"
#include "mmu/softmmu/soft_dirty_tracker.h"
#include "mmu/softmmu/soft_vcpu.h"
#include "mmu/testing/host_writer_target.h"
#include "mmu/testing/tracker_conformance.h"

namespace ferry::mmu::softmmu {
namespace {

using ::ferry::mmu::testing::ConformanceParam;
using ::ferry::mmu::testing::DirtyTrackingTarget;
using ::ferry::mmu::testing::HostWriterTarget;
using ::ferry::mmu::testing::TrackerConformanceTest;

constexpr uint64_t kMaxWrites = 256;

class SoftMmuTarget : public DirtyTrackingTarget {
 public:
  static absl::StatusOr<std::unique_ptr<DirtyTrackingTarget>> Create(
      bool manual_protect, int writers, PagingMode mode) {
    GuestMemoryLayout layout;
    // Uneven slots with a gap and non-dense ids, like the host target's.
    layout.slots = {{0, 0, 300 * kPageSize}, {3, 4ull << 20, 1000 * kPageSize}};
    ASSIGN_OR_RETURN(std::unique_ptr<GuestMemory> memory,
                     GuestMemory::Create(layout));
    std::vector<Memslot> slots(memory->slots().begin(), memory->slots().end());
    ASSIGN_OR_RETURN(std::unique_ptr<ShadowMmu> mmu, ShadowMmu::Create(slots));
    auto t = std::unique_ptr<SoftMmuTarget>(new SoftMmuTarget());
    t->memory_ = std::move(memory);
    t->mmu_ = std::move(mmu);
    t->tracker_ = std::make_unique<SoftDirtyTracker>(t->mmu_.get(),
                                                     manual_protect);
    for (int i = 0; i < writers; ++i) {
      auto vcpu = std::make_unique<SoftVcpu>(t->mmu_.get());
      RETURN_IF_ERROR(vcpu->SetPaging(mode, 0));
      t->vcpus_.push_back(std::move(vcpu));
    }
    return std::unique_ptr<DirtyTrackingTarget>(std::move(t));
  }

  ~SoftMmuTarget() override {
    tracker_.reset();
    vcpus_.clear();  // before the MMU they hold roots in
  }

  DirtyTracker* tracker() override { return tracker_.get(); }
  absl::Span<const Memslot> slots() const override { return memory_->slots(); }

  absl::Status RunIteration(uint64_t stamp, uint64_t seed) override {
    const std::vector<uint64_t> gpas =
        HostWriterTarget::PagesFor(seed, memory_->slots(), kMaxWrites);
    absl::Mutex mu;
    absl::Status first_error;
    const size_t n = vcpus_.size();
    auto writer = [&](size_t w) {
      for (size_t i = w; i < gpas.size(); i += n) {
        AccessResult r = vcpus_[w]->Write(gpas[i], &stamp, sizeof(stamp));
        if (!r.ok()) {
          absl::MutexLock l(&mu);
          first_error = absl::InternalError(
              absl::StrCat("soft write at gpa ", gpas[i], " faulted"));
          return;
        }
      }
    };
    std::vector<std::thread> threads;
    for (size_t w = 0; w < n; ++w) threads.emplace_back(writer, w);
    // The stop handshake: all writers joined before the suite collects.
    for (std::thread& t : threads) t.join();
    return first_error;
  }

  absl::StatusOr<uint64_t> ReadStamp(uint64_t gpa) override {
    ASSIGN_OR_RETURN(uint8_t * hva, memory_->GpaToHva(gpa, 8));
    // SAFETY: writers are joined; hva maps 8 bytes of a live slot.
    return __atomic_load_n(reinterpret_cast<const uint64_t*>(hva),
                           __ATOMIC_RELAXED);
  }

 private:
  SoftMmuTarget() = default;

  std::unique_ptr<GuestMemory> memory_;
  std::unique_ptr<ShadowMmu> mmu_;
  std::vector<std::unique_ptr<SoftVcpu>> vcpus_;
  std::unique_ptr<SoftDirtyTracker> tracker_;
};

INSTANTIATE_TEST_SUITE_P(
    SoftMmu, TrackerConformanceTest,
    ::testing::Values(
        ConformanceParam{"get_log_one_vcpu",
                         [] {
                           return SoftMmuTarget::Create(
                               false, 1, PagingMode::kDirect);
                         }},
        ConformanceParam{"get_log_three_vcpus",
                         [] {
                           return SoftMmuTarget::Create(
                               false, 3, PagingMode::kDirect);
                         }},
        ConformanceParam{"clear_log_two_vcpus",
                         [] {
                           return SoftMmuTarget::Create(
                               true, 2, PagingMode::kDirect);
                         }}),
    ::ferry::mmu::testing::ConformanceParamName);

}  // namespace
}  // namespace ferry::mmu::softmmu
