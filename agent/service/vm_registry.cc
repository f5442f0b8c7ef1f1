#include "agent/service/vm_registry.h"

#include <algorithm>
#include <atomic>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "agent/service/log.h"
#include "agent/service/proto_util.h"
#include "agent/vmm/guest_config.h"
#include "common/status_macros.h"
#include "mmu/dirty_rate.h"
#include "mmu/dirty_set.h"
#include "mmu/dirty_tracker.h"

namespace ferry::service {
namespace {

constexpr size_t kMaxNameLength = 63;

std::string Bytes(uint64_t n) {
  if (n >= (uint64_t{1} << 30) && n % (uint64_t{1} << 30) == 0) {
    return absl::StrCat(n >> 30, " GiB");
  }
  if (n >= (uint64_t{1} << 20) && n % (uint64_t{1} << 20) == 0) {
    return absl::StrCat(n >> 20, " MiB");
  }
  return absl::StrCat(n, " bytes");
}

}  // namespace

absl::Status ValidateVmName(absl::string_view name) {
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "VM name \"", absl::CHexEscape(name), "\" is not a DNS label: ", why,
        " (use 1-63 characters of [a-z0-9-], starting and ending with a "
        "letter or digit)"));
  };
  if (name.empty()) return bad("it is empty");
  if (name.size() > kMaxNameLength) {
    return bad(absl::StrCat("it has ", name.size(), " characters"));
  }
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return bad(absl::StrFormat("character '%s' is not allowed",
                                 absl::CHexEscape(std::string(1, c))));
    }
  }
  if (name.front() == '-' || name.back() == '-') {
    return bad("it starts or ends with '-'");
  }
  return absl::OkStatus();
}

v1::DirtyTrackingMode ToProtoTrackingMode(mmu::DirtyTrackingMode mode) {
  switch (mode) {
    case mmu::DirtyTrackingMode::kBitmap:
      return v1::DIRTY_TRACKING_MODE_BITMAP;
    case mmu::DirtyTrackingMode::kClearLog:
      return v1::DIRTY_TRACKING_MODE_CLEAR_LOG;
    case mmu::DirtyTrackingMode::kRing:
      return v1::DIRTY_TRACKING_MODE_RING;
    case mmu::DirtyTrackingMode::kSoftMmu:
    case mmu::DirtyTrackingMode::kFake:  // the soft backend's stand-in port
      return v1::DIRTY_TRACKING_MODE_SOFTMMU;
    case mmu::DirtyTrackingMode::kUnspecified:
      break;
  }
  return v1::DIRTY_TRACKING_MODE_OFF;
}

struct VmRegistry::Entry {
  Entry(std::string name_in, std::string uid_in, v1::VmSpec spec_in,
        uint64_t memory, uint32_t vcpus, State state_in)
      : name(std::move(name_in)),
        uid(std::move(uid_in)),
        spec(std::move(spec_in)),
        memory_bytes(memory),
        vcpu_count(vcpus),
        create_time(absl::Now()),
        state(state_in) {}

  const std::string name;
  const std::string uid;
  const v1::VmSpec spec;  // as requested
  const uint64_t memory_bytes;
  const uint32_t vcpu_count;
  const absl::Time create_time;

  absl::Mutex op_mu;  // serializes control calls on vm (see the header)

  absl::Mutex sample_mu;
  std::unique_ptr<VmDirtySampler> sampler ABSL_GUARDED_BY(sample_mu);

  mutable absl::Mutex mu;
  State state ABSL_GUARDED_BY(mu);
  std::shared_ptr<vmm::Vm> vm ABSL_GUARDED_BY(mu);
  std::string migration_id ABSL_GUARDED_BY(mu);
  ExactDirtyStatsProvider exact ABSL_GUARDED_BY(mu);
  absl::Time started_time ABSL_GUARDED_BY(mu) = absl::InfinitePast();

  // The registry's own ring tracker for per-vCPU rates (StartVcpuRing).
  // Declared after `vm` so that it is destroyed first: the tracker's lease
  // unhooks itself from the Vm when it dies.
  struct VcpuRing {
    std::unique_ptr<mmu::DirtyTracker> tracker;
    mmu::DirtySet scratch;  // Collect's output; only the counts are used
    std::unique_ptr<mmu::DirtyRateMeter> meter;
  };
  std::unique_ptr<VcpuRing> vcpu_ring ABSL_GUARDED_BY(sample_mu);
  // This VM has no ring (not KVM, or created without it) or it failed once:
  // do not try again every sample.
  bool vcpu_ring_unavailable ABSL_GUARDED_BY(sample_mu) = false;
  // The newest interval's pages/s per vCPU; empty = not known.
  std::vector<double> vcpu_pages_per_sec ABSL_GUARDED_BY(sample_mu);

