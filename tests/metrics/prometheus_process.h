// A real Prometheus server for tests: Debian's `prometheus` binary on a
// loopback port with its own data dir, started and stopped by the test,
// and a client for its HTTP query API.
#ifndef FERRY_TESTS_METRICS_PROMETHEUS_PROCESS_H_
#define FERRY_TESTS_METRICS_PROMETHEUS_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/struct.pb.h"

namespace ferry::metrics_test {

class PrometheusProcess {
 public:
  // Writes `config_yaml` to <dir>/prometheus.yml and starts `binary` with
  // it on 127.0.0.1:<free port>; waits for /-/ready.
  static absl::StatusOr<std::unique_ptr<PrometheusProcess>> Start(
      const std::string& binary, const std::string& dir,
      const std::string& config_yaml, absl::Duration ready_timeout = absl::Seconds(30));
  ~PrometheusProcess();  // SIGTERM, then SIGKILL after 10 s

  const std::string& address() const { return address_; }
  std::string Log() const;

  // GET <target> and parse the JSON reply; INTERNAL unless HTTP 200 and
  // "status":"success". Returns the "data" member.
  absl::StatusOr<google::protobuf::Value> Api(const std::string& target) const;
  // /api/v1/query_range over [start, end] at `step`: data.result.
  absl::StatusOr<google::protobuf::ListValue> QueryRange(const std::string& expr,
                                                         absl::Time start, absl::Time end,
                                                         absl::Duration step) const;
  // /api/v1/query at `at`: data.result.
  absl::StatusOr<google::protobuf::ListValue> Query(const std::string& expr,
                                                    absl::Time at) const;

 private:
  PrometheusProcess() = default;
  std::string address_, log_path_;
  pid_t pid_ = -1;
};

// Every number in a query result (instant "value" or range "values"),
// parsed; NaN/Inf kept as such.
std::vector<double> ResultValues(const google::protobuf::ListValue& result);

}  // namespace ferry::metrics_test

#endif  // FERRY_TESTS_METRICS_PROMETHEUS_PROCESS_H_
