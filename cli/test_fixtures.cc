#include "cli/test_fixtures.h"

namespace ferry::cli::testing {

google::protobuf::Timestamp Ts(absl::Time t) {
  google::protobuf::Timestamp ts;
  ts.set_seconds(absl::ToUnixSeconds(t));
  ts.set_nanos(static_cast<int32_t>(
      (t - absl::FromUnixSeconds(absl::ToUnixSeconds(t))) / absl::Nanoseconds(1)));
  return ts;
}

google::protobuf::Duration Dur(absl::Duration d) {
  google::protobuf::Duration out;
  int64_t ns = absl::ToInt64Nanoseconds(d);
  out.set_seconds(ns / 1000000000);
  out.set_nanos(static_cast<int32_t>(ns % 1000000000));
  return out;
}

v1::Host NodeA() {
  v1::Host h;
  h.set_name("node-a");
  v1::HostInfo* i = h.mutable_info();
  i->set_name("node-a");
  i->set_agent_address("10.0.0.1:7401");
  i->set_migration_address("10.0.1.1:7402");
  i->mutable_capacity()->set_vcpus(16);
  i->mutable_capacity()->set_memory_bytes(64ull << 30);
  i->mutable_allocated()->set_vcpus(6);
  i->mutable_allocated()->set_memory_bytes(5ull << 30);
  i->mutable_allocated()->set_vms(2);
  i->add_backends(v1::VM_BACKEND_KVM);
  i->add_backends(v1::VM_BACKEND_SOFT);
  (*i->mutable_labels())["zone"] = "a";
  i->set_agent_version("0.3.0");
  i->set_min_protocol_version(1);
  i->set_max_protocol_version(1);
  h.mutable_scheduled()->set_vcpus(6);
  h.mutable_scheduled()->set_memory_bytes(6ull << 30);
  h.mutable_scheduled()->set_vms(3);
  h.set_readiness(v1::HOST_READINESS_READY);
  *h.mutable_register_time() = Ts(kNow - absl::Hours(51));
  *h.mutable_last_heartbeat_time() = Ts(kNow - absl::Seconds(3));
  h.set_resource_version(7);
  return h;
}

v1::Host NodeB() {
  v1::Host h;
  h.set_name("node-b");
  v1::HostInfo* i = h.mutable_info();
  i->set_name("node-b");
  i->set_agent_address("10.0.0.2:7401");
  i->mutable_capacity()->set_vcpus(8);
  i->mutable_capacity()->set_memory_bytes(32ull << 30);
  i->add_backends(v1::VM_BACKEND_SOFT);
  i->set_agent_version("0.3.0");
  h.set_readiness(v1::HOST_READINESS_READY);
  h.set_cordoned(true);
  h.set_cordon_reason("disk swap");
  *h.mutable_register_time() = Ts(kNow - absl::Seconds(45));
  h.set_resource_version(2);
  return h;
}

v1::Vm Web1() {
  v1::Vm vm;
  v1::VmSpec* s = vm.mutable_spec();
  s->set_name("web-1");
  s->set_memory_bytes(1ull << 30);
  s->set_vcpu_count(2);
  s->set_backend(v1::VM_BACKEND_AUTO);
  (*s->mutable_labels())["tier"] = "web";
  s->mutable_workload()->set_kind(v1::WORKLOAD_KIND_UNIFORM);
  s->mutable_workload()->set_working_set_bytes(512ull << 20);
  s->mutable_workload()->set_dirty_rate_bytes_per_s(100ull << 20);
  v1::VmStatus* st = vm.mutable_status();
  st->set_phase(v1::VM_PHASE_RUNNING);
  st->set_host("node-a");
  st->set_backend(v1::VM_BACKEND_KVM);
  st->set_dirty_rate_bytes_per_s(95ull << 20);
  st->set_tracking_mode(v1::DIRTY_TRACKING_MODE_RING);
  *st->mutable_started_time() = Ts(kNow - absl::Seconds(300));
  vm.set_uid("uid-web-1");
  *vm.mutable_create_time() = Ts(kNow - absl::Seconds(303));
  vm.set_resource_version(4);
  return vm;
}

v1::Vm Db1() {
  v1::Vm vm;
  vm.mutable_spec()->set_name("db-1");
  vm.mutable_spec()->set_memory_bytes(4ull << 30);
  vm.mutable_spec()->set_vcpu_count(4);
  vm.mutable_status()->set_phase(v1::VM_PHASE_PENDING);
  vm.set_uid("uid-db-1");
  *vm.mutable_create_time() = Ts(kNow - absl::Hours(2));
  return vm;
}

v1::Migration Mig1() {
  v1::Migration m;
  m.set_id("mig-1");
  m.set_vm_name("web-1");
  m.set_source_host("node-a");
  m.set_target_host("node-b");
  m.set_phase(v1::MIGRATION_PHASE_TRANSFERRING);
  v1::MigrationProgress* p = m.mutable_progress();
  p->set_migration_id("mig-1");
  p->set_phase(v1::MIGRATION_PHASE_TRANSFERRING);
  p->set_round(2);
  p->set_total_bytes(1ull << 30);
  p->set_remaining_bytes(256ull << 20);
  p->set_payload_bytes(900ull << 20);
  p->set_wire_bytes(850ull << 20);
  p->set_dirty_rate_bytes_per_s(100ull << 20);
  p->set_bandwidth_bytes_per_s(1ull << 30);
  *p->mutable_expected_downtime() = Dur(absl::Milliseconds(35));
  *p->mutable_elapsed() = Dur(absl::Seconds(11));
  *m.mutable_create_time() = Ts(kNow - absl::Seconds(12));
  return m;
}

v1::Migration Mig2() {
  v1::Migration m;
  m.set_id("mig-2");
  m.set_vm_name("db-1");
  m.set_source_host("node-a");
  m.set_phase(v1::MIGRATION_PHASE_PENDING);
  m.set_pending_reason(v1::PENDING_REASON_NO_CAPACITY);
  m.set_pending_message("no host has 4GiB free");
  *m.mutable_create_time() = Ts(kNow - absl::Minutes(3));
  return m;
}

v1::Migration Mig3() {
  v1::Migration m;
  m.set_id("mig-3");
  m.set_vm_name("web-1");
  m.set_vm_uid("uid-web-1");
  m.set_source_host("node-b");
  m.set_target_host("node-a");
  m.set_requested_target_host("node-a");
  m.set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
  m.mutable_requested_policy()->set_streams(4);
  *m.mutable_policy()->mutable_max_downtime() = Dur(absl::Milliseconds(50));
  m.mutable_policy()->set_streams(4);
  m.mutable_policy()->set_auto_converge(true);
  m.mutable_policy()->set_compression(v1::COMPRESSION_LZ4);
  absl::Time t0 = kNow - absl::Hours(1);
  *m.mutable_create_time() = Ts(t0);
  *m.mutable_start_time() = Ts(t0 + absl::Seconds(1));
  *m.mutable_end_time() = Ts(t0 + absl::Seconds(9));
  int offsets_ms[] = {0, 500, 1000, 8000, 8100, 8400};
  v1::MigrationPhase phases[] = {
      v1::MIGRATION_PHASE_PENDING,    v1::MIGRATION_PHASE_PREPARING,
      v1::MIGRATION_PHASE_TRANSFERRING, v1::MIGRATION_PHASE_SWITCHOVER,
      v1::MIGRATION_PHASE_FINISHING,  v1::MIGRATION_PHASE_SUCCEEDED};
  for (int i = 0; i < 6; ++i) {
    v1::PhaseTransition* tr = m.add_transitions();
    tr->set_phase(phases[i]);
    *tr->mutable_time() = Ts(t0 + absl::Milliseconds(offsets_ms[i]));
  }
  // Two samples in round 0, one in round 1: the history shows the last
  // of each round.
  uint64_t remaining[] = {800ull << 20, 300ull << 20, 20ull << 20};
  uint32_t rounds[] = {0, 0, 1};
  for (int i = 0; i < 3; ++i) {
    v1::MigrationProgress* s = m.add_progress_samples();
    s->set_round(rounds[i]);
    s->set_remaining_bytes(remaining[i]);
    s->set_total_bytes(1ull << 30);
    s->set_dirty_rate_bytes_per_s(50ull << 20);
    s->set_bandwidth_bytes_per_s(500ull << 20);
    *s->mutable_elapsed() = Dur(absl::Seconds(2 * (i + 1)));
    *s->mutable_expected_downtime() = Dur(absl::Milliseconds(40));
  }
  v1::MigrationResult* r = m.mutable_result();
  r->set_phase(v1::MIGRATION_PHASE_SUCCEEDED);
  r->set_vm_host("node-a");
  *r->mutable_downtime() = Dur(absl::Milliseconds(42));
  *r->mutable_total_time() = Dur(absl::Milliseconds(8400));
  r->set_rounds(2);
  r->set_wire_bytes(1100ull << 20);
  r->set_pages_sent(281600);
  r->set_memory_verified(true);
  return m;
}

}  // namespace ferry::cli::testing