  // Latest rate for VmStatus, written by the sampler.
  std::atomic<uint64_t> last_rate_bytes_per_s{0};
  std::atomic<int> last_exact_mode{0};  // mmu::DirtyTrackingMode; 0 = none
};

VmRegistry::VmRegistry(BackendSet backends, RegistryOptions options)
    : backends_(std::move(backends)), options_(std::move(options)) {
  if (options_.sample_interval > absl::ZeroDuration()) {
    sampler_ = std::thread([this] { SamplerLoop(); });
  }
}

VmRegistry::~VmRegistry() { Shutdown(); }

absl::StatusOr<vmm::Backend*> VmRegistry::ResolveBackend(
    v1::VmBackend requested) const {
  switch (requested) {
    case v1::VM_BACKEND_UNSPECIFIED:
    case v1::VM_BACKEND_AUTO:
      if (backends_.preferred == v1::VM_BACKEND_KVM && backends_.kvm) {
        return backends_.kvm;
      }
      if (backends_.soft) return backends_.soft;
      if (backends_.kvm) return backends_.kvm;
      return absl::FailedPreconditionError(
          "this agent has no usable backend");
    case v1::VM_BACKEND_KVM:
      if (backends_.kvm) return backends_.kvm;
      return absl::FailedPreconditionError(absl::StrCat(
          "this host cannot run KVM VMs (", backends_.kvm_status.ToString(),
          "); ask for backend SOFT or AUTO, or place the VM elsewhere"));
    case v1::VM_BACKEND_SOFT:
      if (backends_.soft) return backends_.soft;
      return absl::FailedPreconditionError(
          "the soft backend is disabled on this agent (--backend=kvm); ask "
          "for backend KVM or AUTO");
    default:
      return absl::InvalidArgumentError(absl::StrCat(
          "spec.backend ", static_cast<int>(requested),
          " is not a VmBackend value"));
  }
}

absl::StatusOr<vmm::Backend*> VmRegistry::CheckSpec(
    const v1::VmSpec& spec) const {
  RETURN_IF_ERROR(ValidateVmName(spec.name()));
  ASSIGN_OR_RETURN(vmm::Backend * backend, ResolveBackend(spec.backend()));
  ASSIGN_OR_RETURN(uint32_t max_vcpus, backend->MaxVcpus());
  // The VMM's own validation, run before anything is reserved (nothing is
  // allocated by it). The seed does not matter here.
  RETURN_IF_ERROR(vmm::ResolveGuestConfig(spec, max_vcpus, 1).status());
  return backend;
}

v1::HostResources VmRegistry::Allocated() const {
  absl::MutexLock lock(&mu_);
  v1::HostResources r;
  for (const auto& [name, e] : vms_) {
    r.set_memory_bytes(r.memory_bytes() + e->memory_bytes);
    r.set_vcpus(r.vcpus() + e->vcpu_count);
    r.set_vms(r.vms() + 1);
  }
  return r;
}

absl::Status VmRegistry::CheckCapacity(const v1::VmSpec& spec) const {
  uint64_t memory = 0;
  uint32_t vcpus = 0;
  for (const auto& [name, e] : vms_) {
    memory += e->memory_bytes;
    vcpus += e->vcpu_count;
  }
  const HostCapacity& cap = options_.capacity;
  const uint64_t free_memory = cap.memory_bytes - std::min(memory, cap.memory_bytes);
  const uint32_t free_vcpus = cap.vcpus - std::min(vcpus, cap.vcpus);
  if (spec.memory_bytes() > free_memory) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "VM \"", spec.name(), "\" needs ", Bytes(spec.memory_bytes()),
        " of memory but this host has only ", Bytes(free_memory), " free (",
        "capacity ", Bytes(cap.memory_bytes), ", ", Bytes(memory),
        " allocated to ", vms_.size(), " VMs); place it on another host or "
        "raise --memory_capacity"));
  }
  if (spec.vcpu_count() > free_vcpus) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "VM \"", spec.name(), "\" needs ", spec.vcpu_count(),
        " vCPUs but this host has only ", free_vcpus, " free (capacity ",
        cap.vcpus, ", ", vcpus, " allocated to ", vms_.size(),
        " VMs); place it on another host or raise --vcpu_capacity"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<VmRegistry::Entry>> VmRegistry::Insert(
    const v1::VmSpec& spec, const std::string& uid, State state) {
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("the agent is shutting down");
  if (vms_.count(spec.name()) != 0) {
    return absl::AlreadyExistsError(absl::StrCat(
        "a VM named \"", spec.name(), "\" already exists on this host; "
        "delete it first or pick another name"));
  }
  RETURN_IF_ERROR(CheckCapacity(spec));
  auto entry = std::make_shared<Entry>(spec.name(), uid, spec,
                                       spec.memory_bytes(), spec.vcpu_count(),
                                       state);
  vms_.emplace(spec.name(), entry);
  return entry;
}

