#include "agent/vmm/soft/soft_vcpu.h"

#include <time.h>

#include <algorithm>
#include <cstddef>

#include "absl/time/time.h"

namespace ferry::vmm {
namespace {

int64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

}  // namespace

uint64_t SoftClock::Now() const {
  return static_cast<uint64_t>(MonotonicNs() +
                               offset_ns_.load(std::memory_order_relaxed));
}

void SoftClock::Set(uint64_t ticks) {
  offset_ns_.store(static_cast<int64_t>(ticks) - MonotonicNs(),
                   std::memory_order_relaxed);
}

SoftVcpu::SoftVcpu(uint32_t index, SoftMemoryPort* port, const SoftClock* clock)
    : index_(index), port_(port), clock_(clock) {
  ctx_ = wl_ctx{nullptr, 0, Ops(), this};
}

uint64_t SoftVcpu::LoadStatus(size_t offset) const {
  return port_->Load64(index_, FERRY_GUEST_STATUS_GPA_OF(index_) + offset);
}

bool SoftVcpu::GuestRunning() const {
  return LoadStatus(offsetof(ferry_guest_status, state)) ==
         FERRY_VCPU_STATE_RUNNING;
}

absl::StatusOr<VcpuExit> SoftVcpu::Run() {
  for (;;) {
    if (kick_.exchange(false, std::memory_order_acq_rel)) {
      return VcpuExit{VcpuExit::Kind::kKicked};
    }
    if (!events_.empty()) {
      VcpuExit exit = std::move(events_.front());
      events_.pop_front();
      return exit;
    }
    if (needs_init_) {
      needs_init_ = false;
      wl_vcpu_init(&ctx_, index_);  // reports STARTED or FATAL as an event
      continue;
    }
    if (!GuestRunning()) {
      // The payload's park loop: nothing to do until the VMM intervenes.
      WaitUntil(UINT64_MAX);
      continue;
    }
    wl_vcpu_step(&ctx_, index_);
  }
}

void SoftVcpu::Kick() {
  kick_.store(true, std::memory_order_release);
  absl::MutexLock lock(&wait_mu_);
  wait_cv_.SignalAll();
}

void SoftVcpu::WaitUntil(uint64_t deadline) {
  absl::MutexLock lock(&wait_mu_);
  // kick_ is re-checked under wait_mu_, which Kick() takes before it
  // signals, so a kick cannot slip in between the check and the wait.
  while (!kick_.load(std::memory_order_acquire)) {
    const uint64_t now = clock_->Now();
    if (now >= deadline) return;
    const uint64_t ns = std::min<uint64_t>(deadline - now, 1000000000);
    wait_cv_.WaitWithTimeout(&wait_mu_, absl::Nanoseconds(ns));
  }
}

uint64_t SoftVcpu::OpLoad64(void* opaque, uint64_t gpa) {
  auto* self = static_cast<SoftVcpu*>(opaque);
  return self->port_->Load64(self->index_, gpa);
}

void SoftVcpu::OpStore64(void* opaque, uint64_t gpa, uint64_t value) {
  auto* self = static_cast<SoftVcpu*>(opaque);
  self->port_->Store64(self->index_, gpa, value);
}

uint64_t SoftVcpu::OpNow(void* opaque) {
  return static_cast<SoftVcpu*>(opaque)->clock_->Now();
}

void SoftVcpu::OpWaitUntil(void* opaque, uint64_t deadline) {
  static_cast<SoftVcpu*>(opaque)->WaitUntil(deadline);
}

void SoftVcpu::OpEvent(void* opaque, uint64_t /*vcpu*/, uint64_t code,
                       uint64_t arg) {
  VcpuExit exit{VcpuExit::Kind::kGuestEvent};
  exit.event_code = code;
  exit.event_arg = arg;
  static_cast<SoftVcpu*>(opaque)->events_.push_back(std::move(exit));
}

const wl_host_ops* SoftVcpu::Ops() {
  static const wl_host_ops kOps = {&OpLoad64, &OpStore64, &OpNow,
                                   &OpWaitUntil, &OpEvent};
  return &kOps;
}

}  // namespace ferry::vmm
