#include "agent/vmm/vm.h"

#include <unistd.h>

#include <cstdio>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "mmu/kvm/ring_tracker.h"

namespace ferry::vmm {
namespace {

// The throttle's timeslice (QEMU: CPU_THROTTLE_TIMESLICE_NS).
constexpr absl::Duration kThrottleTimeslice = absl::Milliseconds(10);

uint64_t PickSeed(uint64_t preferred) {
  if (preferred != 0) return preferred;
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

absl::StatusOr<std::unique_ptr<mmu::GuestMemory>> AllocateMemory(
    uint64_t bytes) {
  ASSIGN_OR_RETURN(mmu::GuestMemoryLayout layout, mmu::DefaultLayout(bytes));
  layout.transparent_hugepages = true;  // a hint; see guest_memory.h
  return mmu::GuestMemory::Create(layout);
}

// The workload core's accessors over GuestMemory, for host-side checks.
uint64_t CheckLoad64(void* opaque, uint64_t gpa) {
  auto* memory = static_cast<const mmu::GuestMemory*>(opaque);
  absl::StatusOr<uint8_t*> hva = memory->GpaToHva(gpa, 8);
  if (!hva.ok()) return 0;  // wl_check_all validated the layout first
  // SAFETY: 8 bytes inside one slot's mapping (GpaToHva checked); vCPUs may
  // write concurrently, hence the atomic load.
  return __atomic_load_n(reinterpret_cast<uint64_t*>(*hva), __ATOMIC_RELAXED);
}
void CheckStore64(void*, uint64_t, uint64_t) {}  // wl_check_all never writes
uint64_t CheckNow(void*) { return 0; }

absl::Status CheckStateHeader(const v1::VmState& state,
                              const mmu::GuestMemory& memory) {
  if (state.version() != v1::VM_STATE_VERSION_1) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VmState.version ", state.version(), " is not supported (this agent "
        "reads version ", v1::VM_STATE_VERSION_1, "); upgrade the agent"));
  }
  if (memory.total_bytes() != state.spec().memory_bytes()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "restore memory holds ", memory.total_bytes(), " bytes but the saved "
        "VM had ", state.spec().memory_bytes(), "; copy the whole guest RAM"));
  }
  return absl::OkStatus();
}

}  // namespace

Vm::Vm(v1::VmSpec spec, GuestConfig config, uint64_t tsc_hz,
       std::unique_ptr<mmu::GuestMemory> memory, Backend& backend,
       const VmOptions& options)
    : spec_(std::move(spec)),
      config_(std::move(config)),
      tsc_hz_(tsc_hz),
      options_(options),
      backend_(backend),
      memory_(std::move(memory)),
      started_unix_ns_(absl::GetCurrentTimeNanos()) {
  pause_requested_ = options.start_paused;
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const v1::VmSpec& spec,
                                               Backend& backend,
                                               const VmOptions& options) {
  RETURN_IF_ERROR(backend.Probe());
  ASSIGN_OR_RETURN(uint32_t max_vcpus, backend.MaxVcpus());
  ASSIGN_OR_RETURN(GuestConfig config,
                   ResolveGuestConfig(spec, max_vcpus,
                                      PickSeed(options.default_seed)));
  ASSIGN_OR_RETURN(uint64_t tsc_hz, backend.GuestTscHz());
  ASSIGN_OR_RETURN(std::unique_ptr<mmu::GuestMemory> memory,
                   AllocateMemory(config.memory_bytes));
  RETURN_IF_ERROR(LoadGuestImage(MakeGuestParams(config, tsc_hz), *memory));
  v1::VmSpec resolved = spec;
  resolved.mutable_workload()->set_seed(config.seed);
  resolved.set_backend(backend.kind());
  std::unique_ptr<Vm> vm(new Vm(std::move(resolved), std::move(config), tsc_hz,
                                std::move(memory), backend, options));
  RETURN_IF_ERROR(vm->Start([](Machine& m) { return m.Boot(); }));
  return vm;
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Restore(
    const v1::VmState& state, std::unique_ptr<mmu::GuestMemory> memory,
    Backend& backend, const VmOptions& options) {
  if (memory == nullptr) {
    return absl::InvalidArgumentError("Vm::Restore: no guest memory given");
  }
  RETURN_IF_ERROR(CheckStateHeader(state, *memory));
  ASSIGN_OR_RETURN(std::unique_ptr<Vm> vm,
                   CreateIncoming(state.spec(), std::move(memory), backend,
                                  options));
  RETURN_IF_ERROR(vm->LoadState(state));
  if (!options.start_paused) RETURN_IF_ERROR(vm->Resume());
  return vm;
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::CreateIncoming(
    const v1::VmSpec& spec, std::unique_ptr<mmu::GuestMemory> memory,
    Backend& backend, const VmOptions& options) {
  if (memory == nullptr) {
    return absl::InvalidArgumentError("Vm::CreateIncoming: no guest memory given");
  }
  RETURN_IF_ERROR(backend.Probe());
  ASSIGN_OR_RETURN(uint32_t max_vcpus, backend.MaxVcpus());
  ASSIGN_OR_RETURN(GuestConfig config,
                   ResolveGuestConfig(spec, max_vcpus,
                                      PickSeed(options.default_seed)));
  if (memory->total_bytes() != config.memory_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "incoming memory holds ", memory->total_bytes(), " bytes but the spec "
        "says ", config.memory_bytes));
  }
  // Until LoadState reads the guest's own (its params page travels with
  // memory), the host's.
  ASSIGN_OR_RETURN(uint64_t tsc_hz, backend.GuestTscHz());
  VmOptions paused = options;
  paused.start_paused = true;
  std::unique_ptr<Vm> vm(new Vm(spec, std::move(config), tsc_hz,
                                std::move(memory), backend, paused));
  {
    absl::MutexLock lock(&vm->mu_);
    vm->loaded_ = false;
  }
  RETURN_IF_ERROR(vm->Start([](Machine&) { return absl::OkStatus(); }));
  return vm;
}