void VmRegistry::Erase(const std::shared_ptr<Entry>& entry) {
  absl::MutexLock lock(&mu_);
  auto it = vms_.find(entry->name);
  if (it != vms_.end() && it->second == entry) vms_.erase(it);
}

absl::StatusOr<std::shared_ptr<VmRegistry::Entry>> VmRegistry::Find(
    absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = vms_.find(name);
  if (it == vms_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "no VM named \"", absl::CHexEscape(name), "\" on this host"));
  }
  return it->second;
}

absl::StatusOr<v1::Vm> VmRegistry::Create(const v1::VmSpec& spec,
                                          const std::string& uid_in) {
  ASSIGN_OR_RETURN(vmm::Backend * backend, CheckSpec(spec));
  // A retried create (same name and uid) gets the VM it already made.
  if (!uid_in.empty()) {
    absl::StatusOr<std::shared_ptr<Entry>> existing = Find(spec.name());
    if (existing.ok() && (*existing)->uid == uid_in) {
      return ToProto(**existing);
    }
  }
  const std::string uid = uid_in.empty() ? RandomHexId() : uid_in;
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry,
                   Insert(spec, uid, State::kCreating));

  absl::StatusOr<std::unique_ptr<vmm::Vm>> vm =
      vmm::Vm::Create(spec, *backend, options_.vm_options);
  if (!vm.ok()) {
    Erase(entry);
    LogWarning("create VM ", spec.name(), " failed: ", vm.status().ToString());
    return absl::Status(vm.status().code(),
                        absl::StrCat("create VM \"", spec.name(),
                                     "\": ", vm.status().message()));
  }
  LogInfo("VM ", spec.name(), " created: backend=", backend->name(),
          " memory=", Bytes(spec.memory_bytes()), " vcpus=", spec.vcpu_count(),
          " workload=", v1::WorkloadKind_Name(spec.workload().kind()),
          " seed=", (*vm)->spec().workload().seed(), " uid=", uid);
  {
    absl::MutexLock lock(&entry->mu);
    entry->vm = std::move(*vm);
    entry->started_time = absl::Now();
    entry->state = State::kActive;
  }
  StartSampling(*entry);
  bool shut_down;
  {
    absl::MutexLock lock(&mu_);
    shut_down = shut_down_;
  }
  if (shut_down) {  // Shutdown() ran while we were creating: do not leak.
    absl::MutexLock op(&entry->op_mu);
    DetachVm(*entry).reset();
    return absl::UnavailableError("the agent is shutting down");
  }
  return ToProto(*entry);
}

absl::StatusOr<v1::Vm> VmRegistry::Get(absl::string_view name) const {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  return ToProto(*entry);
}

std::vector<v1::Vm> VmRegistry::List() const {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, e] : vms_) entries.push_back(e);
  }
  std::vector<v1::Vm> out;
  out.reserve(entries.size());
  for (const auto& e : entries) out.push_back(ToProto(*e));
  return out;
}

absl::string_view VmRegistry::StateWord(State state) {
  switch (state) {
    case State::kCreating: return "still being created";
    case State::kIncoming: return "an incoming migration's shell";
    case State::kMigrated:
      return "migrated away (this copy only waits to be deleted)";
    case State::kDeleting: return "being deleted";
    case State::kActive: break;
  }
  return "active";
}

// The VM of an active entry not under migration, for a user operation
// (`verb`: pause, resume); FAILED_PRECONDITION saying why not otherwise.
absl::StatusOr<std::shared_ptr<vmm::Vm>> VmRegistry::ActiveVm(
    Entry& entry, absl::string_view verb) {
  absl::MutexLock lock(&entry.mu);
  if (!entry.migration_id.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VM \"", entry.name, "\" is being migrated (migration ",
        entry.migration_id, "); cancel the migration first"));
  }
  if (entry.state != State::kActive || entry.vm == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot ", verb, " VM \"", entry.name, "\": it is ",
        StateWord(entry.state)));
  }
  return entry.vm;
}

