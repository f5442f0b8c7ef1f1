// HostRegistry: the hosts' side of the controller — agents registering and
// heartbeating, cordons, and the heartbeat monitor that marks a silent host
// UNKNOWN.
//
// Liveness is judged from heartbeat arrival times kept in memory. A
// heartbeat is written to the store (an fsync) only when it changes
// something — readiness, allocated resources — or when the stored
// last_heartbeat_time is older than kPersistEvery intervals; readers get the
// in-memory time through Overlay(). After a controller restart every host gets a full grace period
// (3 intervals from the start) before it can go UNKNOWN.
//
// A new instance_id at RegisterHost means the agent process restarted and
// every VM it ran is gone: VM records on that host not in a migration are
// marked FAILED ("lost") in the same commit as the host, with an event.
#ifndef FERRY_CONTROLLER_CLUSTER_HOST_REGISTRY_H_
#define FERRY_CONTROLLER_CLUSTER_HOST_REGISTRY_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/store/store.h"
#include "proto/controller.pb.h"

namespace ferry::controller {

struct HostRegistryOptions {
  absl::Duration heartbeat_interval = absl::Seconds(2);
  // Missed intervals before a host is UNKNOWN.
  int missed_heartbeats = 3;
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // Called after a host's readiness or cordon changed (wakes the queue).
  std::function<void()> on_change;
};

class HostRegistry {
 public:
  HostRegistry(Store* store, HostRegistryOptions options);
  ~HostRegistry();

  // Starts the heartbeat monitor thread.
  void Start();
  void Shutdown();

  // INVALID_ARGUMENT for a missing name/instance_id/agent_address.
  absl::StatusOr<v1::RegisterHostResponse> Register(const v1::RegisterHostRequest& req);
  // FAILED_PRECONDITION if the host is not registered or instance_id is
  // not the registered one: the agent must call RegisterHost again.
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(const v1::HeartbeatRequest& req);
  absl::StatusOr<v1::Host> Cordon(const std::string& name, const std::string& reason);
  absl::StatusOr<v1::Host> Uncordon(const std::string& name);

  // Sets host->last_heartbeat_time to the latest heartbeat seen in memory.
  void Overlay(v1::Host* host);
  static constexpr int kPersistEvery = 5;

  // One monitor pass (tests call it with an injected clock).
  void CheckHeartbeats();
  absl::Duration heartbeat_interval() const { return options_.heartbeat_interval; }

 private:
  // Read-modify-write with CAS retries. `fn` may fill *event (committed in
  // the same batch) and may set *skip to leave the record as it is.
  using HostFn = std::function<absl::Status(v1::Host*, v1::Event* event, bool* skip)>;
  absl::StatusOr<v1::Host> UpdateHost(const std::string& name, const HostFn& fn);
  void Changed();

  Store* const store_;
  const HostRegistryOptions options_;
  const absl::Time start_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, absl::Time> last_seen_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread monitor_;
};

v1::Event HostEvent(const std::string& host, v1::EventSeverity severity,
                    const std::string& reason, const std::string& message);

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_CLUSTER_HOST_REGISTRY_H_
