#include "controller/scheduler/drain.h"

#include <algorithm>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace ferry::controller::scheduler {
namespace {

// Slots per wave; wave 0 starts with what is already in flight.
class WaveBook {
 public:
  WaveBook(const Ledger& ledger, const std::string& host, uint32_t parallel)
      : ledger_(ledger), host_(host), parallel_(parallel) {}

  uint32_t Assign(const std::string& target) {
    for (uint32_t w = 0;; ++w) {
      Wave& wave = Get(w);
      const Limits& l = ledger_.limits();
      const uint32_t inbound = wave.inbound[target] + InFlightInbound(w, target);
      if ((parallel_ == 0 || wave.outbound < parallel_) &&
          (l.max_inbound_per_host == 0 || inbound < l.max_inbound_per_host) &&
          (l.max_cluster == 0 || wave.cluster < l.max_cluster)) {
        ++wave.outbound;
        ++wave.cluster;
        ++wave.inbound[target];
        return w;
      }
    }
  }

 private:
  struct Wave {
    uint32_t outbound = 0;
    uint32_t cluster = 0;
    absl::flat_hash_map<std::string, uint32_t> inbound;
  };
  Wave& Get(uint32_t w) {
    while (waves_.size() <= w) {
      Wave wave;
      if (waves_.empty()) {  // Migrations already running occupy wave 0.
        wave.outbound = ledger_.host(host_)->outbound;
        wave.cluster = ledger_.cluster_in_flight();
      }
      waves_.push_back(std::move(wave));
    }
    return waves_[w];
  }
  uint32_t InFlightInbound(uint32_t w, const std::string& target) const {
    return w == 0 ? ledger_.host(target)->inbound : 0;
  }

  const Ledger& ledger_;
  const std::string host_;
  const uint32_t parallel_;
  std::vector<Wave> waves_;
};

}  // namespace

absl::StatusOr<DrainPlan> PlanDrain(const ClusterSnapshot& snapshot,
                                    const std::string& host,
                                    const Limits& limits,
                                    uint32_t max_parallel) {
  Ledger ledger(snapshot, limits);
  if (ledger.host(host) == nullptr) {
    return absl::NotFoundError(absl::StrCat("host '", host, "' not found"));
  }
  ledger.Cordon(host);
  uint32_t parallel = limits.max_outbound_per_host;
  if (max_parallel > 0 && (parallel == 0 || max_parallel < parallel)) {
    parallel = max_parallel;
  }
  absl::flat_hash_map<std::string, std::string> busy;
  for (const v1::Migration& m : snapshot.migrations) {
    if (IsInFlight(m.phase())) busy[m.vm_name()] = m.id();
  }
  std::vector<const v1::Vm*> vms;
  for (const v1::Vm& vm : snapshot.vms) {
    if (vm.status().host() == host) vms.push_back(&vm);
  }
  std::sort(vms.begin(), vms.end(), [](const v1::Vm* a, const v1::Vm* b) {
    return std::make_tuple(b->spec().memory_bytes(), b->spec().vcpu_count(),
                           a->spec().name()) <
           std::make_tuple(a->spec().memory_bytes(), a->spec().vcpu_count(),
                           b->spec().name());
  });

  DrainPlan plan;
  plan.host = host;
  WaveBook book(ledger, host, parallel);
  int migrate = 0, skipped = 0, unplaceable = 0, running = 0;
  for (const v1::Vm* vm : vms) {
    DrainItem item;
    item.vm_name = vm->spec().name();
    if (auto b = busy.find(item.vm_name); b != busy.end()) {
      item.action = DrainAction::kAlreadyMigrating;
      item.migration_id = b->second;
      item.message = absl::StrCat("already migrating (", b->second, ")");
      ++running;
    } else if (vm->status().phase() != v1::VM_PHASE_RUNNING) {
      item.action = DrainAction::kSkip;
      item.reason = v1::PENDING_REASON_VM_NOT_READY;
      item.message = absl::StrCat("vm is ", v1::VmPhase_Name(vm->status().phase()),
                                  "; only a RUNNING VM migrates live");
      ++skipped;
    } else {
      PlacementRequest req;
      req.vm_name = item.vm_name;
      req.spec = &vm->spec();
      req.source_host = host;
      Placement p = ledger.Choose(req);
      if (p.ok()) {
        // Charge capacity now (every VM of the plan lands eventually); the
        // wave book, not the ledger, models the concurrency slots.
        ledger.Commit(vm->spec(), "", p.host);
        item.action = DrainAction::kMigrate;
        item.target_host = p.host;
        item.wave = book.Assign(p.host);
        plan.waves = std::max(plan.waves, item.wave + 1);
        ++migrate;
      } else {
        item.action = DrainAction::kUnplaceable;
        item.reason = p.reason;
        item.message = std::move(p.message);
        ++unplaceable;
      }
    }
    plan.items.push_back(std::move(item));
  }
  plan.summary = absl::StrCat("drain ", host, ": ", vms.size(), " VMs, ",
                              migrate, " to migrate in ", plan.waves,
                              " waves, ", running, " already migrating, ",
                              skipped, " skipped, ", unplaceable,
                              " unplaceable");
  return plan;
}

}  // namespace ferry::controller::scheduler