absl::StatusOr<v1::Vm> VmRegistry::Pause(absl::string_view name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock op(&entry->op_mu);
  ASSIGN_OR_RETURN(std::shared_ptr<vmm::Vm> vm, ActiveVm(*entry, "pause"));
  vmm::VmStats stats = vm->Stats();
  if (stats.phase == v1::VM_PHASE_FAILED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot pause VM \"", entry->name, "\": it failed (", stats.message,
        "); delete it"));
  }
  RETURN_IF_ERROR(vm->Pause());
  if (stats.phase != v1::VM_PHASE_PAUSED) LogInfo("VM ", entry->name, " paused");
  return ToProto(*entry);
}

absl::StatusOr<v1::Vm> VmRegistry::Resume(absl::string_view name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock op(&entry->op_mu);
  ASSIGN_OR_RETURN(std::shared_ptr<vmm::Vm> vm, ActiveVm(*entry, "resume"));
  const v1::VmPhase before = vm->phase();
  RETURN_IF_ERROR(vm->Resume());  // FAILED_PRECONDITION for a failed VM
  if (before != v1::VM_PHASE_RUNNING) LogInfo("VM ", entry->name, " resumed");
  return ToProto(*entry);
}

std::shared_ptr<vmm::Vm> VmRegistry::DetachVm(Entry& entry) {
  absl::MutexLock sample(&entry.sample_mu);
  StopVcpuRing(entry);
  entry.sampler.reset();  // before the memory it reads goes away
  absl::MutexLock lock(&entry.mu);
  return std::move(entry.vm);
}

namespace {

// Parks the vCPUs, then drops our reference: whoever else still holds the
// Vm (a migration engine) holds a paused copy, never a running one.
void StopAndDrop(const std::string& name, std::shared_ptr<vmm::Vm> vm) {
  if (vm == nullptr) return;
  absl::Status paused = vm->Pause();
  if (!paused.ok()) {
    LogWarning("VM ", name, ": pause before destroy: ", paused.ToString());
  }
  if (vm.use_count() > 1) {
    LogWarning("VM ", name, " is still referenced by ", vm.use_count() - 1,
               " holder(s) (migration engine); it stays paused until they "
               "drop it");
  }
  vm.reset();
}

}  // namespace

absl::Status VmRegistry::Delete(absl::string_view name, bool force) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock op(&entry->op_mu);
  {
    absl::MutexLock lock(&entry->mu);
    if (entry->state == State::kCreating) {
      return absl::FailedPreconditionError(absl::StrCat(
          "VM \"", entry->name, "\" is still being created; retry shortly"));
    }
    if (entry->state == State::kDeleting) {  // a concurrent Delete won
      return absl::NotFoundError(
          absl::StrCat("no VM named \"", entry->name, "\" on this host"));
    }
    if (!entry->migration_id.empty() && !force) {
      return absl::FailedPreconditionError(absl::StrCat(
          "VM \"", entry->name, "\" is being migrated (migration ",
          entry->migration_id, "); cancel it first or delete with force"));
    }
    entry->state = State::kDeleting;
  }
  StopAndDrop(entry->name, DetachVm(*entry));
  Erase(entry);
  LogInfo("VM ", entry->name, " deleted", force ? " (forced)" : "");
  return absl::OkStatus();
}

absl::StatusOr<std::string> VmRegistry::MigrationOf(
    absl::string_view name) const {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock lock(&entry->mu);
  return entry->migration_id;
}

