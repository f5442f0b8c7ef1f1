// Test-only: a ControllerService that records each request and answers
// with recognisable canned records, so REST tests can check both halves of
// the transcoding (request fields in, JSON names out) without a store.
#ifndef FERRY_CONTROLLER_API_REST_FAKE_CONTROLLER_H_
#define FERRY_CONTROLLER_API_REST_FAKE_CONTROLLER_H_

#include <atomic>
#include <map>
#include <optional>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "proto/controller.grpc.pb.h"

namespace ferry::rest::testing {

class FakeController final : public ferry::v1::ControllerService::Service {
 public:
  // The last request of RPC `rpc` ("GetHost"), if any arrived.
  template <typename T>
  std::optional<T> Last(const std::string& rpc) {
    absl::MutexLock lock(&mu_);
    auto it = last_.find(rpc);
    if (it == last_.end()) return std::nullopt;
    T out;
    out.ParseFromString(it->second);
    return out;
  }
  // Name of the last RPC called.
  std::string last_rpc() {
    absl::MutexLock lock(&mu_);
    return last_rpc_;
  }
  int calls() {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  // Every RPC returns `status` (until cleared with OK).
  void FailWith(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    fail_ = std::move(status);
  }

  // WatchMigration: how many records, how far apart; `hang` makes it send
  // one record and then wait until the call is cancelled.
  std::atomic<int> watch_messages{3};
  std::atomic<int> watch_interval_ms{20};
  std::atomic<bool> watch_hang{false};
  // If >= 0, the watch fails with ABORTED after this many records.
  std::atomic<int> watch_fail_after{-1};
  std::atomic<bool> watch_saw_cancel{false};
  std::atomic<bool> watch_done{false};
  // Unary GetVm sleeps this long (honouring cancellation).
  std::atomic<int> get_vm_delay_ms{0};

  grpc::Status RegisterHost(grpc::ServerContext*, const v1::RegisterHostRequest*,
                            v1::RegisterHostResponse*) override;
  grpc::Status Heartbeat(grpc::ServerContext*, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override;
  grpc::Status ListHosts(grpc::ServerContext*, const v1::ListHostsRequest*,
                         v1::ListHostsResponse*) override;
  grpc::Status GetHost(grpc::ServerContext*, const v1::GetHostRequest*,
                       v1::Host*) override;
  grpc::Status CordonHost(grpc::ServerContext*, const v1::CordonHostRequest*,
                          v1::Host*) override;
  grpc::Status UncordonHost(grpc::ServerContext*,
                            const v1::UncordonHostRequest*, v1::Host*) override;
  grpc::Status DrainHost(grpc::ServerContext*, const v1::DrainHostRequest*,
                         grpc::ServerWriter<v1::DrainHostUpdate>*) override;
  grpc::Status CreateVm(grpc::ServerContext*, const v1::CreateVmRequest*,
                        v1::Vm*) override;
  grpc::Status GetVm(grpc::ServerContext*, const v1::GetVmRequest*,
                     v1::Vm*) override;
  grpc::Status ListVms(grpc::ServerContext*, const v1::ListVmsRequest*,
                       v1::ListVmsResponse*) override;
  grpc::Status DeleteVm(grpc::ServerContext*, const v1::DeleteVmRequest*,
                        v1::DeleteVmResponse*) override;
  grpc::Status CreateMigration(grpc::ServerContext*,
                               const v1::CreateMigrationRequest*,
                               v1::Migration*) override;
  grpc::Status GetMigration(grpc::ServerContext*,
                            const v1::GetMigrationRequest*,
                            v1::Migration*) override;
  grpc::Status ListMigrations(grpc::ServerContext*,
                              const v1::ListMigrationsRequest*,
                              v1::ListMigrationsResponse*) override;
  grpc::Status WatchMigration(grpc::ServerContext*,
                              const v1::WatchMigrationRequest*,
                              grpc::ServerWriter<v1::Migration>*) override;
  grpc::Status CancelMigration(grpc::ServerContext*,
                               const v1::CancelMigrationRequest*,
                               v1::Migration*) override;
  grpc::Status ListEvents(grpc::ServerContext*, const v1::ListEventsRequest*,
                          v1::ListEventsResponse*) override;

 private:
  // Records the request; returns the injected failure (or OK).
  grpc::Status Record(const std::string& rpc,
                      const google::protobuf::Message& request);

  absl::Mutex mu_;
  std::map<std::string, std::string> last_ ABSL_GUARDED_BY(mu_);
  std::string last_rpc_ ABSL_GUARDED_BY(mu_);
  int calls_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::Status fail_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::rest::testing

#endif  // FERRY_CONTROLLER_API_REST_FAKE_CONTROLLER_H_