absl::Status Vm::LoadState(const v1::VmState& state) {
  {
    absl::MutexLock lock(&mu_);
    if (loaded_) {
      return absl::FailedPreconditionError(
          "LoadState: only a CreateIncoming shell that was never loaded");
    }
    if (failed_) {
      return absl::FailedPreconditionError(
          absl::StrCat("LoadState: the VM failed (", failure_, ")"));
    }
  }
  RETURN_IF_ERROR(CheckStateHeader(state, *memory_));
  ASSIGN_OR_RETURN(uint32_t max_vcpus, backend_.MaxVcpus());
  ASSIGN_OR_RETURN(GuestConfig config,
                   ResolveGuestConfig(state.spec(), max_vcpus,
                                      PickSeed(options_.default_seed)));
  if (config.vcpu_count != config_.vcpu_count ||
      config.memory_bytes != config_.memory_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "LoadState: the state is for ", config.vcpu_count, " vCPUs / ",
        config.memory_bytes, " bytes, the shell has ", config_.vcpu_count,
        " / ", config_.memory_bytes));
  }
  // The params page travelled with memory; its tsc_hz is the guest's.
  ferry_guest_params params;
  RETURN_IF_ERROR(memory_->Read(
      FERRY_GUEST_PARAMS_GPA,
      absl::MakeSpan(reinterpret_cast<uint8_t*>(&params), sizeof(params))));
  // The vCPU threads are parked and never ran: nobody else touches the
  // machine, spec or config until loaded_ is set.
  RETURN_IF_ERROR(machine_->Restore(state));
  spec_ = state.spec();
  config_ = std::move(config);
  tsc_hz_ = params.tsc_hz;
  if (state.has_started_time()) {
    started_unix_ns_ = state.started_time().seconds() * 1000000000 +
                       state.started_time().nanos();
  }
  absl::MutexLock lock(&mu_);
  loaded_ = true;
  return absl::OkStatus();
}

absl::Status Vm::Start(const std::function<absl::Status(Machine&)>& init) {
  ASSIGN_OR_RETURN(machine_, backend_.CreateMachine(config_, *memory_));
  RETURN_IF_ERROR(init(*machine_));
  threads_.reserve(config_.vcpu_count);
  throttle_tick_.reset(new std::atomic<bool>[config_.vcpu_count]);
  for (uint32_t i = 0; i < config_.vcpu_count; ++i) throttle_tick_[i] = false;
  for (uint32_t i = 0; i < config_.vcpu_count; ++i) {
    threads_.emplace_back([this, i] { VcpuLoop(i); });
  }
  return absl::OkStatus();
}

