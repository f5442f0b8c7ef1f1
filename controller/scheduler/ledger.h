// Placement over a snapshot of the cluster: pure logic, no RocksDB, no RPCs,
// so the same code answers "where would this go" for CreateVm, for the
// migration queue (queue.h) and for drain planning (drain.h), and is tested
// with plain tables.
//
// Accounting. For each host the ledger keeps what is committed there:
//   committed = sum of the VMs whose status.host is the host
//             + VMs arriving by in-flight migrations (reserved on the target
//               from PREPARING until terminal; the source keeps its share
//               until the source copy is gone, so both ends are charged)
//             + placements made earlier in the same scheduling pass.
// Free = capacity - max(committed, info.allocated): the agent's own report
// wins when it is larger (memory the controller does not know about), and
// the controller's view wins when it runs ahead of the agent (just placed).
//
// Filters, in order (the first that fails is the host's reason):
//   the source / not READY / cordoned / backend unsupported / anti-affinity /
//   insufficient memory / insufficient vCPUs / VM slots full /
//   inbound migration limit.
// Anti-affinity: VMs with the same value of label kAntiAffinityLabel are never
// placed on one host (counting VMs arriving by migration).
//
// Score: the host's dominant resource share after placement,
//   max(memory_after / memory_capacity, vcpus_after / vcpu_capacity),
// in parts per million; lowest wins (spread, least loaded). Using the
// dominant share (DRF) rather than memory alone keeps a host that is
// CPU-full but memory-empty from looking "least loaded". Ties: fewer inbound
// migrations in flight, then host name — deterministic for a given snapshot.
#ifndef FERRY_CONTROLLER_SCHEDULER_LEDGER_H_
#define FERRY_CONTROLLER_SCHEDULER_LEDGER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "proto/controller.pb.h"

namespace ferry::controller::scheduler {

inline constexpr char kAntiAffinityLabel[] = "anti-affinity";

// What the scheduler sees; the caller reads it from the store. Terminal
// migrations may be included; they are ignored.
struct ClusterSnapshot {
  std::vector<v1::Host> hosts;
  std::vector<v1::Vm> vms;
  std::vector<v1::Migration> migrations;
};

// Concurrency limits; 0 = unlimited. Defaults follow KubeVirt
// (parallelMigrationsPerCluster 5, parallelOutboundMigrationsPerNode 2),
// plus an inbound limit so a fresh empty host is not flooded.
struct Limits {
  uint32_t max_outbound_per_host = 2;
  uint32_t max_inbound_per_host = 2;
  uint32_t max_cluster = 5;
};

bool IsTerminal(v1::MigrationPhase phase);
// PREPARING .. ROLLING_BACK: holds concurrency slots and a reservation.
bool IsInFlight(v1::MigrationPhase phase);
std::string FormatBytes(uint64_t bytes);

struct PlacementRequest {
  std::string vm_name;
  const v1::VmSpec* spec = nullptr;  // resources, labels, backend
  // Excluded (the migration's source); empty for a new VM.
  std::string source_host;
  // Only this host is considered; empty = any.
  std::string requested_host;
  // Migrations: skip hosts at their inbound limit.
  bool respect_inbound_limit = false;
};

struct Placement {
  // Empty if nothing fits; then reason/message say why.
  std::string host;
  uint64_t score_ppm = 0;
  v1::PendingReason reason = v1::PENDING_REASON_UNSPECIFIED;
  std::string message;
  bool ok() const { return !host.empty(); }
};

class Ledger {
 public:
  struct HostState {
    const v1::Host* host = nullptr;
    uint64_t memory_bytes = 0;  // committed
    uint64_t vcpus = 0;
    uint32_t vms = 0;
    uint32_t inbound = 0;   // migrations in flight
    uint32_t outbound = 0;
    absl::flat_hash_map<std::string, int> groups;  // anti-affinity counts
  };

  // `snapshot` must outlive the ledger.
  Ledger(const ClusterSnapshot& snapshot, Limits limits);

  Placement Choose(const PlacementRequest& request) const;
  // Charges `spec` to `target` and, for a migration, takes the concurrency
  // slots (source outbound, target inbound, cluster).
  void Commit(const v1::VmSpec& spec, const std::string& source,
              const std::string& target);

  const HostState* host(const std::string& name) const;
  // Marks a host cordoned for this ledger only (drain planning).
  void Cordon(const std::string& name) { extra_cordoned_.push_back(name); }
  uint32_t cluster_in_flight() const { return cluster_in_flight_; }
  const Limits& limits() const { return limits_; }

 private:
  enum class Reject {
    kSource, kNotReady, kCordoned, kBackend, kAntiAffinity,
    kMemory, kVcpus, kVmSlots, kInboundLimit, kCount
  };
  // Returns kCount if the host fits.
  Reject Filter(const HostState& h, const PlacementRequest& req) const;
  uint64_t Score(const HostState& h, const v1::VmSpec& spec) const;
  static const char* RejectText(Reject r);
  Placement Explain(const PlacementRequest& req,
                    const std::map<Reject, int>& rejects, size_t considered) const;
  void Charge(HostState* h, const v1::VmSpec& spec);
  uint64_t UsedMemory(const HostState& h) const;
  uint64_t UsedVcpus(const HostState& h) const;

  Limits limits_;
  std::map<std::string, HostState> hosts_;  // ordered: deterministic scans
  std::vector<std::string> extra_cordoned_;
  uint32_t cluster_in_flight_ = 0;
};

}  // namespace ferry::controller::scheduler

#endif  // FERRY_CONTROLLER_SCHEDULER_LEDGER_H_
