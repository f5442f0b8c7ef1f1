// ControllerLink: the agent's side of the cluster. With --controller set,
// the agent registers its HostInfo with ControllerService.RegisterHost and
// then heartbeats (allocated resources, VM summaries, ids of migrations in
// flight) on the interval the controller returns.
//
// What it reports it reads from this agent's own AgentService over gRPC
// (GetHostInfo, ListVms, ListMigrations): the link needs no access to the
// registry's internals and reports exactly what a client would see.
//
// Failure handling: it runs on its own thread and never blocks VMs or
// calls. The controller being down or slow only delays heartbeats: failed
// calls are retried with exponential backoff (with jitter, capped at
// max_backoff). A heartbeat refused with FAILED_PRECONDITION or NOT_FOUND
// (the controller lost or replaced the registration, e.g. after its data
// was reset) makes the link register again at once.
//
// Health: every heartbeat runs `health_check` (if set) and reports
// healthy=false with its message as unhealthy_reason when it fails; the
// controller then shows the host NOT_READY and places nothing there. The
// agent wires cheap probes (ProbeDirWritable, ProbeDevice) into it.
#ifndef FERRY_AGENT_SERVICE_CONTROLLER_LINK_H_
#define FERRY_AGENT_SERVICE_CONTROLLER_LINK_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/agent.grpc.pb.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::service {

struct ControllerLinkOptions {
  // host:port of ControllerService.
  std::string controller;
  // host:port of this agent's AgentService (what the link reads from).
  std::string agent;
  absl::Duration rpc_timeout = absl::Seconds(5);
  // Until the controller says otherwise.
  absl::Duration default_interval = absl::Seconds(2);
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(10);
  // Run before each heartbeat (on the link's thread; keep it to a few
  // syscalls). Non-OK = unhealthy, the message is the reason. Empty = the
  // agent counts as healthy whenever it answers.
  std::function<absl::Status()> health_check;
};

// OK if a small synced write to `dir` works: a probe file is created,
// written, fsynced and removed. The error names the dir and errno's text.
absl::Status ProbeDirWritable(const std::string& dir);
// OK if the device (e.g. /dev/kvm) opens read-write.
absl::Status ProbeDevice(const std::string& path);

class ControllerLink {
 public:
  explicit ControllerLink(ControllerLinkOptions options);
  ~ControllerLink();  // Stop()
  ControllerLink(const ControllerLink&) = delete;
  ControllerLink& operator=(const ControllerLink&) = delete;

  void Start();
  // Returns once the thread has exited (at most one rpc_timeout).
  void Stop();

  // For logs and tests.
  bool registered();
  int64_t registrations();
  int64_t heartbeats_ok();
  absl::Status last_error();

 private:
  void Loop();
  // One register attempt / one heartbeat; updates interval_.
  absl::Status Register();
  absl::Status Heartbeat();
  // Sleeps up to `d`; false if stopping.
  bool Wait(absl::Duration d);

  const ControllerLinkOptions options_;
  std::unique_ptr<v1::ControllerService::Stub> controller_;
  std::unique_ptr<v1::AgentService::Stub> agent_;
  std::thread thread_;

  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool registered_ ABSL_GUARDED_BY(mu_) = false;
  int64_t registrations_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t heartbeats_ok_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Status last_error_ ABSL_GUARDED_BY(mu_);
  std::string host_name_ ABSL_GUARDED_BY(mu_);
  std::string instance_id_ ABSL_GUARDED_BY(mu_);
  absl::Duration interval_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_CONTROLLER_LINK_H_
