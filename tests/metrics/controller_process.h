// A real ferry-controller process for the metrics tests: port 0 +
// --port_file, its own data dir, --metrics_listen on a free loopback port,
// and the metrics address read back from its log. Also a way to run the
// ferryctl binary and capture what it prints.
#ifndef FERRY_TESTS_METRICS_CONTROLLER_PROCESS_H_
#define FERRY_TESTS_METRICS_CONTROLLER_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::metrics_test {

class ControllerProcess {
 public:
  // `extra` flags come after the defaults (--listen=127.0.0.1:0,
  // --port_file, --data_dir, --metrics_listen=127.0.0.1:0).
  ControllerProcess(const std::string& data_dir, const std::string& tag,
                    std::vector<std::string> extra = {});
  ~ControllerProcess();  // SIGKILL if still running
  ControllerProcess(const ControllerProcess&) = delete;
  ControllerProcess& operator=(const ControllerProcess&) = delete;

  // Waits for the port file and the "metrics on http://..." log line.
  absl::Status WaitReady(absl::Duration timeout = absl::Seconds(15));
  // Until `ready` hosts are HOST_READINESS_READY.
  absl::Status WaitHostsReady(int ready, absl::Duration timeout);

  std::string Log() const;
  const std::string& address() const { return address_; }
  const std::string& metrics_address() const { return metrics_address_; }
  v1::ControllerService::Stub& stub() { return *stub_; }

 private:
  std::string data_dir_, port_file_, stdout_, stderr_, address_, metrics_address_;
  pid_t pid_ = -1;
  std::unique_ptr<v1::ControllerService::Stub> stub_;
};

struct CommandResult {
  int exit_code = -1;  // -1: killed by a signal or did not start
  std::string out, err;
};
// Runs `argv` (argv[0] a path) to completion with stdout/stderr captured
// to files under TmpDir().
CommandResult RunCommand(const std::vector<std::string>& argv);

// "ferry-agent metrics on http://HOST:PORT/metrics" style line anywhere in
// `text` after `prefix` ("... metrics on http://"): HOST:PORT.
std::string MetricsAddressIn(const std::string& text, const std::string& prefix);

}  // namespace ferry::metrics_test

#endif  // FERRY_TESTS_METRICS_CONTROLLER_PROCESS_H_
