// ferry-demo: the quick start's main job against two running agents.
// Creates a VM with a dirtying workload on the source agent, lets it run,
// live-migrates it to the destination with a progress line per update,
// then checks on the destination that the guest kept running with zero
// self-check errors and that the source holds no copy. Prints a report
// and exits non-zero if anything is off. scripts/demo starts the agents.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controller/orchestrator/migration_driver.h"
#include "grpcpp/grpcpp.h"
#include "proto/agent.grpc.pb.h"

ABSL_FLAG(std::string, source, "", "source agent address (host:port)");
ABSL_FLAG(std::string, destination, "", "destination agent address");
ABSL_FLAG(std::string, vm, "demo-vm", "VM name");
ABSL_FLAG(uint64_t, memory_mib, 1024, "guest memory, MiB");
ABSL_FLAG(uint32_t, vcpus, 2, "vCPUs");
ABSL_FLAG(uint64_t, working_set_mib, 512, "working set the workload dirties");
ABSL_FLAG(uint64_t, dirty_rate_mib, 100, "target dirty rate, MiB/s");
ABSL_FLAG(int, warmup_s, 3, "seconds the workload runs before migrating");
ABSL_FLAG(uint32_t, streams, 2, "parallel page streams");
ABSL_FLAG(int, max_downtime_ms, 300, "downtime limit (QEMU's default)");

