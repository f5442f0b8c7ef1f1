// OutgoingMigration: the source side of one pre-copy migration, run on its
// own thread (plus a writer and an ack-reader thread per Transfer stream).
//
//   PREPARING     Hello (magic, versions, token, layout)
//   TRANSFERRING  round 0 = every non-zero page; round n = what the dirty
//   /THROTTLING   log harvested since. Pages go to stream (gpa/2MiB) % N,
//                 each stream with at most max_inflight_batches unacked.
//                 Every round: measure bandwidth (EWMA) and dirty rate,
//                 decide (convergence.h): go on, throttle, fail, switch.
//   SWITCHOVER    Pause, throttle reset, final harvest + send (written,
//                 not acked: the destination waits for the sequences
//                 Switchover names), Save, digest, Switchover RPC.
//   FINISHING     destination ARMED: wait for Confirm() (the controller
//                 resumed it with FinishIncoming).
//   CONFIRMING    destination RESUMED: the source copy goes to `release`.
//   SUCCEEDED / FAILED / CANCELLED
//
// Safety rule (migration.proto): the VM keeps running here until the
// Switchover RPC is sent. Any failure before that rolls back (Abort the
// destination, resume). After it, the VM resumes only on an explicit
// ABORTED (Switchover answer, Abort answer, or Confirm(ABORTED)); if the
// answer is lost, the VM stays paused and handoff_unknown() is true until
// the controller calls Confirm() — never resumed on a timeout alone.
#ifndef FERRY_AGENT_MIGRATION_SOURCE_OUTGOING_H_
#define FERRY_AGENT_MIGRATION_SOURCE_OUTGOING_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/migration/source/convergence.h"
#include "agent/migration/source/throttle.h"
#include "agent/vmm/vm.h"
#include "grpcpp/grpcpp.h"
#include "mmu/dirty_log.h"
#include "mmu/dirty_rate.h"
#include "proto/agent.pb.h"
#include "proto/migration.grpc.pb.h"

namespace ferry::migration {

// The protocol versions this sender speaks (Hello's range).
inline constexpr uint32_t kProtocolVersionSource = v1::PROTOCOL_VERSION_1;
inline constexpr uint32_t kMinProtocolVersionSource = v1::PROTOCOL_VERSION_1;

struct OutgoingOptions {
  std::string migration_id;
  std::string endpoint;  // destination MigrationService, host:port
  std::string token;     // from PrepareIncoming
  v1::MigrationPolicy policy;
  std::string source_host;
  std::string destination_host;
  // Destroys the source copy once the destination is authoritative (the
  // agent's VM registry Release). Required. Called on the migration thread;
  // the engine never touches the Vm afterwards.
  std::function<void(vmm::Vm*)> release;
  std::shared_ptr<grpc::ChannelCredentials> credentials;  // default insecure
  mmu::MonotonicClock clock;                 // default CLOCK_MONOTONIC
  std::function<absl::Time()> wall_clock;    // default absl::Now
  absl::Duration rpc_timeout = absl::Seconds(10);
  absl::Duration switchover_timeout = absl::Seconds(30);
  uint32_t max_inflight_batches = 16;  // per stream (x 1 MiB)
  // Default: VmThrottle (Vm::SetThrottle, vCPU time taken away).
  std::function<std::unique_ptr<VcpuThrottle>(vmm::Vm*, mmu::DirtyLog*)>
      throttle_factory;
  // Test hook: sees (and may corrupt) every batch just before it is sent.
  std::function<void(uint32_t stream, v1::PageBatch*)> batch_hook;
  // Progress samples at least this often while a round runs.
  absl::Duration progress_interval = absl::Milliseconds(250);
};

class StreamSender;  // outgoing.cc

// Counters every stream adds to (cumulative for the migration).
struct SendCounters {
  std::atomic<uint64_t> pages_sent{0};
  std::atomic<uint64_t> zero_pages{0};
  std::atomic<uint64_t> payload_bytes{0};
  std::atomic<uint64_t> wire_bytes{0};
  std::atomic<uint64_t> xor_pages{0};
  // PageBatch.payload bytes after compression (payload_bytes before).
  std::atomic<uint64_t> compressed_bytes{0};
  std::atomic<uint64_t> round_pages_sent{0};
  std::atomic<uint64_t> batches{0};
};

class OutgoingMigration {
 public:
  using Watcher = std::function<void(const v1::MigrationProgress&)>;

  // Starts the migration thread; `vm` must outlive this object or be
  // handed to options.release. INVALID_ARGUMENT for missing options.
  static absl::StatusOr<std::unique_ptr<OutgoingMigration>> Start(
      vmm::Vm* vm, OutgoingOptions options);
  // Cancels if still before the handoff and joins. A migration waiting for
  // Confirm leaves its VM paused (handoff unknown).
  ~OutgoingMigration();
  OutgoingMigration(const OutgoingMigration&) = delete;
  OutgoingMigration& operator=(const OutgoingMigration&) = delete;