Vm::~Vm() { StopThreads(); }

void Vm::StopThreads() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  KickAll();
  for (std::thread& t : threads_) t.join();
  if (throttle_thread_.joinable()) throttle_thread_.join();
  threads_.clear();
}

absl::Status Vm::SetThrottle(uint32_t percent) {
  if (percent > 99) {
    return absl::InvalidArgumentError(
        absl::StrCat("SetThrottle: ", percent, "% is outside 0-99"));
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::FailedPreconditionError("SetThrottle: VM stopping");
  throttle_percent_ = percent;
  if (percent > 0 && !throttle_thread_.joinable()) {
    throttle_thread_ = std::thread([this] { ThrottleLoop(); });
  }
  return absl::OkStatus();
}

uint32_t Vm::throttle_percent() const {
  absl::MutexLock lock(&mu_);
  return throttle_percent_;
}

void Vm::ThrottleLoop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Vm* vm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(vm->mu_) {
            return vm->stopping_ || vm->throttle_percent_ > 0;
          },
          this));
      if (stopping_) return;
    }
    // One timeslice: every vCPU sleeps its share once, out of the guest.
    for (size_t i = 0; i < threads_.size(); ++i) {
      throttle_tick_[i].store(true, std::memory_order_release);
    }
    KickAll();
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), kThrottleTimeslice);
    if (stopping_) return;
  }
}

void Vm::ThrottleSleep(uint32_t index) {
  if (!throttle_tick_[index].exchange(false, std::memory_order_acq_rel)) return;
  absl::MutexLock lock(&mu_);
  const uint32_t percent = throttle_percent_;
  if (percent == 0 || !Runnable()) return;
  ++throttle_sleeps_;
  struct Wake {
    Vm* vm;
    uint32_t percent;
  } wake{this, percent};
  // Ends early for a pause, a stop or a new setting.
  mu_.AwaitWithTimeout(
      absl::Condition(
          +[](Wake* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->vm->mu_) {
            return !w->vm->Runnable() || w->vm->throttle_percent_ != w->percent;
          },
          &wake),
      kThrottleTimeslice * percent / 100);
}

void Vm::KickAll() {
  for (size_t i = 0; i < threads_.size(); ++i) machine_->vcpu(i).Kick();
}

bool Vm::Runnable() const {
  return !stopping_ && !pause_requested_ && !failed_;
}

void Vm::VcpuLoop(uint32_t index) {
  Vcpu& vcpu = machine_->vcpu(index);
  vcpu.BindToCurrentThread();
  while (WaitUntilRunnable(vcpu)) {
    ThrottleSleep(index);
    absl::StatusOr<VcpuExit> exit = vcpu.Run();
    if (!exit.ok()) {
      Fail(absl::StrCat("vCPU ", index, ": ", exit.status().ToString()));
      continue;
    }
    HandleExit(index, *exit);
  }
}

