// ferry-agent: the per-host daemon. Serves AgentService and the migration
// data plane (MigrationService) on one gRPC port, owns this host's VMs,
// samples their dirty rates, runs migrations in and out.
//
//   ferry-agent --listen=127.0.0.1:0 --port_file=/run/ferry/port
//       --data_dir=/var/lib/ferry/agent [--backend=auto|kvm|soft]
//       [--name=host-a] [--labels=zone=a,rack=3]
//       [--memory_capacity=64GiB] [--vcpu_capacity=32]
//       [--stats_interval=1s] [--shutdown_grace=5s]
//       [--migration_prepare_ttl=60s] [--migration_idle_timeout=60s]
//       [--metrics_listen=127.0.0.1:9464]
//       [--controller=controller-host:port]
//
// stdout carries exactly one line, once serving:
//   ferry-agent listening on 127.0.0.1:41234
// and, only with --metrics_listen, a second one (docs/metrics.md):
//   ferry-agent metrics on http://127.0.0.1:9464/metrics
// Logs go to stderr. SIGTERM/SIGINT: stop taking calls, abort migrations,
// destroy every VM, exit 0. Exit status 2 = bad flags, 1 = cannot start.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>

#include "common/daemon/signals.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/metrics/agent_collector.h"
#include "agent/migration/destination/incoming.h"
#include "agent/service/agent_service.h"
#include "agent/service/controller_link.h"
#include "agent/service/data_dir.h"
#include "agent/service/engine_hooks.h"
#include "agent/service/host_info.h"
#include "agent/service/log.h"
#include "agent/service/migration_hooks.h"
#include "agent/service/proto_util.h"
#include "agent/service/server.h"
#include "agent/service/soft_port.h"
#include "agent/service/vm_registry.h"
#include "common/metrics/metrics_server.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port for gRPC; port 0 picks a free port (printed on stdout)");
ABSL_FLAG(std::string, port_file, "",
          "if set, the bound host:port is written here (atomically) once "
          "serving, and removed at exit");
ABSL_FLAG(std::string, data_dir, "/var/lib/ferry/agent",
          "agent state; created if missing, locked so two agents cannot "
          "share it");
ABSL_FLAG(std::string, controller, "",
          "host:port of the ferry-controller to register with and heartbeat "
          "to; empty = standalone");
ABSL_FLAG(std::string, backend, "auto",
          "auto (KVM if usable, else soft) | kvm | soft");
ABSL_FLAG(std::string, kvm_device, "/dev/kvm", "KVM device path");
ABSL_FLAG(std::string, name, "", "agent name in the cluster; default hostname");
ABSL_FLAG(std::string, labels, "", "host labels: k=v,k2=v2");
ABSL_FLAG(std::string, memory_capacity, "",
          "memory VMs may use (e.g. 8GiB); default RAM minus max(1GiB, 10%)");
ABSL_FLAG(uint32_t, vcpu_capacity, 0, "vCPUs VMs may use; 0 = online CPUs");
ABSL_FLAG(absl::Duration, stats_interval, absl::Seconds(1),
          "dirty-rate sampling period per VM");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(5),
          "how long in-flight calls may run after SIGTERM");
ABSL_FLAG(absl::Duration, migration_prepare_ttl, absl::Seconds(60),
          "an incoming migration with no Hello within this is dropped "
          "(default for PrepareIncomingRequest.ttl = 0)");
ABSL_FLAG(absl::Duration, migration_idle_timeout, absl::Seconds(60),
          "an incoming migration with no data from the source for this long "
          "is aborted (the source died)");
// Off by default: with it, every KVM VM that has the dirty ring keeps dirty
// logging on so the registry can harvest per-vCPU rates each interval. On
// kvm_pvm (shadow paging) that is a ~5.6 us write-protect fault per page
// first written in each interval: ~28% of a vCPU at 50K pages/s, paid by
// the guest all the time, not only while migrating. The page sampler's
// per-VM rate costs nothing and is always on.
ABSL_FLAG(bool, vcpu_dirty_rates, false,
          "per-vCPU dirty rates from KVM's dirty ring (keeps dirty logging on "
          "for KVM VMs; see docs/metrics.md for the cost)");
// Off by default so a plain start keeps its one-line stdout contract;
// deployments set it (deploy/prometheus scrapes it).
ABSL_FLAG(std::string, metrics_listen, "",
          "host:port for the Prometheus /metrics endpoint (port 0 picks a "
          "free port, printed on a second stdout line); empty = off");

