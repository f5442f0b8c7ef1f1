// FakeDirtyTracker (testonly): a DirtyTracker that reports the pages a test
// tells it were written, with KVM's two bitmap semantics and fault
// injection. Not for production: nothing here write-protects anything.
//
//   kClassic        Collect hands over and clears (KVM_GET_DIRTY_LOG).
//   kManualProtect  Collect copies but keeps the bits; Reprotect clears
//                   them (KVM_CAP_MANUAL_DIRTY_LOG_PROTECT2 + CLEAR).
#ifndef FERRY_MMU_FAKE_DIRTY_TRACKER_H_
#define FERRY_MMU_FAKE_DIRTY_TRACKER_H_

#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "mmu/dirty_tracker.h"

namespace ferry::mmu {

class FakeDirtyTracker : public DirtyTracker {
 public:
  enum class Semantics { kClassic, kManualProtect };

  // num_vcpus > 0 turns on per-vCPU counts.
  explicit FakeDirtyTracker(Semantics semantics = Semantics::kClassic,
                            int num_vcpus = 0);

  // "The guest wrote": marks pages; ignored (as by KVM) before Start.
  // `vcpu` is counted when per-vCPU counts are on.
  absl::Status Dirty(uint32_t slot, uint64_t page, int vcpu = 0);
  absl::Status DirtyGpa(uint64_t gpa, uint64_t len, int vcpu = 0);

  // The next call fails with `status`. For Collect, the failure happens
  // after half the slots were consumed, like a partial harvest.
  void FailNextCollect(absl::Status status);
  void FailNextReprotect(absl::Status status);

  std::vector<PageRun> reprotected() const;
  int collect_calls() const;
  bool started() const;

  // DirtyTracker
  DirtyTrackingMode mode() const override { return DirtyTrackingMode::kFake; }
  absl::Status Start(absl::Span<const Memslot> slots) override;
  absl::StatusOr<CollectStats> Collect(DirtySet* out) override;
  bool needs_reprotect() const override {
    return semantics_ == Semantics::kManualProtect;
  }
  absl::Status Reprotect(uint32_t slot, uint64_t first_page,
                         uint64_t npages) override;
  bool has_per_vcpu_counts() const override { return num_vcpus_ > 0; }
  absl::Status Stop() override;

 private:
  const Semantics semantics_;
  const int num_vcpus_;
  mutable absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  DirtySet log_ ABSL_GUARDED_BY(mu_);  // the "kernel" bitmaps
  std::vector<uint64_t> per_vcpu_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_collect_ ABSL_GUARDED_BY(mu_);
  absl::Status fail_reprotect_ ABSL_GUARDED_BY(mu_);
  std::vector<PageRun> reprotected_ ABSL_GUARDED_BY(mu_);
  int collect_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace ferry::mmu

#endif  // FERRY_MMU_FAKE_DIRTY_TRACKER_H_
