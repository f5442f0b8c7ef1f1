// ferry-controller: the cluster's control plane. Serves ControllerService
// (gRPC) over RocksDB state in --data_dir, runs the migration orchestrator
// and the host heartbeat monitor.
//
//   ferry-controller --listen=127.0.0.1:0 --port_file=/run/ferry/controller
//       --data_dir=/var/lib/ferry/controller [--heartbeat_interval=2s]
//       [--max_outbound_per_host=2] [--max_inbound_per_host=2]
//       [--max_parallel_migrations=5] [--rest_listen=127.0.0.1:8080]
//       [--rest_port_file=PATH] [--metrics_listen=127.0.0.1:9470]
//
// stdout carries exactly one line, once serving:
//   ferry-controller listening on 127.0.0.1:41234
// The REST gateway's and the metrics endpoint's bound addresses are logged
// (and the REST one written to --rest_port_file), never printed on stdout.
// Logs go to stderr. SIGTERM/SIGINT: stop taking calls, stop scheduling,
// abandon (not abort) in-flight migrations — their state is persisted and
// the next start reconciles them with the agents — close the store, exit 0.
// Exit status 2 = bad flags, 1 = cannot start (data dir locked by another
// controller, port taken, store unreadable).
//
// --test_pause_before_phase=PENDING|PREPARING|FINISHING|CONFIRMING is for
// tests only (tests/controller_process_test.cc): the process SIGSTOPs
// itself once, right after committing that phase and before acting on it,
// so a test can kill -9 it at an exact point of a migration.
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "common/daemon/signals.h"
#include "absl/flags/flag.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/metrics/metrics_server.h"
#include "controller/api/controller_service.h"
#include "controller/api/rest/rest_server.h"
#include "controller/metrics/controller_metrics.h"
#include "controller/metrics/request_interceptor.h"
#include "controller/cluster/host_registry.h"
#include "controller/orchestrator/orchestrator.h"
#include "controller/store/store.h"

ABSL_FLAG(std::string, listen, "127.0.0.1:0",
          "host:port for gRPC; port 0 picks a free port (printed on stdout)");
ABSL_FLAG(std::string, port_file, "",
          "if set, the bound host:port is written here (atomically) once "
          "serving, and removed at exit");
ABSL_FLAG(std::string, data_dir, "/var/lib/ferry/controller",
          "RocksDB state; created if missing, locked so two controllers "
          "cannot share it");
ABSL_FLAG(absl::Duration, heartbeat_interval, absl::Seconds(2),
          "how often agents heartbeat; 3 missed make a host UNKNOWN");
ABSL_FLAG(uint32_t, max_outbound_per_host, 2,
          "migrations a host sends at once (0 = unlimited)");
ABSL_FLAG(uint32_t, max_inbound_per_host, 2,
          "migrations a host receives at once (0 = unlimited)");
ABSL_FLAG(uint32_t, max_parallel_migrations, 5,
          "migrations in flight in the cluster (0 = unlimited)");
ABSL_FLAG(std::string, rest_listen, "",
          "host:port for the REST/JSON gateway (controller/api/rest); empty = off");
ABSL_FLAG(std::string, rest_port_file, "",
          "if set, the REST gateway's bound host:port is written here once "
          "serving");
ABSL_FLAG(std::string, metrics_listen, "",
          "host:port for the Prometheus /metrics endpoint (docs/metrics.md); "
          "empty = off");
ABSL_FLAG(std::string, test_pause_before_phase, "",
          "TEST ONLY, never in production: the first time the controller is "
          "about to act on this migration phase (PENDING, PREPARING, "
          "FINISHING or CONFIRMING; already committed), the process stops "
          "itself with SIGSTOP so a test can kill it at that exact point");
ABSL_FLAG(absl::Duration, shutdown_grace, absl::Seconds(2),
          "how long in-flight calls may run after SIGTERM");

namespace ferry::controller {
namespace {

template <typename... Args>
void Log(const char* level, const Args&... args) {
  const std::string line = absl::StrCat(
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      " ", level, " ferry-controller: ", args..., "\n");
  std::fputs(line.c_str(), stderr);
}

int BadFlag(const std::string& message) {
  Log("ERROR", message);
  return 2;
}

// absl::ParseCommandLine exits 1 on an unknown flag or an unparsable
// value; this daemon promises 2 for bad flags, so they are checked first.
// Flags absl handles itself (--help, --flagfile, ...) are left to it.
bool PrecheckFlags(int argc, char** argv, std::string* error) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "--") && !absl::ConsumePrefix(&arg, "-")) continue;
    const size_t eq = arg.find('=');
    absl::string_view name = arg.substr(0, eq);
    std::optional<std::string> value;
    if (eq != absl::string_view::npos) value = std::string(arg.substr(eq + 1));
    for (absl::string_view builtin : {"help", "helpfull", "helpshort", "helppackage",
                                      "version", "only_check_args", "flagfile",
                                      "fromenv", "tryfromenv", "undefok"}) {
      if (name == builtin) return true;
    }
    absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
    if (flag == nullptr && absl::ConsumePrefix(&name, "no")) {
      flag = absl::FindCommandLineFlag(name);
      if (flag != nullptr && flag->IsOfType<bool>() && !value) continue;
      flag = nullptr;
    }
    if (flag == nullptr) {
      *error = absl::StrCat("unknown flag --", name, " (see --help)");
      return false;
    }
    if (!value) {
      if (flag->IsOfType<bool>()) continue;
      if (i + 1 >= argc) {
        *error = absl::StrCat("--", name, " needs a value");
        return false;
      }
      value = argv[++i];
    }
    std::string why;
    if (!flag->ParseFrom(*value, &why)) {
      *error = absl::StrCat("--", name, "=", *value, ": ", why);
      return false;
    }
  }
  return true;
}

