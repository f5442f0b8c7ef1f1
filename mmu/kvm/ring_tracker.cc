#include "mmu/kvm/ring_tracker.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "mmu/kvm/bitmap_tracker.h"

namespace ferry::mmu::kvm {

// --- RingWindow ---

RingWindow::RingWindow(const SlotTable& table, int num_vcpus)
    : table_(&table), per_vcpu_(num_vcpus, 0) {
  for (const Memslot& s : table.slots()) bits_.emplace_back(s.npages());
}

void RingWindow::Add(int vcpu, const kmod::DirtyGfn& gfn) {
  // The ring's slot packs the address space in bits 16..31; SlotTable only
  // admits address space 0, so IndexOf of a packed value never matches.
  const int idx = table_ == nullptr ? -1 : table_->IndexOf(gfn.slot);
  if (idx < 0 || gfn.offset >= bits_[idx].npages()) {
    if (bad_entries_++ == 0) first_bad_ = gfn;
    return;
  }
  DirtyBitmap& bits = bits_[idx];
  if (bits.Test(gfn.offset)) return;  // already in this window
  bits.Set(gfn.offset);
  added_.emplace_back(idx, gfn.offset);
  if (vcpu >= 0 && static_cast<size_t>(vcpu) < per_vcpu_.size()) {
    ++per_vcpu_[vcpu];
  }
}

void RingWindow::DrainInto(DirtySet* out, CollectStats* stats) {
  for (const auto& [idx, page] : added_) {
    out->entries()[idx].bitmap.Set(page);
    bits_[idx].Clear(page);
  }
  stats->pages = added_.size();
  stats->per_vcpu_pages = per_vcpu_;
  added_.clear();
  per_vcpu_.assign(per_vcpu_.size(), 0);
}

void RingWindow::Discard() {
  for (const auto& [idx, page] : added_) bits_[idx].Clear(page);
  added_.clear();
  per_vcpu_.assign(per_vcpu_.size(), 0);
}

std::string RingWindow::TakeBadEntries() {
  if (bad_entries_ == 0) return "";
  std::string s = absl::StrCat(
      bad_entries_, " ring entr", bad_entries_ == 1 ? "y" : "ies",
      " named no tracked page, first slot=0x", absl::Hex(first_bad_.slot),
      " offset=", first_bad_.offset);
  bad_entries_ = 0;
  return s;
}

// --- RingTracker ---

absl::StatusOr<std::unique_ptr<RingTracker>> RingTracker::Create(
    kmod::VmFd* vm, std::vector<kmod::DirtyRing*> rings) {
  return Create(std::make_unique<KvmVmDirtyOps>(vm), std::move(rings));
}

absl::StatusOr<std::unique_ptr<RingTracker>> RingTracker::Create(
    std::unique_ptr<VmDirtyOps> ops, std::vector<kmod::DirtyRing*> rings) {
  if (ops->dirty_ring_bytes() == 0) {
    return absl::FailedPreconditionError(
        "ring tracker: the VM has no dirty ring; it must be enabled "
        "(VmFd::EnableDirtyRing) before the first vCPU is created");
  }
  if (rings.empty()) {
    return absl::InvalidArgumentError("ring tracker: no vCPU rings given");
  }
  for (size_t i = 0; i < rings.size(); ++i) {
    if (rings[i] == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          "ring tracker: vCPU ", i, " has no dirty ring (created before the "
          "ring was enabled?)"));
    }
  }
  return std::unique_ptr<RingTracker>(
      new RingTracker(std::move(ops), std::move(rings)));
}

absl::Status RingTracker::HarvestAndReset(int vcpu, bool keep) {
  const size_t begin = vcpu < 0 ? 0 : static_cast<size_t>(vcpu);
  const size_t end = vcpu < 0 ? rings_.size() : begin + 1;
  uint64_t harvested = 0;
  for (size_t i = begin; i < end; ++i) {
    harvested += rings_[i]->Harvest([&](const kmod::DirtyGfn& gfn) {
      if (keep) window_.Add(static_cast<int>(i), gfn);
    });
  }
  // Only rings harvested under mu_ carry RESET marks, and every harvest
  // under mu_ ends with this reset, so the other rings contribute zero and
  // "reset == harvested" holds across all of them.
  uint64_t outstanding = 0;
  for (const kmod::DirtyRing* r : rings_) outstanding += r->harvested_since_reset();
  if (outstanding == 0 && harvested == 0) return absl::OkStatus();
  return ops_->ResetDirtyRingsAndCheck(absl::MakeConstSpan(rings_)).status();
}

absl::Status RingTracker::Start(absl::Span<const Memslot> slots) {
  absl::MutexLock l(&mu_);
  if (started_) return absl::FailedPreconditionError("ring tracker: already started");
  ASSIGN_OR_RETURN(SlotTable table, SlotTable::Create(slots, "ring tracker"));
  // Stale entries (an earlier session's tail) are not "written since Start".
  RETURN_IF_ERROR(HarvestAndReset(-1, /*keep=*/false));
  table_ = std::move(table);
  window_ = RingWindow(table_, num_vcpus());
  RETURN_IF_ERROR(EnableLoggingOnAll(ops_.get(), slots));
  started_ = true;
  return absl::OkStatus();
}

absl::StatusOr<CollectStats> RingTracker::Collect(DirtySet* out) {
  absl::MutexLock l(&mu_);
  if (!started_) return absl::FailedPreconditionError("ring tracker: Collect before Start");
  RETURN_IF_ERROR(table_.CheckShape(*out, "ring tracker"));
  const int64_t start = MonotonicNowNs();
  absl::Status reset = HarvestAndReset(-1, /*keep=*/true);
  // Whatever was harvested is consumed on the kernel side: report it even
  // if the reset failed (DirtyLog merges `out` before looking at errors).
  CollectStats stats;
  window_.DrainInto(out, &stats);
  stats.duration_ns = MonotonicNowNs() - start;
  RETURN_IF_ERROR(reset);
  if (std::string bad = window_.TakeBadEntries(); !bad.empty()) {
    return absl::InternalError(absl::StrCat(
        "ring tracker: ", bad, "; is logging on for a slot not given to "
        "Start, or an SMM address space?"));
  }
  return stats;
}

absl::Status RingTracker::OnRingFull(int vcpu) {
  if (vcpu < 0 || vcpu >= num_vcpus()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "ring tracker: OnRingFull for vCPU ", vcpu, " of ", num_vcpus()));
  }
  absl::MutexLock l(&mu_);
  ++ring_full_events_;
  return HarvestAndReset(vcpu, /*keep=*/started_);
}

absl::Status RingTracker::Stop() {
  absl::MutexLock l(&mu_);
  if (!started_) return absl::OkStatus();
  started_ = false;
  // Logging off first: after the memslot update returns no vCPU can push
  // another entry for these slots, so the drain below empties the rings.
  absl::Status off = DisableLoggingOnAll(ops_.get(), table_.slots());
  absl::Status drained = HarvestAndReset(-1, /*keep=*/false);
  window_.Discard();
  (void)window_.TakeBadEntries();
  return off.ok() ? drained : off;
}

uint64_t RingTracker::ring_full_events() const {
  absl::MutexLock l(&mu_);
  return ring_full_events_;
}

uint64_t RingTracker::pending_pages() const {
  absl::MutexLock l(&mu_);
  return window_.pages();
}

}  // namespace ferry::mmu::kvm
