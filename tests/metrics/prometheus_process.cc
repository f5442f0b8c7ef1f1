#include "tests/metrics/prometheus_process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/metrics/http_get.h"
#include "google/protobuf/util/json_util.h"

extern char** environ;

namespace ferry::metrics_test {
namespace {

// Prometheus cannot report a port it picked itself, so the test picks one:
// bind port 0, read it, close. Another process could take it in between;
// Start then fails with the log saying so, which is rare and loud.
absl::StatusOr<int> FreeLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", std::strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    const int e = errno;
    close(fd);
    return absl::UnavailableError(absl::StrCat("bind 127.0.0.1:0: ", std::strerror(e)));
  }
  close(fd);
  return static_cast<int>(ntohs(a.sin_port));
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

absl::StatusOr<std::unique_ptr<PrometheusProcess>> PrometheusProcess::Start(
    const std::string& binary, const std::string& dir,
    const std::string& config_yaml, absl::Duration ready_timeout) {
  const std::string config = dir + "/prometheus.yml";
  {
    std::ofstream f(config);
    f << config_yaml;
    if (!f) return absl::InternalError("cannot write " + config);
  }
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) return port.status();
  std::unique_ptr<PrometheusProcess> p(new PrometheusProcess());
  p->address_ = absl::StrCat("127.0.0.1:", *port);
  p->log_path_ = dir + "/prometheus.log";
  std::vector<std::string> args = {
      binary,
      "--config.file=" + config,
      "--storage.tsdb.path=" + dir + "/tsdb",
      "--web.listen-address=" + p->address_,
      "--log.level=warn",
  };
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, p->log_path_.c_str(),
                                   O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  const int rc = posix_spawn(&p->pid_, binary.c_str(), &actions, nullptr,
                             argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    p->pid_ = -1;
    return absl::InternalError(absl::StrCat("spawn ", binary, ": ", std::strerror(rc)));
  }
  const absl::Time deadline = absl::Now() + ready_timeout;
  while (absl::Now() < deadline) {
    int status = 0;
    if (waitpid(p->pid_, &status, WNOHANG) == p->pid_) {
      p->pid_ = -1;
      return absl::InternalError("prometheus exited at start:\n" + p->Log());
    }
    absl::StatusOr<metrics::HttpResponse> r =
        metrics::HttpGet(p->address_, "/-/ready", absl::Seconds(1));
    if (r.ok() && r->status == 200) return p;
    absl::SleepFor(absl::Milliseconds(200));
  }
  return absl::DeadlineExceededError("prometheus not ready in time:\n" + p->Log());
}

PrometheusProcess::~PrometheusProcess() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  int status = 0;
  while (absl::Now() < deadline) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) return;
    absl::SleepFor(absl::Milliseconds(50));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
}

std::string PrometheusProcess::Log() const { return ReadAll(log_path_); }

absl::StatusOr<google::protobuf::Value> PrometheusProcess::Api(
    const std::string& target) const {
  absl::StatusOr<metrics::HttpResponse> r =
      metrics::HttpGet(address_, target, absl::Seconds(10));
  if (!r.ok()) return r.status();
  google::protobuf::Struct reply;
  auto parsed = google::protobuf::util::JsonStringToMessage(r->body, &reply);
  if (!parsed.ok()) {
    return absl::InternalError(absl::StrCat("GET ", target, ": HTTP ", r->status,
                                            ", not JSON: ", r->body.substr(0, 500)));
  }
  const auto& f = reply.fields();
  if (r->status != 200 || !f.count("status") ||
      f.at("status").string_value() != "success" || !f.count("data")) {
    return absl::InternalError(absl::StrCat("GET ", target, ": HTTP ", r->status,
                                            ": ", r->body.substr(0, 500)));
  }
  return f.at("data");
}

namespace {
absl::StatusOr<google::protobuf::ListValue> ResultOf(
    absl::StatusOr<google::protobuf::Value> data) {
  if (!data.ok()) return data.status();
  const auto& f = data->struct_value().fields();
  if (!f.count("result")) return absl::InternalError("reply without data.result");
  return f.at("result").list_value();
}

std::string Unix(absl::Time t) {
  return absl::StrFormat("%.3f", absl::ToDoubleSeconds(t - absl::UnixEpoch()));
}
}  // namespace

absl::StatusOr<google::protobuf::ListValue> PrometheusProcess::QueryRange(
    const std::string& expr, absl::Time start, absl::Time end,
    absl::Duration step) const {
  return ResultOf(Api(absl::StrCat(
      "/api/v1/query_range?query=", metrics::UrlEncode(expr), "&start=", Unix(start),
      "&end=", Unix(end), "&step=", absl::StrFormat("%.3f", absl::ToDoubleSeconds(step)))));
}

absl::StatusOr<google::protobuf::ListValue> PrometheusProcess::Query(
    const std::string& expr, absl::Time at) const {
  return ResultOf(Api(absl::StrCat("/api/v1/query?query=", metrics::UrlEncode(expr),
                                   "&time=", Unix(at))));
}

std::vector<double> ResultValues(const google::protobuf::ListValue& result) {
  std::vector<double> out;
  auto add = [&](const google::protobuf::Value& pair) {
    const auto& l = pair.list_value();
    if (l.values_size() != 2) return;
    double v = 0;
    const std::string& s = l.values(1).string_value();
    if (s == "NaN") {
      v = std::nan("");
    } else if (s == "+Inf") {
      v = HUGE_VAL;
    } else if (s == "-Inf") {
      v = -HUGE_VAL;
    } else if (!absl::SimpleAtod(s, &v)) {
      return;
    }
    out.push_back(v);
  };
  for (const auto& series : result.values()) {
    const auto& f = series.struct_value().fields();
    if (f.count("value")) add(f.at("value"));
    if (f.count("values")) {
      for (const auto& pair : f.at("values").list_value().values()) add(pair);
    }
  }
  return out;
}

}  // namespace ferry::metrics_test
