#include "proto/phases.h"
#include "controller/scheduler/ledger.h"

#include <algorithm>
#include <tuple>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace ferry::controller::scheduler {
namespace {

constexpr uint64_t kPpm = 1000000;

std::string GroupOf(const v1::VmSpec& spec) {
  auto it = spec.labels().find(kAntiAffinityLabel);
  return it == spec.labels().end() ? "" : it->second;
}

bool SupportsBackend(const v1::Host& host, v1::VmBackend backend) {
  const auto& backends = host.info().backends();
  // AUTO runs anywhere; an agent that reports no list predates the field.
  if (backend == v1::VM_BACKEND_AUTO || backend == v1::VM_BACKEND_UNSPECIFIED ||
      backends.empty()) {
    return true;
  }
  return std::find(backends.begin(), backends.end(), backend) != backends.end();
}

uint64_t Share(uint64_t used, uint64_t capacity) {
  if (capacity == 0) return used == 0 ? 0 : kPpm;
  return used * kPpm / capacity;
}

}  // namespace

bool IsTerminal(v1::MigrationPhase phase) { return v1::IsTerminalPhase(phase); }

bool IsInFlight(v1::MigrationPhase phase) {
  return phase != v1::MIGRATION_PHASE_UNSPECIFIED &&
         phase != v1::MIGRATION_PHASE_PENDING && !IsTerminal(phase);
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes >= (1ull << 30) && bytes % (1ull << 30) == 0) {
    return absl::StrCat(bytes >> 30, " GiB");
  }
  if (bytes >= (1ull << 20)) {
    return absl::StrFormat("%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  }
  return absl::StrCat(bytes, " B");
}

Ledger::Ledger(const ClusterSnapshot& snapshot, Limits limits)
    : limits_(limits) {
  for (const v1::Host& host : snapshot.hosts) hosts_[host.name()].host = &host;
  absl::flat_hash_map<std::string, const v1::Vm*> vms;
  for (const v1::Vm& vm : snapshot.vms) {
    vms[vm.spec().name()] = &vm;
    auto it = hosts_.find(vm.status().host());
    if (it != hosts_.end()) Charge(&it->second, vm.spec());
  }
  for (const v1::Migration& m : snapshot.migrations) {
    if (!IsInFlight(m.phase())) continue;
    ++cluster_in_flight_;
    if (auto src = hosts_.find(m.source_host()); src != hosts_.end()) {
      ++src->second.outbound;
    }
    auto dst = hosts_.find(m.target_host());
    if (dst == hosts_.end()) continue;
    ++dst->second.inbound;
    auto vm = vms.find(m.vm_name());
    // Charge the target unless the VM record already sits there (after the
    // handoff), which the loop above counted.
    if (vm != vms.end() && vm->second->status().host() != m.target_host()) {
      Charge(&dst->second, vm->second->spec());
    }
  }
}

void Ledger::Charge(HostState* h, const v1::VmSpec& spec) {
  h->memory_bytes += spec.memory_bytes();
  h->vcpus += spec.vcpu_count();
  ++h->vms;
  if (std::string g = GroupOf(spec); !g.empty()) ++h->groups[g];
}

uint64_t Ledger::UsedMemory(const HostState& h) const {
  return std::max<uint64_t>(h.memory_bytes,
                            h.host->info().allocated().memory_bytes());
}

uint64_t Ledger::UsedVcpus(const HostState& h) const {
  return std::max<uint64_t>(h.vcpus, h.host->info().allocated().vcpus());
}

const Ledger::HostState* Ledger::host(const std::string& name) const {
  auto it = hosts_.find(name);
  return it == hosts_.end() ? nullptr : &it->second;
}

Ledger::Reject Ledger::Filter(const HostState& h,
                              const PlacementRequest& req) const {
  const v1::Host& host = *h.host;
  const v1::VmSpec& spec = *req.spec;
  const auto& cap = host.info().capacity();
  if (host.name() == req.source_host) return Reject::kSource;
  if (host.readiness() != v1::HOST_READINESS_READY) return Reject::kNotReady;
  if (host.cordoned() ||
      std::count(extra_cordoned_.begin(), extra_cordoned_.end(), host.name())) {
    return Reject::kCordoned;
  }
  if (!SupportsBackend(host, spec.backend())) return Reject::kBackend;
  if (std::string g = GroupOf(spec); !g.empty()) {
    auto it = h.groups.find(g);
    if (it != h.groups.end() && it->second > 0) return Reject::kAntiAffinity;
  }
  if (UsedMemory(h) + spec.memory_bytes() > cap.memory_bytes()) {
    return Reject::kMemory;
  }
  if (UsedVcpus(h) + spec.vcpu_count() > cap.vcpus()) return Reject::kVcpus;
  if (cap.vms() > 0 && std::max(h.vms, host.info().allocated().vms()) + 1 > cap.vms()) {
    return Reject::kVmSlots;
  }
  if (req.respect_inbound_limit && limits_.max_inbound_per_host > 0 &&
      h.inbound >= limits_.max_inbound_per_host) {
    return Reject::kInboundLimit;
  }
  return Reject::kCount;
}

uint64_t Ledger::Score(const HostState& h, const v1::VmSpec& spec) const {
  const auto& cap = h.host->info().capacity();
  return std::max(Share(UsedMemory(h) + spec.memory_bytes(), cap.memory_bytes()),
                  Share(UsedVcpus(h) + spec.vcpu_count(), cap.vcpus()));
}

const char* Ledger::RejectText(Reject r) {
  switch (r) {
    case Reject::kSource: return "is the source";
    case Reject::kNotReady: return "not ready";
    case Reject::kCordoned: return "cordoned";
    case Reject::kBackend: return "lack the VM's backend";
    case Reject::kAntiAffinity: return "anti-affinity conflict";
    case Reject::kMemory: return "insufficient memory";
    case Reject::kVcpus: return "insufficient vCPUs";
    case Reject::kVmSlots: return "VM slots full";
    case Reject::kInboundLimit: return "at inbound migration limit";
    case Reject::kCount: break;
  }
  return "fits";
}

Placement Ledger::Choose(const PlacementRequest& req) const {
  std::map<Reject, int> rejects;
  const HostState* best = nullptr;
  uint64_t best_score = 0;
  size_t considered = 0;
  for (const auto& [name, h] : hosts_) {
    if (!req.requested_host.empty() && name != req.requested_host) continue;
    ++considered;
    const Reject r = Filter(h, req);
    if (r != Reject::kCount) {
      ++rejects[r];
      continue;
    }
    const uint64_t score = Score(h, *req.spec);
    if (best == nullptr || std::tie(score, h.inbound) <
                               std::tie(best_score, best->inbound)) {
      best = &h;
      best_score = score;
    }
  }
  if (best == nullptr) return Explain(req, rejects, considered);
  Placement p;
  p.host = best->host->name();
  p.score_ppm = best_score;
  return p;
}

Placement Ledger::Explain(const PlacementRequest& req,
                          const std::map<Reject, int>& rejects,
                          size_t considered) const {
  Placement p;
  const std::string what = absl::StrCat(
      "vm '", req.vm_name, "' (", FormatBytes(req.spec->memory_bytes()), ", ",
      req.spec->vcpu_count(), " vCPUs)");
  if (!req.requested_host.empty() && considered == 0) {
    p.reason = v1::PENDING_REASON_NO_MATCHING_HOST;
    p.message = absl::StrCat("requested host ", req.requested_host,
                             " is not registered");
    return p;
  }
  std::vector<std::string> parts;
  for (const auto& [r, n] : rejects) parts.push_back(absl::StrCat(n, " ", RejectText(r)));
  // Kubernetes' "0/N nodes are available: ..." shape, which operators know.
  p.message = absl::StrCat("0/", considered, " hosts can take ", what, ": ",
                           absl::StrJoin(parts, ", "));
  if (!req.requested_host.empty()) {
    p.message = absl::StrCat("requested host ", req.requested_host,
                             " cannot take ", what, ": ",
                             RejectText(rejects.begin()->first));
  }
  if (rejects.count(Reject::kInboundLimit)) {
    p.reason = v1::PENDING_REASON_CONCURRENCY_LIMIT;
  } else if (rejects.count(Reject::kMemory) || rejects.count(Reject::kVcpus) ||
             rejects.count(Reject::kVmSlots)) {
    p.reason = v1::PENDING_REASON_NO_CAPACITY;
  } else {
    p.reason = v1::PENDING_REASON_NO_MATCHING_HOST;
  }
  return p;
}

void Ledger::Commit(const v1::VmSpec& spec, const std::string& source,
                    const std::string& target) {
  auto dst = hosts_.find(target);
  if (dst != hosts_.end()) {
    Charge(&dst->second, spec);
    if (!source.empty()) ++dst->second.inbound;
  }
  if (source.empty()) return;
  if (auto src = hosts_.find(source); src != hosts_.end()) ++src->second.outbound;
  ++cluster_in_flight_;
}

}  // namespace ferry::controller::scheduler