namespace ferry::service {
namespace {

constexpr char kAgentVersion[] = "ferry-agent 0.1.0-dev";

int BadFlag(const absl::Status& status) {
  LogError(status.message());
  return 2;
}

int Run(int signal_fd) {
  // --- flags ----------------------------------------------------------------
  absl::StatusOr<std::map<std::string, std::string>> labels =
      ParseLabels(absl::GetFlag(FLAGS_labels));
  if (!labels.ok()) return BadFlag(labels.status());
  const HostResourcesProbe host = ProbeHostResources();
  HostCapacity capacity;
  capacity.memory_bytes = DefaultMemoryCapacity(host.memory_bytes);
  if (!absl::GetFlag(FLAGS_memory_capacity).empty()) {
    absl::StatusOr<uint64_t> m = ParseByteSize(absl::GetFlag(FLAGS_memory_capacity));
    if (!m.ok()) {
      return BadFlag(absl::InvalidArgumentError(
          absl::StrCat("--memory_capacity: ", m.status().message())));
    }
    capacity.memory_bytes = *m;
  }
  capacity.vcpus = absl::GetFlag(FLAGS_vcpu_capacity) != 0
                       ? absl::GetFlag(FLAGS_vcpu_capacity)
                       : host.cpus;
  if (absl::GetFlag(FLAGS_stats_interval) <= absl::ZeroDuration()) {
    return BadFlag(absl::InvalidArgumentError("--stats_interval must be > 0"));
  }
  const std::string name =
      absl::GetFlag(FLAGS_name).empty() ? HostName() : absl::GetFlag(FLAGS_name);
  if (absl::GetFlag(FLAGS_migration_prepare_ttl) <= absl::ZeroDuration() ||
      absl::GetFlag(FLAGS_migration_idle_timeout) <= absl::ZeroDuration()) {
    return BadFlag(absl::InvalidArgumentError(
        "--migration_prepare_ttl and --migration_idle_timeout must be > 0"));
  }

  // --- host -------------------------------------------------------------------
  absl::StatusOr<DataDirLock> data_dir =
      DataDirLock::Acquire(absl::GetFlag(FLAGS_data_dir));
  if (!data_dir.ok()) {
    LogError("cannot start: ", data_dir.status().ToString());
    return 1;
  }
  const std::string kvm_device = absl::GetFlag(FLAGS_kvm_device);
  absl::StatusOr<BackendChoice> backends = ChooseBackends(
      absl::GetFlag(FLAGS_backend), kvm_device, MakeSoftMemoryPortFactory());
  if (!backends.ok()) {
    if (backends.status().code() == absl::StatusCode::kInvalidArgument) {
      return BadFlag(backends.status());
    }
    LogError("cannot start: ", backends.status().ToString());
    return 1;
  }
  absl::Status kvm_why;
  v1::KvmCapabilities kvm_caps = ProbeKvmCapabilities(kvm_device, &kvm_why);

  // --- services -----------------------------------------------------------------
  BackendSet set;
  set.kvm = backends->kvm.get();
  set.kvm_status = backends->kvm_status;
  set.soft = backends->soft.get();
  set.preferred = backends->preferred;
  RegistryOptions options;
  options.host_name = name;
  options.capacity = capacity;
  options.sample_interval = absl::GetFlag(FLAGS_stats_interval);
  options.vcpu_rates_from_ring = absl::GetFlag(FLAGS_vcpu_dirty_rates);
  VmRegistry registry(set, options);
  EngineHooksOptions engine_options;
  engine_options.host_name = name;
  // Incoming VMs are restored on the preferred backend (EngineMigrationHooks).
  engine_options.incoming_backend =
      set.preferred == v1::VM_BACKEND_KVM ? set.kvm : set.soft;
  engine_options.prepare_ttl = absl::GetFlag(FLAGS_migration_prepare_ttl);
  engine_options.idle_timeout = absl::GetFlag(FLAGS_migration_idle_timeout);
  EngineMigrationHooks hooks(registry, engine_options);

  v1::HostInfo info;
  info.set_name(name);
  if (set.kvm != nullptr) info.add_backends(v1::VM_BACKEND_KVM);
  if (set.soft != nullptr) {
    info.add_backends(v1::VM_BACKEND_SOFT);
    kvm_caps.add_tracking_modes(v1::DIRTY_TRACKING_MODE_SOFTMMU);
  }
  *info.mutable_kvm() = kvm_caps;
  info.mutable_labels()->insert(labels->begin(), labels->end());
  // HostInfo has no field for these yet (see the report): reserved labels.
  (*info.mutable_labels())[absl::StrCat(kReservedLabelPrefix, "default-backend")] =
      backends->summary;
  (*info.mutable_labels())[absl::StrCat(kReservedLabelPrefix, "kvm")] =
      kvm_why.ok() ? std::string("available") : kvm_why.ToString();
  info.set_agent_version(kAgentVersion);
  info.set_instance_id(RandomHexId());
  ToProtoTime(absl::Now(), info.mutable_start_time());
  const std::string instance_id = info.instance_id();
  AgentServiceImpl service(registry, hooks, std::move(info));

  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> m =
        metrics::MetricsServer::Start(absl::GetFlag(FLAGS_metrics_listen));
    if (!m.ok()) {
      if (m.status().code() == absl::StatusCode::kInvalidArgument) {
        return BadFlag(absl::InvalidArgumentError(
            absl::StrCat("--metrics_listen: ", m.status().message())));
      }
      LogError("cannot start: ", m.status().ToString());
      return 1;
    }
    metrics_server = std::move(*m);
    agent_metrics::AgentCollectorOptions collector_options;
    collector_options.host = name;
    metrics_server->AddCollectable(std::make_shared<agent_metrics::AgentCollector>(
        registry, &hooks, collector_options));
  }