absl::StatusOr<v1::VmStats> VmRegistry::GetStats(absl::string_view name,
                                                 absl::Duration window) const {
  if (window < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("window must not be negative");
  }
  if (window == absl::ZeroDuration()) window = absl::Seconds(1);
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  vmm::VmStats vm_stats;
  ExactDirtyStatsProvider exact;
  {
    absl::MutexLock lock(&entry->mu);
    if (entry->vm == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "VM \"", entry->name, "\" has no running guest yet (it is ",
          entry->state == State::kCreating ? "being created" : "incoming",
          ")"));
    }
    vm_stats = entry->vm->Stats();
    exact = entry->exact;
  }
  v1::VmStats out;
  out.set_name(entry->name);
  // Outside every lock: the provider belongs to the engine.
  std::optional<ExactDirtyStats> exact_stats;
  if (exact) exact_stats = exact();
  if (exact_stats.has_value()) {
    const mmu::DirtyRate& r = exact_stats->rate;
    out.set_tracking_mode(ToProtoTrackingMode(exact_stats->mode));
    ToProtoDuration(absl::Nanoseconds(r.window_ns), out.mutable_window());
    ToProtoTime(absl::Now(), out.mutable_sample_time());
    out.set_dirty_rate_pages_per_s(static_cast<uint64_t>(r.pages_per_sec));
    out.set_dirty_rate_bytes_per_s(static_cast<uint64_t>(r.bytes_per_sec));
    for (size_t i = 0; i < r.per_vcpu_pages_per_sec.size(); ++i) {
      v1::VcpuDirtyRate* v = out.add_vcpus();
      v->set_vcpu_index(static_cast<uint32_t>(i));
      v->set_dirty_rate_pages_per_s(
          static_cast<uint64_t>(r.per_vcpu_pages_per_sec[i]));
    }
    out.set_working_set_bytes(exact_stats->working_set_bytes);
  } else {
    // Page sampling: no dirty logging runs, hence OFF (see the report's
    // request for a DIRTY_TRACKING_MODE_SAMPLING value in vm.proto).
    out.set_tracking_mode(v1::DIRTY_TRACKING_MODE_OFF);
    DirtyEstimate e;
    std::vector<double> per_vcpu;
    {
      absl::MutexLock sample(&entry->sample_mu);
      if (entry->sampler) e = entry->sampler->Estimate(window);
      per_vcpu = entry->vcpu_pages_per_sec;
    }
    // The ring's newest interval (not averaged over `window`): present only
    // where a ring tracker runs, so "no per-vCPU figures" stays distinct
    // from "0 pages/s".
    for (size_t i = 0; i < per_vcpu.size(); ++i) {
      v1::VcpuDirtyRate* v = out.add_vcpus();
      v->set_vcpu_index(static_cast<uint32_t>(i));
      v->set_dirty_rate_pages_per_s(static_cast<uint64_t>(per_vcpu[i]));
    }
    ToProtoDuration(absl::Nanoseconds(e.window_ns), out.mutable_window());
    if (e.valid) ToProtoTime(e.sample_time, out.mutable_sample_time());
    out.set_dirty_rate_pages_per_s(static_cast<uint64_t>(e.pages_per_sec));
    out.set_dirty_rate_bytes_per_s(static_cast<uint64_t>(e.bytes_per_sec));
    out.set_working_set_bytes(e.working_set_bytes);
  }
  v1::GuestCounters* g = out.mutable_guest();
  g->set_iterations(vm_stats.guest.iterations);
  g->set_pages_written(vm_stats.guest.pages_written);
  g->set_pages_verified(vm_stats.guest.pages_verified);
  uint64_t stamp = 0;
  for (const vmm::VcpuCounters& c : vm_stats.guest.vcpus) {
    stamp = std::max(stamp, c.last_stamp);
  }
  g->set_stamp(stamp);
  out.set_selfcheck_errors(vm_stats.guest.selfcheck_errors);
  return out;
}

v1::Vm VmRegistry::ToProto(const Entry& entry) const {
  v1::Vm out;
  *out.mutable_spec() = entry.spec;
  out.set_uid(entry.uid);
  ToProtoTime(entry.create_time, out.mutable_create_time());
  v1::VmStatus* st = out.mutable_status();
  st->set_host(options_.host_name);
  st->set_dirty_rate_bytes_per_s(entry.last_rate_bytes_per_s.load());
  const int exact_mode = entry.last_exact_mode.load();
  st->set_tracking_mode(
      exact_mode == 0
          ? v1::DIRTY_TRACKING_MODE_OFF
          : ToProtoTrackingMode(static_cast<mmu::DirtyTrackingMode>(exact_mode)));

  absl::MutexLock lock(&entry.mu);
  st->set_migration_id(entry.migration_id);
  if (entry.started_time != absl::InfinitePast()) {
    ToProtoTime(entry.started_time, st->mutable_started_time());
  }
  if (entry.vm != nullptr) {
    const vmm::VmStats s = entry.vm->Stats();
    st->set_phase(s.phase);
    st->set_message(s.message);
    st->set_backend(entry.vm->backend().kind());
    st->set_workload_seed(entry.vm->spec().workload().seed());
    st->mutable_guest()->set_iterations(s.guest.iterations);
    st->mutable_guest()->set_pages_written(s.guest.pages_written);
    st->mutable_guest()->set_pages_verified(s.guest.pages_verified);
    uint64_t stamp = 0;
    for (const vmm::VcpuCounters& c : s.guest.vcpus) {
      stamp = std::max(stamp, c.last_stamp);
    }
    st->mutable_guest()->set_stamp(stamp);
    st->set_selfcheck_errors(s.guest.selfcheck_errors);
  }
  switch (entry.state) {
    case State::kCreating:
      st->set_phase(v1::VM_PHASE_CREATING);
      st->set_message("allocating memory and loading the guest");
      break;
    case State::kIncoming:
      st->set_phase(v1::VM_PHASE_INCOMING);
      break;
    case State::kMigrated:
      st->set_phase(v1::VM_PHASE_MIGRATED);
      break;
    case State::kDeleting:
      st->set_phase(v1::VM_PHASE_DELETING);
      break;
    case State::kActive:
      break;  // the Vm's own phase
  }
  return out;
}

