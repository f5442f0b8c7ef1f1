#include "proto/phases.h"
#include "agent/service/controller_link.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include <grpcpp/grpcpp.h>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace ferry::service {
namespace {

std::unique_ptr<grpc::ClientContext> Ctx(absl::Duration timeout) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return ctx;
}

absl::Status FromGrpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

std::string Errno() { return std::strerror(errno); }

}  // namespace

absl::Status ProbeDirWritable(const std::string& dir) {
  const std::string path = absl::StrCat(dir, "/.health-probe");
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("data dir ", dir, " is not writable: ", Errno()));
  }
  const char byte = 'h';
  absl::Status result = absl::OkStatus();
  if (write(fd, &byte, 1) != 1 || fsync(fd) != 0) {
    result = absl::FailedPreconditionError(
        absl::StrCat("data dir ", dir, " does not take writes: ", Errno()));
  }
  close(fd);
  unlink(path.c_str());
  return result;
}

absl::Status ProbeDevice(const std::string& path) {
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open ", path, " read-write: ", Errno()));
  }
  close(fd);
  return absl::OkStatus();
}

ControllerLink::ControllerLink(ControllerLinkOptions options)
    : options_(std::move(options)), interval_(options_.default_interval) {
  controller_ = v1::ControllerService::NewStub(
      grpc::CreateChannel(options_.controller, grpc::InsecureChannelCredentials()));
  agent_ = v1::AgentService::NewStub(
      grpc::CreateChannel(options_.agent, grpc::InsecureChannelCredentials()));
}

ControllerLink::~ControllerLink() { Stop(); }

void ControllerLink::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void ControllerLink::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

bool ControllerLink::registered() {
  absl::MutexLock lock(&mu_);
  return registered_;
}
int64_t ControllerLink::registrations() {
  absl::MutexLock lock(&mu_);
  return registrations_;
}
int64_t ControllerLink::heartbeats_ok() {
  absl::MutexLock lock(&mu_);
  return heartbeats_ok_;
}
absl::Status ControllerLink::last_error() {
  absl::MutexLock lock(&mu_);
  return last_error_;
}

bool ControllerLink::Wait(absl::Duration d) {
  absl::MutexLock lock(&mu_);
  auto stop = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return stopping_; };
  mu_.AwaitWithTimeout(absl::Condition(&stop), d);
  return !stopping_;
}

absl::Status ControllerLink::Register() {
  v1::GetHostInfoRequest hreq;
  v1::RegisterHostRequest req;
  grpc::Status s =
      agent_->GetHostInfo(Ctx(options_.rpc_timeout).get(), hreq, req.mutable_info());
  if (!s.ok()) return FromGrpc(s, "GetHostInfo on this agent");
  v1::RegisterHostResponse resp;
  s = controller_->RegisterHost(Ctx(options_.rpc_timeout).get(), req, &resp);
  if (!s.ok()) return FromGrpc(s, "RegisterHost");
  absl::MutexLock lock(&mu_);
  registered_ = true;
  ++registrations_;
  host_name_ = req.info().name();
  instance_id_ = req.info().instance_id();
  const absl::Duration d = absl::Seconds(resp.heartbeat_interval().seconds()) +
                           absl::Nanoseconds(resp.heartbeat_interval().nanos());
  if (d > absl::ZeroDuration()) interval_ = d;
  return absl::OkStatus();
}

absl::Status ControllerLink::Heartbeat() {
  v1::HeartbeatRequest req;
  {
    absl::MutexLock lock(&mu_);
    req.set_host_name(host_name_);
    req.set_instance_id(instance_id_);
  }
  v1::HostInfo info;
  grpc::Status s =
      agent_->GetHostInfo(Ctx(options_.rpc_timeout).get(), v1::GetHostInfoRequest(), &info);
  if (!s.ok()) return FromGrpc(s, "GetHostInfo on this agent");
  absl::Status health =
      options_.health_check ? options_.health_check() : absl::OkStatus();
  req.set_healthy(health.ok());
  if (!health.ok()) req.set_unhealthy_reason(std::string(health.message()));
  *req.mutable_allocated() = info.allocated();
  v1::AgentListVmsResponse vms;
  s = agent_->ListVms(Ctx(options_.rpc_timeout).get(), v1::AgentListVmsRequest(), &vms);
  if (!s.ok()) return FromGrpc(s, "ListVms on this agent");
  for (const v1::Vm& vm : vms.vms()) {
    v1::VmSummary* sum = req.add_vms();
    sum->set_name(vm.spec().name());
    sum->set_uid(vm.uid());
    sum->set_phase(vm.status().phase());
    sum->set_dirty_rate_bytes_per_s(vm.status().dirty_rate_bytes_per_s());
    sum->set_selfcheck_errors(vm.status().selfcheck_errors());
    *sum->mutable_guest() = vm.status().guest();
  }
  v1::AgentListMigrationsResponse migrations;
  s = agent_->ListMigrations(Ctx(options_.rpc_timeout).get(),
                             v1::AgentListMigrationsRequest(), &migrations);
  if (!s.ok()) return FromGrpc(s, "ListMigrations on this agent");
  for (const v1::AgentMigration& m : migrations.migrations()) {
    if (!v1::IsTerminalPhase(m.phase())) req.add_migration_ids(m.migration_id());
  }
  v1::HeartbeatResponse resp;
  s = controller_->Heartbeat(Ctx(options_.rpc_timeout).get(), req, &resp);
  if (s.error_code() == grpc::StatusCode::FAILED_PRECONDITION ||
      s.error_code() == grpc::StatusCode::NOT_FOUND) {
    absl::MutexLock lock(&mu_);
    registered_ = false;  // register again at once
  }
  if (!s.ok()) return FromGrpc(s, "Heartbeat");
  absl::MutexLock lock(&mu_);
  ++heartbeats_ok_;
  const absl::Duration d = absl::Seconds(resp.heartbeat_interval().seconds()) +
                           absl::Nanoseconds(resp.heartbeat_interval().nanos());
  if (d > absl::ZeroDuration()) interval_ = d;
  return absl::OkStatus();
}

void ControllerLink::Loop() {
  absl::BitGen gen;
  absl::Duration backoff = options_.initial_backoff;
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
    }
    const bool was_registered = registered();
    absl::Status s = was_registered ? Heartbeat() : Register();
    absl::Duration wait;
    if (s.ok()) {
      backoff = options_.initial_backoff;
      absl::MutexLock lock(&mu_);
      last_error_ = absl::OkStatus();
      wait = was_registered ? interval_ : absl::ZeroDuration();
    } else {
      const bool reregister = was_registered && !registered();
      {
        absl::MutexLock lock(&mu_);
        if (last_error_.ToString() != s.ToString()) {
          // Log once per distinct error, not once per retry.
          std::fprintf(stderr, "ferry-agent: controller link: %s\n", s.ToString().c_str());
        }
        last_error_ = s;
      }
      // Jitter keeps a restarted controller from being hit by every agent
      // at the same instant.
      wait = reregister ? absl::ZeroDuration()
                        : backoff * absl::Uniform(gen, 0.5, 1.0);
      // Once the controller has told us its interval, retry at least that
      // often: a restarted controller marks hosts silent for 3 intervals
      // UNKNOWN, and backing off beyond that would make them flap.
      absl::Duration cap = options_.max_backoff;
      {
        absl::MutexLock lock(&mu_);
        if (registrations_ > 0) cap = std::min(cap, interval_);
      }
      backoff = std::min(backoff * 2, cap);
    }
    if (!Wait(wait)) return;
  }
}

}  // namespace ferry::service
