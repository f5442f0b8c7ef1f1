// The conformance suite for the three KVM trackers over FakeKvmKernel (a
// model of KVM's dirty-logging state machine): their chunking, ring mapping,
// RING_FULL and Start/Stop logic, end to end, on machines without /dev/kvm.
// kvm_conformance_test.cc runs the same suite against the real kernel.
#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "mmu/kvm/bitmap_tracker.h"
#include "mmu/kvm/clear_log_tracker.h"
#include "mmu/kvm/fake_kvm_kernel.h"
#include "mmu/kvm/ring_tracker.h"
#include "mmu/testing/host_writer_target.h"
#include "mmu/testing/tracker_conformance.h"

namespace ferry::mmu::kvm {
namespace {

using testing::ConformanceParam;
using testing::ConformanceParamName;
using testing::DirtyTrackingTarget;
using testing::HostWriterOptions;
using testing::HostWriterTarget;
using testing::TrackedPath;
using testing::TrackerConformanceTest;

enum class Kind { kBitmap, kClearLogInitiallySet, kClearLogProtected, kRing };

absl::StatusOr<std::unique_ptr<DirtyTrackingTarget>> MakeTarget(Kind kind) {
  HostWriterOptions options;
  options.writers = kind == Kind::kRing ? 2 : 1;
  auto make = [kind, &options](absl::Span<const Memslot> slots)
      -> absl::StatusOr<TrackedPath> {
    FakeKvmKernel::Options ko;
    if (kind == Kind::kClearLogProtected) ko.manual_protect_bits = 1;
    if (kind == Kind::kRing) {
      // 128 entries, soft-full at 64: many KVM_EXIT_DIRTY_RING_FULL exits.
      ko.ring_bytes = 2048;
      ko.num_vcpus = options.writers;
    }
    ASSIGN_OR_RETURN(std::shared_ptr<FakeKvmKernel> kernel,
                     FakeKvmKernel::Create(ko, slots));
    TrackedPath path;
    path.keep_alive = kernel;
    if (kind == Kind::kRing) {
      ASSIGN_OR_RETURN(std::unique_ptr<RingTracker> ring,
                       RingTracker::Create(FakeKvmKernel::Ops(kernel),
                                           kernel->rings()));
      RingTracker* raw = ring.get();
      path.tracker = std::move(ring);
      // The vCPU thread: fault, and on a soft-full ring exit, let the
      // tracker harvest + reset, and only then "re-enter".
      path.hook = [k = kernel.get(), raw](int vcpu, uint64_t gpa) -> absl::Status {
        ASSIGN_OR_RETURN(FakeKvmKernel::WriteResult r, k->GuestWrite(vcpu, gpa));
        if (r == FakeKvmKernel::WriteResult::kRingSoftFull) {
          RETURN_IF_ERROR(raw->OnRingFull(vcpu));
          if (k->RingSoftFull(vcpu)) {
            return absl::InternalError("ring still full after OnRingFull");
          }
        }
        return absl::OkStatus();
      };
      return path;
    }
    path.hook = [k = kernel.get()](int vcpu, uint64_t gpa) {
      return k->GuestWrite(vcpu, gpa).status();
    };
    if (kind == Kind::kBitmap) {
      path.tracker = std::make_unique<BitmapTracker>(FakeKvmKernel::Ops(kernel));
    } else {
      ClearLogTracker::Options co;
      co.chunk_pages = 128;  // small, so runs straddle chunks
      ASSIGN_OR_RETURN(path.tracker,
                       ClearLogTracker::Create(FakeKvmKernel::Ops(kernel), co));
    }
    return path;
  };
  ASSIGN_OR_RETURN(std::unique_ptr<HostWriterTarget> t,
                   HostWriterTarget::Create(options, make));
  return std::unique_ptr<DirtyTrackingTarget>(std::move(t));
}

INSTANTIATE_TEST_SUITE_P(
    FakeKernel, TrackerConformanceTest,
    ::testing::Values(
        ConformanceParam{"bitmap", [] { return MakeTarget(Kind::kBitmap); }},
        ConformanceParam{"clear_log_initially_set",
                         [] { return MakeTarget(Kind::kClearLogInitiallySet); }},
        ConformanceParam{"clear_log_protected",
                         [] { return MakeTarget(Kind::kClearLogProtected); }},
        ConformanceParam{"ring_two_vcpus",
                         [] { return MakeTarget(Kind::kRing); }}),
    ConformanceParamName);

}  // namespace
}  // namespace ferry::mmu::kvm