// --- sampling ---------------------------------------------------------------

void VmRegistry::StartSampling(Entry& entry) {
  absl::MutexLock sample(&entry.sample_mu);
  vmm::Vm* vm;
  {
    absl::MutexLock lock(&entry.mu);
    vm = entry.vm.get();
  }
  if (vm == nullptr) return;
  // SAFETY: the sampler reads the slots' mappings; DetachVm() destroys it
  // (under sample_mu) before the Vm and its memory can go away.
  absl::StatusOr<std::unique_ptr<VmDirtySampler>> sampler =
      VmDirtySampler::Create(vm->memory().slots(), options_.sampler,
                             options_.clock);
  if (!sampler.ok()) {
    LogWarning("VM ", entry.name, ": no dirty-rate sampling: ",
               sampler.status().ToString());
    return;
  }
  entry.sampler = std::move(*sampler);
}

void VmRegistry::SampleOne(Entry& entry) {
  ExactDirtyStatsProvider exact;
  {
    absl::MutexLock lock(&entry.mu);
    exact = entry.exact;
  }
  std::optional<ExactDirtyStats> exact_stats;
  if (exact) exact_stats = exact();
  entry.last_exact_mode.store(
      exact_stats.has_value() ? static_cast<int>(exact_stats->mode) : 0);
  if (exact_stats.has_value()) {
    entry.last_rate_bytes_per_s.store(
        static_cast<uint64_t>(exact_stats->rate.bytes_per_sec));
  }
  absl::MutexLock sample(&entry.sample_mu);
  // A ring started now has a window of ~0 s: its first harvest waits for
  // the next sample.
  if (!StartVcpuRing(entry) && entry.vcpu_ring != nullptr) {
    Entry::VcpuRing& ring = *entry.vcpu_ring;
    ring.scratch.ClearAll();
    absl::StatusOr<mmu::CollectStats> c = ring.tracker->Collect(&ring.scratch);
    if (c.ok()) {
      entry.vcpu_pages_per_sec = ring.meter->Record(*c).per_vcpu_pages_per_sec;
    } else {
      LogWarning("VM ", entry.name, ": per-vCPU dirty rates stopped: ",
                 c.status().ToString());
      StopVcpuRing(entry);
      entry.vcpu_ring_unavailable = true;
    }
  }
  if (entry.sampler == nullptr) return;
  absl::StatusOr<mmu::SampledDirtyRate> rate = entry.sampler->Tick();
  if (rate.ok() && !exact_stats.has_value()) {
    entry.last_rate_bytes_per_s.store(static_cast<uint64_t>(rate->bytes_per_sec));
  }
}

bool VmRegistry::StartVcpuRing(Entry& entry) {
  if (!options_.vcpu_rates_from_ring || entry.vcpu_ring != nullptr ||
      entry.vcpu_ring_unavailable) {
    return false;
  }
  vmm::Vm* vm;
  {
    absl::MutexLock lock(&entry.mu);
    if (entry.state != State::kActive || entry.vm == nullptr ||
        !entry.migration_id.empty()) {
      return false;
    }
    vm = entry.vm.get();  // stays: clearing entry.vm needs sample_mu too
  }
  // Only KVM has rings; asking another backend for kRing would just fail.
  if (vm->backend().kind() != v1::VM_BACKEND_KVM) {
    entry.vcpu_ring_unavailable = true;
    return false;
  }
  absl::StatusOr<std::unique_ptr<mmu::DirtyTracker>> tracker =
      vm->CreateDirtyTracker(mmu::DirtyTrackingMode::kRing);
  absl::Status s = tracker.status();
  if (s.ok() && !(*tracker)->has_per_vcpu_counts()) {
    s = absl::FailedPreconditionError("the tracker gives no per-vCPU counts");
  }
  if (s.ok()) s = (*tracker)->Start(vm->memory().slots());
  if (!s.ok()) {
    LogInfo("VM ", entry.name, ": no per-vCPU dirty rates (", s.ToString(), ")");
    entry.vcpu_ring_unavailable = true;
    return false;
  }
  auto ring = std::make_unique<Entry::VcpuRing>();
  ring->tracker = std::move(*tracker);
  ring->scratch = mmu::DirtySet::ForSlots(vm->memory().slots());
  ring->meter = std::make_unique<mmu::DirtyRateMeter>(options_.clock, absl::Seconds(2));
  entry.vcpu_ring = std::move(ring);
  return true;
}

