#include "controller/scheduler/queue.h"

#include <algorithm>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace ferry::controller::scheduler {
namespace {

std::string LimitText(uint32_t used, uint32_t limit) {
  return absl::StrCat(used, "/", limit);
}

}  // namespace

std::vector<const v1::Migration*> PendingInQueueOrder(
    const ClusterSnapshot& snapshot) {
  std::vector<const v1::Migration*> queue;
  for (const v1::Migration& m : snapshot.migrations) {
    if (m.phase() == v1::MIGRATION_PHASE_PENDING) queue.push_back(&m);
  }
  std::sort(queue.begin(), queue.end(),
            [](const v1::Migration* a, const v1::Migration* b) {
              return std::make_tuple(a->create_time().seconds(),
                                     a->create_time().nanos(), a->id()) <
                     std::make_tuple(b->create_time().seconds(),
                                     b->create_time().nanos(), b->id());
            });
  return queue;
}

std::vector<Decision> ScheduleMigrations(const ClusterSnapshot& snapshot,
                                         const Limits& limits) {
  Ledger ledger(snapshot, limits);
  absl::flat_hash_map<std::string, const v1::Vm*> vms;
  for (const v1::Vm& vm : snapshot.vms) vms[vm.spec().name()] = &vm;
  // VM -> migration id holding it (in flight, or admitted in this pass).
  absl::flat_hash_map<std::string, std::string> busy;
  for (const v1::Migration& m : snapshot.migrations) {
    if (IsInFlight(m.phase())) busy[m.vm_name()] = m.id();
  }

  std::vector<Decision> decisions;
  for (const v1::Migration* m : PendingInQueueOrder(snapshot)) {
    Decision d;
    d.migration_id = m->id();
    d.vm_name = m->vm_name();
    auto wait = [&](v1::PendingReason reason, std::string message) {
      d.reason = reason;
      d.message = std::move(message);
      decisions.push_back(std::move(d));
    };
    auto vm_it = vms.find(m->vm_name());
    if (vm_it == vms.end()) {
      wait(v1::PENDING_REASON_VM_NOT_READY,
           absl::StrCat("vm '", m->vm_name(), "' does not exist"));
      continue;
    }
    const v1::Vm& vm = *vm_it->second;
    d.source_host = m->source_host().empty() ? vm.status().host() : m->source_host();
    if (vm.status().phase() != v1::VM_PHASE_RUNNING) {
      wait(v1::PENDING_REASON_VM_NOT_READY,
           absl::StrCat("vm '", vm.spec().name(), "' is ",
                        v1::VmPhase_Name(vm.status().phase()),
                        "; only a RUNNING VM migrates live"));
      continue;
    }
    if (auto b = busy.find(vm.spec().name()); b != busy.end()) {
      wait(v1::PENDING_REASON_VM_NOT_READY,
           absl::StrCat("vm '", vm.spec().name(), "' is already migrating (",
                        b->second, ")"));
      continue;
    }
    const Ledger::HostState* src = ledger.host(d.source_host);
    if (src == nullptr ||
        src->host->readiness() != v1::HOST_READINESS_READY) {
      wait(v1::PENDING_REASON_VM_NOT_READY,
           absl::StrCat("source host ", d.source_host, " is ",
                        src == nullptr ? "not registered"
                                       : v1::HostReadiness_Name(
                                             src->host->readiness())));
      continue;
    }
    if (limits.max_cluster > 0 && ledger.cluster_in_flight() >= limits.max_cluster) {
      wait(v1::PENDING_REASON_CONCURRENCY_LIMIT,
           absl::StrCat("cluster has ",
                        LimitText(ledger.cluster_in_flight(), limits.max_cluster),
                        " migrations in flight"));
      continue;
    }
    if (limits.max_outbound_per_host > 0 &&
        src->outbound >= limits.max_outbound_per_host) {
      wait(v1::PENDING_REASON_CONCURRENCY_LIMIT,
           absl::StrCat("source host ", d.source_host, " has ",
                        LimitText(src->outbound, limits.max_outbound_per_host),
                        " outbound migrations"));
      continue;
    }
    PlacementRequest req;
    req.vm_name = vm.spec().name();
    req.spec = &vm.spec();
    req.source_host = d.source_host;
    req.requested_host = m->requested_target_host();
    req.respect_inbound_limit = true;
    Placement p = ledger.Choose(req);
    if (!p.ok()) {
      wait(p.reason, std::move(p.message));
      continue;
    }
    ledger.Commit(vm.spec(), d.source_host, p.host);
    busy[vm.spec().name()] = m->id();
    d.admitted = true;
    d.target_host = p.host;
    decisions.push_back(std::move(d));
  }
  return decisions;
}

}  // namespace ferry::controller::scheduler