bool Vm::WaitUntilRunnable(Vcpu& vcpu) {
  {
    absl::MutexLock lock(&mu_);
    if (Runnable()) return true;
  }
  // Outside the lock: this may enter the kernel (KVM_RUN, immediate_exit).
  absl::Status quiesced = vcpu.Quiesce();
  if (!quiesced.ok()) {
    Fail(absl::StrCat("vCPU ", vcpu.index(), ": ", quiesced.ToString()));
  }
  absl::MutexLock lock(&mu_);
  ++parked_;
  mu_.Await(absl::Condition(
      +[](Vm* vm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(vm->mu_) {
        return vm->stopping_ || vm->Runnable();
      },
      this));
  --parked_;
  return !stopping_;
}

void Vm::HandleExit(uint32_t index, const VcpuExit& exit) {
  switch (exit.kind) {
    case VcpuExit::Kind::kKicked:
      return;  // the loop re-checks the flags
    case VcpuExit::Kind::kGuestEvent: {
      {
        absl::MutexLock lock(&mu_);
        ++guest_events_;
      }
      if (exit.event_code == FERRY_GUEST_EVENT_FATAL) {
        Fail(absl::StrCat("guest vCPU ", index, " stopped itself: fatal code ",
                          exit.event_arg, " (FERRY_GUEST_FATAL_*, abi.h)"));
      }
      return;
    }
    case VcpuExit::Kind::kDirtyRingFull: {
      {
        absl::MutexLock lock(&mu_);
        ++ring_full_exits_;
      }
      absl::Status s;
      {
        absl::ReaderMutexLock lock(&ring_mu_);
        s = ring_full_handler_ ? ring_full_handler_(index)
                               : absl::FailedPreconditionError(
                                     "dirty ring full but no tracker harvests "
                                     "it; track with mode ring");
      }
      if (!s.ok()) Fail(absl::StrCat("vCPU ", index, ": ", s.ToString()));
      return;
    }
    case VcpuExit::Kind::kShutdown:
      Fail(absl::StrCat("vCPU ", index, ": ", exit.detail));
      return;
  }
}

void Vm::Fail(const std::string& message) {
  {
    absl::MutexLock lock(&mu_);
    if (failed_) return;
    failed_ = true;
    failure_ = message;
  }
  std::fprintf(stderr, "ferry vmm: VM %s failed: %s\n", spec_.name().c_str(),
               message.c_str());
  KickAll();  // the other vCPUs park
}

absl::Status Vm::Pause() {
  {
    absl::MutexLock lock(&mu_);
    pause_requested_ = true;
  }
  KickAll();
  absl::MutexLock lock(&mu_);
  const uint32_t n = static_cast<uint32_t>(threads_.size());
  auto all_parked = [this, n]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return parked_ == n;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&all_parked),
                            options_.pause_timeout)) {
    return absl::DeadlineExceededError(absl::StrCat(
        "Pause: only ", parked_, " of ", n, " vCPUs parked within ",
        absl::FormatDuration(options_.pause_timeout)));
  }
  ++pause_count_;
  return absl::OkStatus();
}

absl::Status Vm::Resume() {
  absl::MutexLock lock(&mu_);
  if (failed_) {
    return absl::FailedPreconditionError(
        absl::StrCat("Resume: the VM failed (", failure_, "); destroy it"));
  }
  if (!loaded_) {
    return absl::FailedPreconditionError(
        "Resume: an incoming VM shell has no state yet; LoadState first");
  }
  pause_requested_ = false;
  return absl::OkStatus();
}

absl::StatusOr<v1::VmState> Vm::Save() {
  {
    absl::MutexLock lock(&mu_);
    if (!pause_requested_ || parked_ != threads_.size()) {
      return absl::FailedPreconditionError(
          "Save: the VM is running; Pause() it first");
    }
  }
  v1::VmState state;
  state.set_version(v1::VM_STATE_VERSION_1);
  *state.mutable_spec() = spec_;
  state.mutable_memory()->set_page_size_bytes(mmu::kPageSize);
  for (const mmu::Memslot& s : memory_->slots()) {
    v1::Memslot* m = state.mutable_memory()->add_memslots();
    m->set_slot_id(s.slot);
    m->set_gpa(s.gpa);
    m->set_size_bytes(s.size);
    m->set_name("ram");
  }
  RETURN_IF_ERROR(machine_->Save(&state));
  GuestTotals totals = ReadGuestTotals(*memory_, config_.vcpu_count);
  state.mutable_guest()->set_iterations(totals.iterations);
  state.mutable_guest()->set_pages_written(totals.pages_written);
  state.mutable_guest()->set_pages_verified(totals.pages_verified);
  state.set_selfcheck_errors(totals.selfcheck_errors);
  const int64_t now = absl::GetCurrentTimeNanos();
  state.mutable_started_time()->set_seconds(started_unix_ns_ / 1000000000);
  state.mutable_started_time()->set_nanos(started_unix_ns_ % 1000000000);
  state.mutable_saved_time()->set_seconds(now / 1000000000);
  state.mutable_saved_time()->set_nanos(now % 1000000000);
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) == 0) state.set_saved_on_host(host);
  return state;
}