bool ValidHostPort(const std::string& s) {
  const size_t colon = s.rfind(':');
  int port = -1;
  return colon != std::string::npos && colon > 0 &&
         absl::SimpleAtoi(s.substr(colon + 1), &port) && port >= 0 && port <= 65535;
}

bool WriteFileAtomically(const std::string& path, const std::string& contents) {
  const std::string tmp = absl::StrCat(path, ".tmp.", getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << contents;
    if (!out.good()) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

int Run(int signal_fd) {
  const std::string listen = absl::GetFlag(FLAGS_listen);
  if (!ValidHostPort(listen)) {
    return BadFlag(absl::StrCat("--listen must be host:port, got '", listen, "'"));
  }
  const std::string rest_listen = absl::GetFlag(FLAGS_rest_listen);
  if (!rest_listen.empty() && !ValidHostPort(rest_listen)) {
    return BadFlag(absl::StrCat("--rest_listen must be host:port, got '", rest_listen, "'"));
  }
  const absl::Duration heartbeat = absl::GetFlag(FLAGS_heartbeat_interval);
  if (heartbeat < absl::Milliseconds(10) || heartbeat > absl::Minutes(10)) {
    return BadFlag("--heartbeat_interval must be between 10ms and 10m");
  }
  const std::string data_dir = absl::GetFlag(FLAGS_data_dir);
  if (data_dir.empty()) return BadFlag("--data_dir is required");

  std::error_code ec;
  std::filesystem::create_directories(data_dir, ec);
  if (ec) {
    Log("ERROR", "cannot start: --data_dir ", data_dir, ": ", ec.message());
    return 1;
  }
  // The store reports its commit latency to the metrics once they exist.
  std::atomic<ControllerMetrics*> commit_observer{nullptr};
  StoreOptions store_options;
  store_options.on_commit_write = [&commit_observer](absl::Duration d) {
    if (ControllerMetrics* m = commit_observer.load()) m->ObserveStoreCommit(d);
  };
  absl::StatusOr<std::unique_ptr<Store>> store =
      Store::Open(data_dir + "/store", store_options);
  if (!store.ok()) {
    Log("ERROR", "cannot start: ", store.status().ToString(),
        store.status().code() == absl::StatusCode::kFailedPrecondition
            ? " (is another ferry-controller using this --data_dir?)"
            : "");
    return 1;
  }

  OrchestratorOptions oopts;
  oopts.limits.max_outbound_per_host = absl::GetFlag(FLAGS_max_outbound_per_host);
  oopts.limits.max_inbound_per_host = absl::GetFlag(FLAGS_max_inbound_per_host);
  oopts.limits.max_cluster = absl::GetFlag(FLAGS_max_parallel_migrations);
  if (const std::string p = absl::GetFlag(FLAGS_test_pause_before_phase); !p.empty()) {
    v1::MigrationPhase phase;
    if (!v1::MigrationPhase_Parse(absl::StrCat("MIGRATION_PHASE_", p), &phase) ||
        (phase != v1::MIGRATION_PHASE_PENDING && phase != v1::MIGRATION_PHASE_PREPARING &&
         phase != v1::MIGRATION_PHASE_FINISHING &&
         phase != v1::MIGRATION_PHASE_CONFIRMING)) {
      return BadFlag(absl::StrCat("--test_pause_before_phase must be PENDING, PREPARING, "
                                  "FINISHING or CONFIRMING, got '", p, "'"));
    }
    Log("WARNING", "--test_pause_before_phase=", p, " is set: this process will stop itself");
    auto fired = std::make_shared<std::atomic<bool>>(false);
    oopts.test_before_phase = [phase, fired](v1::MigrationPhase now) {
      if (now == phase && !fired->exchange(true)) raise(SIGSTOP);
    };
  }
  auto orchestrator = std::make_unique<Orchestrator>(store->get(), oopts);
  HostRegistryOptions hopts;
  hopts.heartbeat_interval = heartbeat;
  Orchestrator* orch = orchestrator.get();
  hopts.on_change = [orch] { orch->Kick(); };
  auto hosts = std::make_unique<HostRegistry>(store->get(), hopts);
  ControllerServiceImpl service(store->get(), hosts.get(), orchestrator.get());

  // Metrics first: the gRPC server's interceptor records into them.
  auto metrics = std::make_shared<ControllerMetrics>(**store);
  std::unique_ptr<metrics::MetricsServer> metrics_server;
  if (const std::string ml = absl::GetFlag(FLAGS_metrics_listen); !ml.empty()) {
    absl::StatusOr<std::unique_ptr<metrics::MetricsServer>> m =
        metrics::MetricsServer::Start(ml);
    if (!m.ok()) {
      if (m.status().code() == absl::StatusCode::kInvalidArgument) {
        return BadFlag(absl::StrCat("--metrics_listen: ", m.status().message()));
      }
      Log("ERROR", "cannot start: ", m.status().ToString());
      return 1;
    }
    metrics_server = std::move(*m);
    metrics_server->AddCollectable(metrics);
  }
  commit_observer.store(metrics.get());

  grpc::ServerBuilder builder;
  int port = 0;
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>>
      interceptors;
  interceptors.push_back(std::make_unique<RequestMetricsInterceptorFactory>(metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    Log("ERROR", "cannot start: cannot listen on ", listen,
        " (address in use, not local, or malformed)");
    return 1;
  }
  const std::string address = absl::StrCat(listen.substr(0, listen.rfind(':')), ":", port);
  if (absl::Status s = orchestrator->Start(); !s.ok()) {
    Log("ERROR", "cannot start: ", s.ToString());
    return 1;
  }
  hosts->Start();
  // REST/JSON: forwards every call to this server's gRPC service through
  // an in-process channel (one implementation, one validation).
  std::unique_ptr<rest::RestServer> rest_server;
  if (!rest_listen.empty()) {
    rest::RestOptions rest_options;
    rest_options.http.listen_address = rest_listen;
    grpc::ChannelArguments channel_args;
    channel_args.SetMaxReceiveMessageSize(-1);
    absl::StatusOr<std::unique_ptr<rest::RestServer>> r =
        rest::RestServer::Start(rest_options, server->InProcessChannel(channel_args));
    if (!r.ok()) {
      Log("ERROR", "cannot start the REST gateway on ", rest_listen, ": ",
          r.status().ToString());
      return 1;
    }
    rest_server = std::move(*r);
    Log("INFO", "REST gateway on http://", rest_server->address());
    const std::string rest_port_file = absl::GetFlag(FLAGS_rest_port_file);
    if (!rest_port_file.empty() &&
        !WriteFileAtomically(rest_port_file, rest_server->address() + "\n")) {
      Log("ERROR", "cannot start: cannot write --rest_port_file ", rest_port_file);
      return 1;
    }
  }
  if (metrics_server != nullptr) Log("INFO", "metrics on ", metrics_server->url());

  Log("INFO", "started: data_dir=", data_dir, " heartbeat=",
      absl::FormatDuration(heartbeat), " limits out/in/cluster=",
      oopts.limits.max_outbound_per_host, "/", oopts.limits.max_inbound_per_host, "/",
      oopts.limits.max_cluster, " revision=", (*store)->revision(), " pid=", getpid());
  std::printf("ferry-controller listening on %s\n", address.c_str());
  std::fflush(stdout);
  // The port file comes last: whoever waits for it can rely on the stdout
  // line being there too.
  const std::string port_file = absl::GetFlag(FLAGS_port_file);
  if (!port_file.empty() && !WriteFileAtomically(port_file, address + "\n")) {
    Log("ERROR", "cannot start: cannot write --port_file ", port_file);
    return 1;
  }

  const int signo = daemon::WaitForShutdownSignal(signal_fd);
  Log("INFO", "received ", strsignal(signo), "; shutting down");
  if (rest_server != nullptr) rest_server->Stop();  // before gRPC goes away
  server->Shutdown(absl::ToChronoTime(absl::Now() + absl::GetFlag(FLAGS_shutdown_grace)));
  hosts->Shutdown();
  // Abandons runners: in-flight migrations keep their persisted phase and
  // are reconciled by the next start; no agent is told to abort.
  orchestrator->Shutdown();
  server.reset();
  hosts.reset();
  orchestrator.reset();
  metrics_server.reset();  // no scrape may read the store below
  commit_observer.store(nullptr);
  metrics.reset();
  store->reset();
  if (!port_file.empty()) unlink(port_file.c_str());
  Log("INFO", "stopped");
  return 0;
}

}  // namespace
}  // namespace ferry::controller

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the ferry controller: cluster state, scheduling and live migrations");
  if (std::string error; !ferry::controller::PrecheckFlags(argc, argv, &error)) {
    std::fprintf(stderr, "ferry-controller: %s\n", error.c_str());
    return 2;
  }
  absl::ParseCommandLine(argc, argv);
  const int signal_fd = ferry::daemon::BlockShutdownSignals();
  if (signal_fd < 0) {
    std::fprintf(stderr, "cannot set up signal handling: %s\n", std::strerror(errno));
    return 1;
  }
  return ferry::controller::Run(signal_fd);
}