  const std::string& id() const { return options_.migration_id; }
  v1::MigrationProgress Progress() const ABSL_LOCKS_EXCLUDED(mu_);
  v1::MigrationPhase phase() const ABSL_LOCKS_EXCLUDED(mu_);
  // Called with every sample (per round, per phase change, every
  // progress_interval) and the terminal one (with result); at once with the
  // current sample. Called on the migration thread; keep it short.
  int Watch(Watcher watcher) ABSL_LOCKS_EXCLUDED(mu_);
  void Unwatch(int id) ABSL_LOCKS_EXCLUDED(mu_);
  // CancelMigration. FAILED_PRECONDITION once Switchover was sent.
  absl::Status Cancel(const std::string& reason) ABSL_LOCKS_EXCLUDED(mu_);
  // ConfirmOutgoing: HANDED_OFF destroys the paused copy, ABORTED resumes
  // it. Only after Switchover was sent. Idempotent once terminal.
  absl::StatusOr<v1::MigrationResult> Confirm(v1::ConfirmOutcome outcome)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Blocks until terminal.
  v1::MigrationResult Wait() ABSL_LOCKS_EXCLUDED(mu_);
  bool WaitFor(absl::Duration timeout, v1::MigrationResult* result)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Switchover was sent and its outcome is not known: the VM stays paused
  // until Confirm().
  bool handoff_unknown() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  OutgoingMigration(vmm::Vm* vm, OutgoingOptions options);

  void Run();
  absl::Status Connect();
  absl::Status StartTracking();
  absl::Status OpenStreams();
  // Sends everything pending (one round). Fails on transport errors,
  // cancel or stall.
  absl::Status SendRound(uint32_t round);
  absl::Status WaitDrained();
  // Until every stream wrote all it was given (acks may be outstanding).
  absl::Status WaitWritten();
  absl::Status CheckDeadlines();
  void Switchover();
  void AwaitConfirm() ABSL_LOCKS_EXCLUDED(mu_);
  // Before the handoff only: abort the destination, resume, terminal.
  void Rollback(v1::MigrationFailure failure, const absl::Status& why);
  void StopStreams(bool give_back);
  void StopTracking();
  bool AbortDestination(v1::HandoffState* state);
  void HandOff(absl::Duration downtime);
  void Finish(v1::MigrationPhase phase, v1::MigrationFailure failure,
              const absl::Status& why) ABSL_LOCKS_EXCLUDED(mu_);
  void SetPhase(v1::MigrationPhase phase) ABSL_LOCKS_EXCLUDED(mu_);
  void Publish() ABSL_LOCKS_EXCLUDED(mu_);
  v1::MigrationProgress SampleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool cancelled() const { return cancel_.load(); }
  int64_t Now() const { return options_.clock(); }

  vmm::Vm* const vm_;
  OutgoingOptions options_;
  const EffectivePolicy policy_;
  const int64_t start_ns_;
  const absl::Time start_wall_;

  // Migration thread only.
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::MigrationService::Stub> stub_;
  std::string session_;
  absl::Duration hello_rtt_ = absl::ZeroDuration();
  std::unique_ptr<mmu::DirtyLog> dirty_log_;
  std::unique_ptr<mmu::DirtyRateMeter> meter_;
  std::unique_ptr<VcpuThrottle> throttle_;
  std::vector<std::unique_ptr<StreamSender>> streams_;
  bool paused_ = false;
  int64_t paused_ns_ = 0;
  // When the source learnt that the destination runs (downtime end).
  int64_t resumed_ns_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time paused_wall_;
  int64_t last_publish_ns_ = 0;
  uint64_t best_remaining_ = UINT64_MAX;
  int64_t best_remaining_ns_ = 0;

  SendCounters counters_;
  // Why the current step failed, when it is not a transport error.
  v1::MigrationFailure failure_kind_ = v1::MIGRATION_FAILURE_UNSPECIFIED;
  std::atomic<bool> cancel_{false};
  std::thread thread_;

  mutable absl::Mutex mu_;
  v1::MigrationPhase phase_ ABSL_GUARDED_BY(mu_) = v1::MIGRATION_PHASE_PREPARING;
  std::string cancel_reason_ ABSL_GUARDED_BY(mu_);
  bool switchover_sent_ ABSL_GUARDED_BY(mu_) = false;
  bool handoff_unknown_ ABSL_GUARDED_BY(mu_) = false;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<v1::ConfirmOutcome> confirm_ ABSL_GUARDED_BY(mu_);
  std::optional<v1::MigrationResult> result_ ABSL_GUARDED_BY(mu_);
  std::map<int, Watcher> watchers_ ABSL_GUARDED_BY(mu_);
  int next_watcher_ ABSL_GUARDED_BY(mu_) = 1;
  // Progress figures (written by the migration thread).
  uint32_t round_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t remaining_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t round_dirty_pages_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t round_start_pages_ ABSL_GUARDED_BY(mu_) = 0;
  double dirty_pages_per_s_ ABSL_GUARDED_BY(mu_) = 0;
  double bandwidth_ ABSL_GUARDED_BY(mu_) = 0;  // EWMA, bytes/s
  absl::Duration expected_downtime_ ABSL_GUARDED_BY(mu_) = absl::InfiniteDuration();
  uint32_t throttle_percent_ ABSL_GUARDED_BY(mu_) = 0;
  uint32_t max_throttle_ ABSL_GUARDED_BY(mu_) = 0;
  bool memory_verified_ ABSL_GUARDED_BY(mu_) = false;
  std::string message_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_SOURCE_OUTGOING_H_