  ServerOptions server_options;
  server_options.listen = absl::GetFlag(FLAGS_listen);
  server_options.services = {&service, hooks.migration_service()};
  server_options.configure = &::ferry::migration::IncomingMigrations::ConfigureServer;
  absl::StatusOr<std::unique_ptr<GrpcServer>> server =
      GrpcServer::Start(server_options);
  if (!server.ok()) {
    if (server.status().code() == absl::StatusCode::kInvalidArgument) {
      return BadFlag(server.status());
    }
    LogError("cannot start: ", server.status().ToString());
    return 1;
  }
  service.SetAgentAddress((*server)->address());
  hooks.SetEndpoint((*server)->address());
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty()) {
    absl::Status s = WriteFileAtomically(port_file, (*server)->address() + "\n");
    if (!s.ok()) {
      LogError("cannot start: --port_file: ", s.ToString());
      return 1;
    }
  }
  LogInfo("started: name=", name, " instance=", instance_id, " data_dir=",
          data_dir->dir(), " backend=", backends->summary,
          " capacity=", capacity.memory_bytes, " bytes/", capacity.vcpus,
          " vCPUs pid=", getpid());
  std::printf("ferry-agent listening on %s\n", (*server)->address().c_str());
  if (metrics_server != nullptr) {
    std::printf("ferry-agent metrics on %s\n", metrics_server->url().c_str());
  }
  std::fflush(stdout);
  // Registration and heartbeats run on their own thread and never block
  // VMs; a controller that is down is retried with backoff.
  std::unique_ptr<ControllerLink> controller_link;
  if (!absl::GetFlag(FLAGS_controller).empty()) {
    ControllerLinkOptions link_options;
    link_options.controller = absl::GetFlag(FLAGS_controller);
    link_options.agent = (*server)->address();
    // Unhealthy when this agent can no longer create VMs: its data dir
    // stopped taking writes, or the KVM device it prefers went away.
    link_options.health_check = [dir = data_dir->dir(),
                                 kvm = set.preferred == v1::VM_BACKEND_KVM,
                                 kvm_device]() -> absl::Status {
      if (absl::Status s = ProbeDirWritable(dir); !s.ok()) return s;
      if (kvm) {
        if (absl::Status s = ProbeDevice(kvm_device); !s.ok()) {
          return absl::FailedPreconditionError(
              absl::StrCat("the KVM backend cannot create VMs: ", s.message()));
        }
      }
      return absl::OkStatus();
    };
    controller_link = std::make_unique<ControllerLink>(link_options);
    controller_link->Start();
    LogInfo("registering with the controller at ", link_options.controller);
  }

  // --- shutdown ------------------------------------------------------------------
  const int signo = daemon::WaitForShutdownSignal(signal_fd);
  LogInfo("received ", strsignal(signo), "; shutting down");
  controller_link.reset();  // stop heartbeating before the service drains
  if (!service.Drain(absl::Now() + absl::GetFlag(FLAGS_shutdown_grace))) {
    LogWarning("calls still running after --shutdown_grace; cancelling them");
  }
  metrics_server.reset();  // no scrape may reach the hooks or VMs below
  hooks.Shutdown();  // aborts migrations, ends their streams
  (*server)->Shutdown(absl::ZeroDuration());
  const int destroyed = registry.Shutdown();
  if (!port_file.empty()) unlink(port_file.c_str());
  LogInfo("stopped: destroyed ", destroyed, " VM(s); exiting");
  return 0;
}

}  // namespace
}  // namespace ferry::service

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the ferry per-host agent: serves AgentService over gRPC");
  absl::ParseCommandLine(argc, argv);
  const int signal_fd = ferry::daemon::BlockShutdownSignals();
  if (signal_fd < 0) {
    ferry::service::LogError("cannot set up signal handling: ",
                             std::strerror(errno));
    return 1;
  }
  return ferry::service::Run(signal_fd);
}
