// VmRegistry: the agent's VMs by name — creation with capacity accounting,
// lifecycle calls, per-VM background dirty-rate sampling, and the methods
// the migration engine uses to hand VMs in (destination) and out (source).
//
// Phases (VmStatus.phase) as the registry reports them:
//   CREATING   name and capacity reserved, Vm::Create running
//   RUNNING / PAUSED / FAILED   from the Vm itself
//   INCOMING   a migration destination's shell (Reserve, Adopt) until
//              Activate; its vCPUs never run before that
//   MIGRATED   the source copy after the handoff (MarkMigrated); it never
//              runs again and only waits for Delete/Release
//   DELETING   being destroyed; the name and capacity are freed after
//
// Decisions (written down per DESIGN.md):
//  * Pause of a PAUSED VM and Resume of a RUNNING VM succeed and change
//    nothing: a controller that retries a call whose reply was lost must not
//    see an error. Pause/Resume are FAILED_PRECONDITION for a FAILED,
//    INCOMING, MIGRATED, CREATING or DELETING VM, and while a migration is
//    attached (only the engine may pause or resume it then, or two copies
//    could run).
//  * Capacity counts every entry, whatever its phase, until it is gone.
//  * A Create with the name and uid of an existing VM returns that VM
//    (agent.proto: retried creates); any other clash is ALREADY_EXISTS. An
//    empty uid gets a random one.
//
// Locking. Lock order: Entry::op_mu -> Entry::sample_mu -> mu_ -> Entry::mu.
// op_mu serializes the control calls on one Vm (Vm's contract: one control
// thread at a time) and may be held for seconds (Pause); mu_ and Entry::mu
// are held only for map and field access. Entry::vm is cleared only with
// op_mu, sample_mu and Entry::mu all held, so a holder of any one of them
// may use the Vm.
#ifndef FERRY_AGENT_SERVICE_VM_REGISTRY_H_
#define FERRY_AGENT_SERVICE_VM_REGISTRY_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/service/dirty_sampler.h"
#include "agent/vmm/backend.h"
#include "agent/vmm/vm.h"
#include "mmu/dirty_rate.h"
#include "mmu/dirty_tracker.h"
#include "proto/agent.pb.h"
#include "proto/vm.pb.h"

namespace ferry::service {

// DNS-1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters.
// INVALID_ARGUMENT saying what is wrong otherwise.
absl::Status ValidateVmName(absl::string_view name);

// The backends VMs can be created on. Not owned; must outlive the registry.
struct BackendSet {
  vmm::Backend* kvm = nullptr;   // null: KVM unusable, see kvm_status
  absl::Status kvm_status = absl::UnavailableError("KVM backend not enabled");
  vmm::Backend* soft = nullptr;  // null: soft backend disabled (--backend=kvm)
  // What VM_BACKEND_AUTO / _UNSPECIFIED resolve to.
  v1::VmBackend preferred = v1::VM_BACKEND_SOFT;
};

struct HostCapacity {
  uint64_t memory_bytes = 0;
  uint32_t vcpus = 0;
};

struct RegistryOptions {
  std::string host_name;  // VmStatus.host
  HostCapacity capacity;
  // Background sampling period; zero = no background thread (tests call
  // SampleAllNow()).
  absl::Duration sample_interval = absl::Seconds(1);
  DirtySamplerOptions sampler;
  // Per-vCPU dirty rates (VmStats.vcpus, the agent's
  // ferry_vcpu_dirty_pages_per_second) from KVM's dirty ring while no
  // migration runs: at every sample the registry harvests a ring tracker of
  // its own. Only a KVM VM created with the ring gets one; any other VM
  // reports no per-vCPU rates (absent, not 0). Cost: dirty logging stays on
  // for such VMs, one write-protect fault per page first written in each
  // sample interval (what a migration's ring tracker costs too). A
  // migration's tracker takes the ring over (AttachMigration stops this one;
  // it restarts at the first sample after DetachMigration).
  bool vcpu_rates_from_ring = true;
  mmu::MonotonicClock clock = mmu::SystemMonotonicClock();
  vmm::VmOptions vm_options;
};

// What a running migration measures exactly with its tracker. While one is
// attached and returns a value, GetStats reports it instead of the sampler
// (and the registry's own per-vCPU ring tracker is stopped).
struct ExactDirtyStats {
  mmu::DirtyTrackingMode mode = mmu::DirtyTrackingMode::kUnspecified;
  mmu::DirtyRate rate;
  uint64_t working_set_bytes = 0;
};
using ExactDirtyStatsProvider = std::function<std::optional<ExactDirtyStats>()>;

v1::DirtyTrackingMode ToProtoTrackingMode(mmu::DirtyTrackingMode mode);

class VmRegistry {
 public:
  VmRegistry(BackendSet backends, RegistryOptions options);
  ~VmRegistry();  // Shutdown()

  VmRegistry(const VmRegistry&) = delete;
  VmRegistry& operator=(const VmRegistry&) = delete;