void VmRegistry::StopVcpuRing(Entry& entry) {
  entry.vcpu_pages_per_sec.clear();
  if (entry.vcpu_ring == nullptr) return;
  if (absl::Status s = entry.vcpu_ring->tracker->Stop(); !s.ok()) {
    LogWarning("VM ", entry.name, ": stopping the per-vCPU ring tracker: ", s.ToString());
  }
  entry.vcpu_ring.reset();
}

void VmRegistry::SampleAllNow() {
  std::vector<std::shared_ptr<Entry>> entries;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [name, e] : vms_) entries.push_back(e);
  }
  const absl::Time start = absl::Now();
  for (const auto& e : entries) SampleOne(*e);
  sample_ns_.fetch_add(absl::ToInt64Nanoseconds(absl::Now() - start),
                       std::memory_order_relaxed);
  vm_samples_.fetch_add(entries.size(), std::memory_order_relaxed);
  sample_passes_.fetch_add(1, std::memory_order_relaxed);
}

VmRegistry::SamplingCost VmRegistry::sampling_cost() const {
  SamplingCost c;
  c.passes = sample_passes_.load(std::memory_order_relaxed);
  c.vm_samples = vm_samples_.load(std::memory_order_relaxed);
  c.total_ns = sample_ns_.load(std::memory_order_relaxed);
  return c;
}

void VmRegistry::SamplerLoop() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return shut_down_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&stop), options_.sample_interval);
      if (shut_down_) return;
    }
    SampleAllNow();
  }
}

int VmRegistry::Shutdown() {
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return 0;
    shut_down_ = true;
  }
  if (sampler_.joinable()) sampler_.join();
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> entries;
  {
    absl::MutexLock lock(&mu_);
    entries.swap(vms_);
  }
  int destroyed = 0;
  for (auto& [name, entry] : entries) {
    absl::MutexLock op(&entry->op_mu);
    {
      absl::MutexLock lock(&entry->mu);
      entry->state = State::kDeleting;
    }
    std::shared_ptr<vmm::Vm> vm = DetachVm(*entry);
    if (vm != nullptr) ++destroyed;
    StopAndDrop(name, std::move(vm));
  }
  return destroyed;
}

// --- migration engine -------------------------------------------------------

absl::Status VmRegistry::Reserve(const v1::VmSpec& spec, const std::string& uid,
                                 const std::string& migration_id) {
  if (migration_id.empty()) {
    return absl::InvalidArgumentError("Reserve: migration_id is empty");
  }
  RETURN_IF_ERROR(CheckSpec(spec).status());
  absl::StatusOr<std::shared_ptr<Entry>> existing = Find(spec.name());
  if (existing.ok()) {
    absl::MutexLock lock(&(*existing)->mu);
    if ((*existing)->state == State::kIncoming &&
        (*existing)->migration_id == migration_id) {
      return absl::OkStatus();  // a repeated PrepareIncoming
    }
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry,
                   Insert(spec, uid.empty() ? RandomHexId() : uid,
                          State::kIncoming));
  absl::MutexLock lock(&entry->mu);
  entry->migration_id = migration_id;
  return absl::OkStatus();
}

absl::Status VmRegistry::Adopt(std::unique_ptr<vmm::Vm> vm,
                               const std::string& uid,
                               const std::string& migration_id,
                               absl::Time started_time) {
  if (vm == nullptr) return absl::InvalidArgumentError("Adopt: no Vm given");
  const std::string name = vm->spec().name();
  if (!Find(name).ok()) RETURN_IF_ERROR(Reserve(vm->spec(), uid, migration_id));
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock op(&entry->op_mu);
  absl::MutexLock lock(&entry->mu);
  if (entry->state != State::kIncoming || entry->migration_id != migration_id ||
      entry->vm != nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "Adopt: \"", name, "\" is not an empty incoming shell of migration ",
        migration_id));
  }
  entry->vm = std::move(vm);
  entry->started_time = started_time;
  LogInfo("VM ", name, " adopted from migration ", migration_id);
  return absl::OkStatus();
}