namespace ferry {
namespace {

using v1::AgentService;

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

std::string Mib(uint64_t bytes) {
  return absl::StrFormat("%.1f MiB", bytes / 1048576.0);
}

// One line per progress update: a log a person can follow, on any terminal.
void PrintProgress(const v1::MigrationProgress& p) {
  const double expected_ms = absl::ToDoubleMilliseconds(
      absl::Seconds(p.expected_downtime().seconds()) +
      absl::Nanoseconds(p.expected_downtime().nanos()));
  // Until a round has measured the bandwidth the estimate is "unbounded".
  const std::string expected =
      expected_ms < 3.6e6 ? absl::StrFormat("%.1f ms", expected_ms) : "-";
  std::printf(
      "  %-13s round %-3u sent %10s  remaining %10s  dirty %8s/s  "
      "bandwidth %9s/s  expected downtime %9s  throttle %u%%\n",
      v1::MigrationPhase_Name(p.phase()).substr(16).c_str(), p.round(),
      Mib(p.payload_bytes()).c_str(), Mib(p.remaining_bytes()).c_str(),
      Mib(p.dirty_rate_bytes_per_s()).c_str(),
      Mib(p.bandwidth_bytes_per_s()).c_str(), expected.c_str(),
      p.throttle_percent());
  std::fflush(stdout);
}

absl::StatusOr<v1::Vm> GetVm(AgentService::Stub& agent,
                             const std::string& name) {
  v1::AgentGetVmRequest req;
  req.set_name(name);
  v1::Vm vm;
  grpc::Status s = agent.GetVm(Ctx(absl::Seconds(10)).get(), req, &vm);
  if (!s.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                        s.error_message());
  }
  return vm;
}

double Ms(const google::protobuf::Duration& d) {
  return d.seconds() * 1e3 + d.nanos() / 1e6;
}

int Run() {
  const std::string name = absl::GetFlag(FLAGS_vm);
  auto source = AgentService::NewStub(grpc::CreateChannel(
      absl::GetFlag(FLAGS_source), grpc::InsecureChannelCredentials()));
  auto destination = AgentService::NewStub(grpc::CreateChannel(
      absl::GetFlag(FLAGS_destination), grpc::InsecureChannelCredentials()));

  v1::AgentCreateVmRequest create;
  v1::VmSpec* spec = create.mutable_spec();
  spec->set_name(name);
  spec->set_memory_bytes(absl::GetFlag(FLAGS_memory_mib) << 20);
  spec->set_vcpu_count(absl::GetFlag(FLAGS_vcpus));
  spec->set_backend(v1::VM_BACKEND_AUTO);
  spec->mutable_workload()->set_kind(v1::WORKLOAD_KIND_UNIFORM);
  spec->mutable_workload()->set_working_set_bytes(
      absl::GetFlag(FLAGS_working_set_mib) << 20);
  spec->mutable_workload()->set_dirty_rate_bytes_per_s(
      absl::GetFlag(FLAGS_dirty_rate_mib) << 20);
  v1::Vm vm;
  grpc::Status s = source->CreateVm(Ctx(absl::Seconds(60)).get(), create, &vm);
  if (!s.ok()) {
    std::fprintf(stderr, "demo: CreateVm on the source failed: %s\n",
                 s.error_message().c_str());
    return 1;
  }
  std::printf("created %s on %s: %s, %u vCPUs, backend %s, uniform writes "
              "over %s at %llu MiB/s\n",
              name.c_str(), absl::GetFlag(FLAGS_source).c_str(),
              Mib(spec->memory_bytes()).c_str(), spec->vcpu_count(),
              v1::VmBackend_Name(vm.status().backend()).c_str(),
              Mib(spec->workload().working_set_bytes()).c_str(),
              static_cast<unsigned long long>(
                  absl::GetFlag(FLAGS_dirty_rate_mib)));
  absl::SleepFor(absl::Seconds(absl::GetFlag(FLAGS_warmup_s)));
  absl::StatusOr<v1::Vm> before = GetVm(*source, name);
  if (!before.ok()) {
    std::fprintf(stderr, "demo: GetVm: %s\n", before.status().ToString().c_str());
    return 1;
  }
  std::printf("guest before: %llu pages written, self-check errors %llu\n",
              static_cast<unsigned long long>(before->status().guest().pages_written()),
              static_cast<unsigned long long>(before->status().selfcheck_errors()));

  controller::MigrationRequest request;
  request.vm_name = name;
  request.source_address = absl::GetFlag(FLAGS_source);
  request.destination_address = absl::GetFlag(FLAGS_destination);
  v1::MigrationPolicy& policy = request.policy;
  policy.mutable_max_downtime()->set_nanos(absl::GetFlag(FLAGS_max_downtime_ms) *
                                           1000000);
  policy.set_streams(absl::GetFlag(FLAGS_streams));
  policy.set_auto_converge(true);
  std::printf("migrating %s -> %s\n", request.source_address.c_str(),
              request.destination_address.c_str());
  controller::MigrationDetails details;
  v1::MigrationResult result =
      controller::RunMigration(request, PrintProgress, &details);

  std::printf("\nresult: %s%s%s\n", v1::MigrationPhase_Name(result.phase()).c_str(),
              result.message().empty() ? "" : ": ", result.message().c_str());
  std::printf("  total time        %8.1f ms (setup %.1f ms)\n",
              Ms(result.total_time()),
              absl::ToDoubleMilliseconds(details.setup_time));
  std::printf("  downtime          %8.1f ms\n", Ms(result.downtime()));
  std::printf("  rounds            %8u\n", result.rounds());
  std::printf("  pages sent        %8llu (%llu zero pages not sent)\n",
              static_cast<unsigned long long>(result.pages_sent()),
              static_cast<unsigned long long>(details.last_progress.zero_pages()));
  std::printf("  bytes on the wire %s (compression x%.2f)\n",
              Mib(result.wire_bytes()).c_str(),
              details.last_progress.compression_ratio());
  std::printf("  max throttle      %8u%%\n", result.max_throttle_percent());
  std::printf("  VM now on         %s\n", result.vm_host().c_str());
  if (result.phase() != v1::MIGRATION_PHASE_SUCCEEDED) return 1;

  // The proof: the guest runs on the destination, its counters went on from
  // where they were, its own page check found nothing wrong, and the source
  // holds no copy.
  absl::SleepFor(absl::Seconds(1));
  absl::StatusOr<v1::Vm> after = GetVm(*destination, name);
  absl::StatusOr<v1::Vm> gone = GetVm(*source, name);
  if (!after.ok()) {
    std::fprintf(stderr, "demo: the destination has no VM: %s\n",
                 after.status().ToString().c_str());
    return 1;
  }
  const uint64_t w0 = before->status().guest().pages_written();
  const uint64_t w1 = after->status().guest().pages_written();
  const uint64_t errors = after->status().selfcheck_errors();
  const bool source_clean = absl::IsNotFound(gone.status());
  std::printf("guest after:  %llu pages written (went on from %llu), phase %s, "
              "self-check errors %llu; source copy %s\n",
              static_cast<unsigned long long>(w1),
              static_cast<unsigned long long>(w0),
              v1::VmPhase_Name(after->status().phase()).c_str(),
              static_cast<unsigned long long>(errors),
              source_clean ? "gone" : "STILL PRESENT");
  const bool ok = w1 > w0 && errors == 0 && source_clean &&
                  after->status().phase() == v1::VM_PHASE_RUNNING;
  std::printf("%s\n", ok ? "live migration OK" : "live migration CHECK FAILED");
  return ok ? 0 : 1;
}

}  // namespace
}  // namespace ferry

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  if (absl::GetFlag(FLAGS_source).empty() ||
      absl::GetFlag(FLAGS_destination).empty()) {
    std::fprintf(stderr, "usage: demo --source=HOST:PORT --destination=HOST:PORT\n");
    return 2;
  }
  return ferry::Run();
}