  // --- lifecycle (AgentService) ---------------------------------------------
  // INVALID_ARGUMENT bad name/spec, ALREADY_EXISTS, RESOURCE_EXHAUSTED over
  // capacity, FAILED_PRECONDITION backend not available on this host.
  absl::StatusOr<v1::Vm> Create(const v1::VmSpec& spec, const std::string& uid);
  absl::StatusOr<v1::Vm> Get(absl::string_view name) const;
  std::vector<v1::Vm> List() const;  // by name
  absl::StatusOr<v1::Vm> Pause(absl::string_view name);
  absl::StatusOr<v1::Vm> Resume(absl::string_view name);
  // FAILED_PRECONDITION while CREATING/DELETING, or with a migration
  // attached unless `force` (the caller cancels the migration first). The
  // vCPUs are paused before the Vm is dropped.
  absl::Status Delete(absl::string_view name, bool force);
  absl::StatusOr<v1::VmStats> GetStats(absl::string_view name,
                                       absl::Duration window) const;
  // The migration attached to `name`, or "" (NOT_FOUND for unknown names).
  absl::StatusOr<std::string> MigrationOf(absl::string_view name) const;

  HostCapacity capacity() const { return options_.capacity; }
  v1::HostResources Allocated() const;
  const BackendSet& backends() const { return backends_; }
  // The backend a VmSpec.backend value resolves to on this host, or
  // FAILED_PRECONDITION saying why it is unavailable.
  absl::StatusOr<vmm::Backend*> ResolveBackend(v1::VmBackend requested) const;

  // --- migration engine -----------------------------------------------------
  // Destination: an INCOMING shell holding the name and capacity (the spec
  // is validated like Create's). Idempotent for the same migration_id.
  absl::Status Reserve(const v1::VmSpec& spec, const std::string& uid,
                       const std::string& migration_id);
  // Destination: puts a restored Vm (made with VmOptions.start_paused) into
  // the shell reserved for its name by `migration_id`, reserving one first
  // if there is none. Stays INCOMING until Activate. `started_time` is the
  // VM's original start (VmState.started_time).
  absl::Status Adopt(std::unique_ptr<vmm::Vm> vm, const std::string& uid,
                     const std::string& migration_id, absl::Time started_time);
  // Destination, the commit point: INCOMING -> RUNNING (resumes the vCPUs,
  // starts sampling). Detaches the migration.
  absl::Status Activate(absl::string_view name);
  // Source: a shared handle on the Vm for the engine's lifetime of use.
  // Delete pauses the Vm before dropping the registry's reference; the
  // engine must drop its own (and its trackers first) promptly.
  absl::StatusOr<std::shared_ptr<vmm::Vm>> Acquire(absl::string_view name);
  // Marks `name` as being migrated by `migration_id` (VmStatus.migration_id;
  // user Pause/Resume/Delete refused). `exact` may be empty.
  absl::Status AttachMigration(absl::string_view name,
                               const std::string& migration_id,
                               ExactDirtyStatsProvider exact);
  // FAILED_PRECONDITION if another migration is attached.
  absl::Status DetachMigration(absl::string_view name,
                               const std::string& migration_id);
  // Source after the handoff: MIGRATED, paused for good.
  absl::Status MarkMigrated(absl::string_view name);
  // Removes the entry (frees name and capacity) and hands out the Vm (null
  // for a shell never adopted). The caller destroys it.
  absl::StatusOr<std::shared_ptr<vmm::Vm>> Release(absl::string_view name);

  // --- sampling and shutdown --------------------------------------------------
  // One sampling pass over every running or paused VM.
  void SampleAllNow();
  // What sampling has cost so far (agent/metrics): passes, VM samples taken
  // and the wall time spent in them. Read-only, lock-free.
  struct SamplingCost {
    uint64_t passes = 0;
    uint64_t vm_samples = 0;
    int64_t total_ns = 0;
  };
  SamplingCost sampling_cost() const;
  // Stops sampling and destroys every VM; returns how many were destroyed.
  // Later calls fail with UNAVAILABLE. Idempotent.
  int Shutdown();

 private:
  enum class State { kCreating, kActive, kIncoming, kMigrated, kDeleting };
  struct Entry;

  static absl::string_view StateWord(State state);

  static absl::StatusOr<std::shared_ptr<vmm::Vm>> ActiveVm(
      Entry& entry, absl::string_view verb);
  absl::StatusOr<std::shared_ptr<Entry>> Find(absl::string_view name) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Validates name and spec and resolves the backend (nothing allocated).
  absl::StatusOr<vmm::Backend*> CheckSpec(const v1::VmSpec& spec) const;
  // Capacity check for a new entry; RESOURCE_EXHAUSTED with numbers.
  absl::Status CheckCapacity(const v1::VmSpec& spec) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Inserts a new entry in `state` after the name and capacity checks.
  absl::StatusOr<std::shared_ptr<Entry>> Insert(const v1::VmSpec& spec,
                                                const std::string& uid,
                                                State state)
      ABSL_LOCKS_EXCLUDED(mu_);
  void Erase(const std::shared_ptr<Entry>& entry) ABSL_LOCKS_EXCLUDED(mu_);
  // Takes the Vm out of `entry` (op_mu held by the caller).
  std::shared_ptr<vmm::Vm> DetachVm(Entry& entry);
  void StartSampling(Entry& entry);
  void SampleOne(Entry& entry);
  // The per-vCPU ring tracker (RegistryOptions::vcpu_rates_from_ring); both
  // need Entry::sample_mu. Start returns true when it started one now.
  bool StartVcpuRing(Entry& entry);
  static void StopVcpuRing(Entry& entry);
  v1::Vm ToProto(const Entry& entry) const;
  void SamplerLoop();

  const BackendSet backends_;
  const RegistryOptions options_;

  mutable absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Entry>, std::less<>> vms_
      ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> sample_passes_{0};
  std::atomic<uint64_t> vm_samples_{0};
  std::atomic<int64_t> sample_ns_{0};
  std::thread sampler_;
};

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_VM_REGISTRY_H_