absl::Status VmRegistry::Activate(absl::string_view name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock op(&entry->op_mu);
  std::shared_ptr<vmm::Vm> vm;
  {
    absl::MutexLock lock(&entry->mu);
    if (entry->state != State::kIncoming || entry->vm == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Activate: \"", entry->name, "\" is not an adopted incoming VM"));
    }
    vm = entry->vm;
  }
  RETURN_IF_ERROR(vm->Resume());
  {
    absl::MutexLock lock(&entry->mu);
    entry->state = State::kActive;
    entry->migration_id.clear();
    entry->exact = nullptr;
  }
  StartSampling(*entry);
  LogInfo("VM ", entry->name, " activated (incoming migration done)");
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<vmm::Vm>> VmRegistry::Acquire(
    absl::string_view name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock lock(&entry->mu);
  if (entry->vm == nullptr ||
      (entry->state != State::kActive && entry->state != State::kMigrated &&
       entry->state != State::kIncoming)) {
    return absl::FailedPreconditionError(
        absl::StrCat("VM \"", entry->name, "\" has no Vm to hand out"));
  }
  return entry->vm;
}

absl::Status VmRegistry::AttachMigration(absl::string_view name,
                                         const std::string& migration_id,
                                         ExactDirtyStatsProvider exact) {
  if (migration_id.empty()) {
    return absl::InvalidArgumentError("AttachMigration: empty migration_id");
  }
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  // The migration's tracker needs the ring to itself: ours stops first
  // (sample_mu also keeps SampleOne from starting it again until
  // migration_id is set below).
  absl::MutexLock sample(&entry->sample_mu);
  StopVcpuRing(*entry);
  absl::MutexLock lock(&entry->mu);
  if (entry->state != State::kActive && entry->state != State::kIncoming) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VM \"", entry->name, "\" cannot be migrated in its current phase"));
  }
  if (!entry->migration_id.empty() && entry->migration_id != migration_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VM \"", entry->name, "\" is already being migrated (migration ",
        entry->migration_id, ")"));
  }
  entry->migration_id = migration_id;
  entry->exact = std::move(exact);
  return absl::OkStatus();
}

absl::Status VmRegistry::DetachMigration(absl::string_view name,
                                         const std::string& migration_id) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock lock(&entry->mu);
  if (entry->migration_id != migration_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VM \"", entry->name, "\" is not being migrated by ", migration_id));
  }
  entry->migration_id.clear();
  entry->exact = nullptr;
  entry->last_exact_mode.store(0);
  return absl::OkStatus();
}

absl::Status VmRegistry::MarkMigrated(absl::string_view name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock op(&entry->op_mu);
  std::shared_ptr<vmm::Vm> vm;
  {
    absl::MutexLock lock(&entry->mu);
    if (entry->state != State::kActive || entry->vm == nullptr) {
      return absl::FailedPreconditionError(absl::StrCat(
          "MarkMigrated: \"", entry->name, "\" is not an active VM"));
    }
    vm = entry->vm;
  }
  RETURN_IF_ERROR(vm->Pause());  // must already be; make sure
  {
    absl::MutexLock sample(&entry->sample_mu);
    StopVcpuRing(*entry);
    entry->sampler.reset();
  }
  absl::MutexLock lock(&entry->mu);
  entry->state = State::kMigrated;
  LogInfo("VM ", entry->name, " migrated away; this copy stays paused");
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<vmm::Vm>> VmRegistry::Release(
    absl::string_view name) {
  ASSIGN_OR_RETURN(std::shared_ptr<Entry> entry, Find(name));
  absl::MutexLock op(&entry->op_mu);
  {
    absl::MutexLock lock(&entry->mu);
    if (entry->state == State::kCreating || entry->state == State::kDeleting) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Release: \"", entry->name, "\" is being created or deleted"));
    }
    entry->state = State::kDeleting;
  }
  std::shared_ptr<vmm::Vm> vm = DetachVm(*entry);
  Erase(entry);
  LogInfo("VM ", entry->name, " released to the migration engine");
  return vm;
}

}  // namespace ferry::service
