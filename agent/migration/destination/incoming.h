// The destination side of pre-copy migration: a registry of incoming
// migrations (IncomingMigrations) and the MigrationService that the source
// agent drives (Hello, Transfer streams, Switchover, Abort).
//
// Receiver state machine (proto/migration.proto, one per migration id):
//
//   PREPARED --Hello--> CONNECTED --first batch--> RECEIVING --Switchover--+
//       (kVerifying is internal: Switchover holds the memory)              |
//   ARMED <--verified, Vm::Restore(start_paused)-- VERIFYING <-------------+
//   ARMED --Finish (or DIRECT mode)--> RESUMED        (commit point)
//   anything but RESUMED --Abort/Cancel/TTL/idle/error--> ABORTED
//
// ARMED -> RESUMED and * -> ABORTED are decided under the migration's mutex,
// first wins; both are idempotent and the loser gets FAILED_PRECONDITION
// with the current state. Nothing leaves RESUMED. Everything a migration
// holds (guest memory, the armed Vm) is freed when it ABORTs; on RESUMED
// the Vm goes to the owner through AdoptFn.
//
// Prepare creates the VM shell (guest memory, machine, parked vCPU
// threads); batches are decoded into its memory by one
// codec::PageBatchDecoder per stream (encodings as negotiated in Hello);
// Switchover waits until each stream applied the final sequence it names,
// verifies the digest and only loads the state (Vm::LoadState).
//
// Bounded memory: each Transfer stream is one callback reactor with one
// read and one write in flight; a batch is decoded straight from the
// request message into guest memory before the next read is started, so a
// stream holds at most one batch (<= ~1.25 MiB) at a time.
//
// Bad input (wrong session, out-of-range gpa, CRC mismatch, bad sequence,
// unsupported version, digest mismatch) aborts that migration with a status
// saying what was wrong. A wrong *token* on Hello is only refused: whoever
// sent it does not own the migration, so it may not kill it either.
#ifndef FERRY_AGENT_MIGRATION_DESTINATION_INCOMING_H_
#define FERRY_AGENT_MIGRATION_DESTINATION_INCOMING_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "agent/migration/destination/wire.h"
#include "agent/vmm/backend.h"
#include "agent/vmm/vm.h"
#include "grpcpp/grpcpp.h"
#include "proto/migration.grpc.pb.h"
#include "proto/migration.pb.h"

namespace ferry::migration {

inline constexpr uint32_t kProtocolVersion = v1::PROTOCOL_VERSION_1;
inline constexpr uint32_t kMinProtocolVersion = v1::PROTOCOL_VERSION_1;

enum class ReceiverState {
  kPrepared,
  kConnected,
  kReceiving,
  kVerifying,
  kArmed,
  kResumed,
  kAborted,
};
const char* ReceiverStateName(ReceiverState s);

struct IncomingOptions {
  // Runs the restored VMs. Required; must outlive the registry.
  vmm::Backend* backend = nullptr;
  // Called once per migration that reaches RESUMED, with the running Vm
  // (the agent's VM registry Adopt). Required. Called without locks held.
  std::function<void(const std::string& migration_id, std::unique_ptr<vmm::Vm>)>
      adopt;
  // host:port of the MigrationService, reported by Prepare.
  std::string endpoint;
  absl::Duration default_ttl = absl::Seconds(60);
  // A session with no data-plane activity for this long is aborted (the
  // source died). ARMED is never timed out: only the controller decides it.
  absl::Duration idle_timeout = absl::Seconds(60);
  absl::Duration reap_interval = absl::Milliseconds(50);
  // Terminal migrations are remembered this long (idempotent repeats).
  absl::Duration terminal_retention = absl::Minutes(10);
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // 128 random bits, hex (tokens and session ids).
  std::function<std::string()> random_hex;
  vmm::VmOptions vm_options;  // start_paused is forced on
  // Switchover waits this long for the last batches it names (the source
  // does not wait for their acks before sending it).
  absl::Duration switchover_wait = absl::Seconds(10);
};

struct PreparedIncoming {
  std::string endpoint;
  std::string token;
  absl::Time expire_time;
  v1::MemoryLayout memory;
  uint32_t min_protocol_version = kMinProtocolVersion;
  uint32_t max_protocol_version = kProtocolVersion;
};

struct IncomingInfo {
  std::string migration_id;
  ReceiverState state = ReceiverState::kPrepared;
  v1::HandoffState handoff = v1::HANDOFF_STATE_UNSPECIFIED;
  v1::MigrationFailure failure = v1::MIGRATION_FAILURE_UNSPECIFIED;
  std::string message;  // why ABORTED
  uint64_t batches = 0;
  uint64_t pages_applied = 0;
  uint64_t payload_bytes = 0;
  bool holds_memory = false;  // guest memory or an armed Vm still allocated
};

struct FinishResult {
  v1::HandoffState handoff = v1::HANDOFF_STATE_UNSPECIFIED;
  absl::Time resumed_time;
  absl::Duration downtime;  // Switchover.paused_time to resume
};

class IncomingMigrations {
 public:
  explicit IncomingMigrations(IncomingOptions options);
  ~IncomingMigrations();  // aborts whatever is not RESUMED
  IncomingMigrations(const IncomingMigrations&) = delete;
  IncomingMigrations& operator=(const IncomingMigrations&) = delete;

  void set_endpoint(std::string endpoint) ABSL_LOCKS_EXCLUDED(mu_);

  // PrepareIncoming: validates `spec`, reserves populated guest memory,
  // creates the VM shell over it and returns the endpoint and one-time
  // token. Idempotent while PREPARED.
  absl::StatusOr<PreparedIncoming> Prepare(const std::string& migration_id,
                                           const v1::VmSpec& spec,
                                           const v1::MigrationPolicy& policy,
                                           absl::Duration ttl = absl::ZeroDuration())
      ABSL_LOCKS_EXCLUDED(mu_);
  // FinishIncoming: ARMED -> RESUMED (idempotent); FAILED_PRECONDITION if
  // ABORTED or not armed yet.
  absl::StatusOr<FinishResult> Finish(const std::string& migration_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // CancelMigration: -> ABORTED unless RESUMED (then FAILED_PRECONDITION).
  absl::StatusOr<v1::HandoffState> Cancel(const std::string& migration_id,
                                          const std::string& reason)
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<IncomingInfo> Get(const std::string& migration_id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Migrations currently holding guest memory (tests: "everything freed").
  int live_count() const ABSL_LOCKS_EXCLUDED(mu_);

  // The MigrationService to register on a grpc::ServerBuilder.
  grpc::Service* service();
  // Server settings the data plane needs for throughput (message size,
  // HTTP/2 flow-control windows and frame size, read chunks). Call on the
  // builder that serves service().
  static void ConfigureServer(grpc::ServerBuilder& builder);

  struct Incoming;  // one migration; defined in incoming.cc

 private:
  class Service;
  friend class Service;
  class TransferReactor;

  std::shared_ptr<Incoming> Find(const std::string& id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  void ReapLoop();

  IncomingOptions options_;
  std::unique_ptr<Service> service_;

  mutable absl::Mutex mu_;
  std::string endpoint_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Incoming>> migrations_ ABSL_GUARDED_BY(mu_);

  absl::Notification stop_;
  std::thread reaper_;
};

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_DESTINATION_INCOMING_H_