absl::StatusOr<wl_check_result> Vm::CheckGuestMemory() const {
  static const wl_host_ops kOps = {CheckLoad64, CheckStore64, CheckNow,
                                   nullptr, nullptr};
  wl_ctx ctx{nullptr, 0, &kOps, const_cast<mmu::GuestMemory*>(memory_.get())};
  wl_check_result result{};
  const uint64_t code = wl_check_all(&ctx, &result);
  if (code != FERRY_GUEST_FATAL_NONE) {
    return absl::DataLossError(absl::StrCat(
        "guest params page is not trustworthy (FERRY_GUEST_FATAL ", code, ")"));
  }
  return result;
}

v1::VmPhase Vm::phase() const {
  absl::MutexLock lock(&mu_);
  if (failed_) return v1::VM_PHASE_FAILED;
  if (stopping_) return v1::VM_PHASE_DELETING;
  if (pause_requested_) return v1::VM_PHASE_PAUSED;
  return v1::VM_PHASE_RUNNING;
}

VmStats Vm::Stats() const {
  VmStats stats;
  stats.phase = phase();
  stats.backend = std::string(backend_.name());
  stats.guest = ReadGuestTotals(*memory_, config_.vcpu_count);
  absl::MutexLock lock(&mu_);
  stats.message = failure_;
  stats.guest_events = guest_events_;
  stats.ring_full_exits = ring_full_exits_;
  stats.pause_count = pause_count_;
  stats.throttle_percent = throttle_percent_;
  stats.throttle_sleeps = throttle_sleeps_;
  return stats;
}

namespace {

// A ring tracker that, while it lives, is where the Vm sends the vCPUs'
// KVM_EXIT_DIRTY_RING_FULL. Forwards the whole DirtyTracker interface.
class RingTrackerLease : public mmu::DirtyTracker {
 public:
  RingTrackerLease(std::unique_ptr<mmu::DirtyTracker> inner, Vm* vm)
      : inner_(std::move(inner)), vm_(vm) {
    mmu::kvm::RingTracker* ring = mmu::kvm::AsRingTracker(inner_.get());
    vm_->SetRingFullHandler([ring](uint32_t vcpu) {
      return ring->OnRingFull(static_cast<int>(vcpu));
    });
  }
  ~RingTrackerLease() override {
    vm_->SetRingFullHandler(nullptr);  // waits out a running handler
  }

  mmu::DirtyTrackingMode mode() const override { return inner_->mode(); }
  absl::Status Start(absl::Span<const mmu::Memslot> slots) override {
    return inner_->Start(slots);
  }
  absl::StatusOr<mmu::CollectStats> Collect(mmu::DirtySet* out) override {
    return inner_->Collect(out);
  }
  bool needs_reprotect() const override { return inner_->needs_reprotect(); }
  absl::Status Reprotect(uint32_t slot, uint64_t first_page,
                         uint64_t npages) override {
    return inner_->Reprotect(slot, first_page, npages);
  }
  absl::Status ReprotectRuns(absl::Span<const mmu::PageRun> runs) override {
    return inner_->ReprotectRuns(runs);
  }
  bool has_per_vcpu_counts() const override {
    return inner_->has_per_vcpu_counts();
  }
  absl::Status Stop() override { return inner_->Stop(); }

 private:
  std::unique_ptr<mmu::DirtyTracker> inner_;
  Vm* const vm_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>> Vm::CreateDirtyTracker(
    mmu::DirtyTrackingMode mode) {
  ASSIGN_OR_RETURN(std::unique_ptr<mmu::DirtyTracker> tracker,
                   machine_->CreateDirtyTracker(mode));
  if (mmu::kvm::AsRingTracker(tracker.get()) == nullptr) return tracker;
  return std::unique_ptr<mmu::DirtyTracker>(
      new RingTrackerLease(std::move(tracker), this));
}

void Vm::SetRingFullHandler(RingFullHandler handler) {
  absl::WriterMutexLock lock(&ring_mu_);
  ring_full_handler_ = std::move(handler);
}

absl::string_view VcpuExitKindName(VcpuExit::Kind kind) {
  switch (kind) {
    case VcpuExit::Kind::kKicked:
      return "kicked";
    case VcpuExit::Kind::kGuestEvent:
      return "guest-event";
    case VcpuExit::Kind::kDirtyRingFull:
      return "dirty-ring-full";
    case VcpuExit::Kind::kShutdown:
      return "shutdown";
  }
  return "unknown";
}

}  // namespace ferry::vmm
