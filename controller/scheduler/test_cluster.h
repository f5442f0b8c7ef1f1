// Builders for scheduler tests: a cluster described in a few lines.
#ifndef FERRY_CONTROLLER_SCHEDULER_TEST_CLUSTER_H_
#define FERRY_CONTROLLER_SCHEDULER_TEST_CLUSTER_H_

#include <string>

#include "controller/scheduler/ledger.h"

namespace ferry::controller::scheduler::testing {

inline constexpr uint64_t kGiB = 1ull << 30;

class TestCluster {
 public:
  // A READY host with `gib` GiB and `vcpus` vCPUs.
  v1::Host& Host(const std::string& name, uint64_t gib = 64, uint32_t vcpus = 32) {
    v1::Host& h = snap_.hosts.emplace_back();
    h.set_name(name);
    h.mutable_info()->set_name(name);
    h.mutable_info()->mutable_capacity()->set_memory_bytes(gib * kGiB);
    h.mutable_info()->mutable_capacity()->set_vcpus(vcpus);
    h.set_readiness(v1::HOST_READINESS_READY);
    return h;
  }
  // A RUNNING VM on `host`.
  v1::Vm& Vm(const std::string& name, const std::string& host, uint64_t gib = 4,
             uint32_t vcpus = 2, const std::string& group = "") {
    v1::Vm& vm = snap_.vms.emplace_back();
    vm.mutable_spec()->set_name(name);
    vm.mutable_spec()->set_memory_bytes(gib * kGiB);
    vm.mutable_spec()->set_vcpu_count(vcpus);
    if (!group.empty()) (*vm.mutable_spec()->mutable_labels())[kAntiAffinityLabel] = group;
    vm.mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
    vm.mutable_status()->set_host(host);
    return vm;
  }
  // A migration; PENDING unless `phase` says otherwise. `t` orders the queue.
  v1::Migration& Migration(const std::string& id, const std::string& vm,
                           const std::string& source, int64_t t,
                           v1::MigrationPhase phase = v1::MIGRATION_PHASE_PENDING,
                           const std::string& target = "") {
    v1::Migration& m = snap_.migrations.emplace_back();
    m.set_id(id);
    m.set_vm_name(vm);
    m.set_source_host(source);
    m.set_target_host(target);
    m.set_phase(phase);
    m.mutable_create_time()->set_seconds(t);
    return m;
  }
  const ClusterSnapshot& snapshot() const { return snap_; }
  ClusterSnapshot& mutable_snapshot() { return snap_; }

 private:
  ClusterSnapshot snap_;
};

}  // namespace ferry::controller::scheduler::testing

#endif  // FERRY_CONTROLLER_SCHEDULER_TEST_CLUSTER_H_
