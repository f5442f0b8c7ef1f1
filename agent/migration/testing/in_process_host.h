// InProcessHost (testonly): one "agent" inside a test or benchmark process —
// a soft backend over the software MMU, its VMs, and an IncomingMigrations
// registry behind a real gRPC server on 127.0.0.1:0. Two of them and an
// OutgoingMigration make a migration over real loopback gRPC without agent
// processes (the process-level tests in tests/ use ferry-agent itself).
#ifndef FERRY_AGENT_MIGRATION_TESTING_IN_PROCESS_HOST_H_
#define FERRY_AGENT_MIGRATION_TESTING_IN_PROCESS_HOST_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/migration/destination/incoming.h"
#include "agent/vmm/soft/soft_backend.h"
#include "agent/vmm/vm.h"
#include "grpcpp/grpcpp.h"

namespace ferry::migration::testing {

class InProcessHost {
 public:
  // `prepare_ttl`: IncomingOptions::default_ttl (zero = the engine's).
  explicit InProcessHost(std::string name,
                         absl::Duration prepare_ttl = absl::ZeroDuration());
  ~InProcessHost();  // Kill(), then the VMs
  InProcessHost(const InProcessHost&) = delete;
  InProcessHost& operator=(const InProcessHost&) = delete;

  // Stops the MigrationService at once, like a destination that died.
  void Kill();

  // A running VM owned by this host.
  absl::StatusOr<vmm::Vm*> Create(const v1::VmSpec& spec)
      ABSL_LOCKS_EXCLUDED(mu_);
  vmm::Vm* Get(const std::string& name) ABSL_LOCKS_EXCLUDED(mu_);
  // Destroys `vm` (OutgoingOptions::release after a handoff).
  void Release(vmm::Vm* vm) ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& name() const { return name_; }
  const std::string& endpoint() const { return endpoint_; }
  IncomingMigrations& incoming() { return *incoming_; }

 private:
  const std::string name_;
  vmm::SoftBackend backend_;
  std::unique_ptr<IncomingMigrations> incoming_;
  std::unique_ptr<grpc::Server> server_;
  std::string endpoint_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<vmm::Vm>> vms_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration::testing

#endif  // FERRY_AGENT_MIGRATION_TESTING_IN_PROCESS_HOST_H_
