// Orchestrator: the controller's migration state machine over the store.
//
//   PENDING --(queue admits: target + slots)--> PREPARING --(source samples)-->
//   TRANSFERRING <-> THROTTLING --> SWITCHOVER --> FINISHING --> CONFIRMING
//   --> SUCCEEDED;   any phase before the handoff --> [ROLLING_BACK] -->
//   FAILED / CANCELLED (VM stays on the source).
//
// Every transition the controller decides is committed (one synced store
// batch with its event, and the VM record when it changes) BEFORE the agent
// call that acts on it: PREPARING before PrepareIncoming, FINISHING before
// FinishIncoming, CONFIRMING (VM record moved to the target) before
// ConfirmOutgoing, ROLLING_BACK before aborting. Phases the source agent
// reaches by itself (TRANSFERRING, THROTTLING, SWITCHOVER) are recorded as
// they are observed. So after a crash the record is never behind a decision
// the controller made, and recovery (recovery.h) asks both agents where the
// migration really stands.
//
// Threads: one scheduling loop (queue admission, pending reasons, failing
// migrations of hosts that went away, starting recovery for in-flight
// migrations without a runner, the completion-timeout backstop) and one
// runner thread per in-flight migration (a MigrationDriver, or a reconcile).
// Shutdown abandons runners without touching agents: state stays as
// persisted and the next start resumes it.
#ifndef FERRY_CONTROLLER_ORCHESTRATOR_ORCHESTRATOR_H_
#define FERRY_CONTROLLER_ORCHESTRATOR_ORCHESTRATOR_H_

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/orchestrator/migration_driver.h"
#include "controller/orchestrator/policy.h"
#include "controller/orchestrator/recovery.h"
#include "controller/scheduler/ledger.h"
#include "controller/store/store.h"
#include "proto/controller.pb.h"

namespace ferry::controller {

struct OrchestratorOptions {
  scheduler::Limits limits;
  // Cluster defaults (policy.h); requests override field by field.
  v1::MigrationPolicy defaults = DefaultMigrationPolicy();
  // The loop also runs on every store commit; this is the idle period.
  absl::Duration schedule_interval = absl::Seconds(1);
  absl::Duration rpc_timeout = absl::Seconds(10);
  // GetMigration probes of a reconcile: short, so an unreachable agent
  // neither stalls recovery nor a shutdown for long.
  absl::Duration probe_timeout = absl::Seconds(3);
  // How long an agent that does not answer is retried before it counts as
  // lost (MigrationRequest::agent_lost_after).
  absl::Duration agent_lost_after = absl::Seconds(5);
  // Pause between reconcile attempts of a migration whose outcome depends
  // on an agent that does not answer.
  absl::Duration reconcile_retry = absl::Seconds(2);
  // The controller's own completion backstop = policy deadline * this +
  // slack (the agents enforce the policy's deadline themselves).
  double completion_backstop_factor = 1.5;
  absl::Duration completion_backstop_slack = absl::Seconds(60);
  // A PENDING migration whose source host is not READY waits this long,
  // counted from the later of its creation and this controller's start,
  // for the host to come back before it fails. Right after a controller
  // restart every host is UNKNOWN until its agent's next heartbeat, which
  // can take an agent in retry backoff ~10 s.
  absl::Duration source_host_grace = absl::Seconds(30);
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // Test-only (the daemon's hidden --test_pause_before_phase): called on
  // the acting thread right before the controller acts on a phase, once
  // that phase is committed: PENDING before admitting a migration (the
  // record still PENDING), PREPARING before PrepareIncoming, FINISHING
  // before FinishIncoming, CONFIRMING before ConfirmOutgoing(HANDED_OFF).
  // Lets a process test freeze and kill the controller at an exact phase.
  std::function<void(v1::MigrationPhase)> test_before_phase;
};

// Fills progress_samples the way controller.proto documents: the last
// sample of each finished round, one per second in the current round, at
// most kMaxSamples (oldest dropped first).
inline constexpr int kMaxProgressSamples = 512;
void AddProgressSample(const v1::MigrationProgress& sample, v1::Migration* m);

class Orchestrator {
 public:
  // `store` must outlive the orchestrator.
  Orchestrator(Store* store, OrchestratorOptions options);
  ~Orchestrator();
  Orchestrator(const Orchestrator&) = delete;
  Orchestrator& operator=(const Orchestrator&) = delete;

  // Starts the loop; its first pass picks up every in-flight migration left
  // by an earlier controller and reconciles it with both agents.
  absl::Status Start();
  // Stops the loop and abandons runners (no agent is told anything);
  // returns once every thread is joined. Idempotent.
  void Shutdown();

  // Validates and records a PENDING migration (the VM record gets
  // status.migration_id in the same commit, so two requests for one VM
  // cannot both succeed). Codes: INVALID_ARGUMENT (empty name, bad policy,
  // target = source), NOT_FOUND (VM or target host), FAILED_PRECONDITION
  // (VM not RUNNING, already migrating, source or target not READY,
  // target cordoned).
  absl::StatusOr<v1::Migration> CreateMigration(
      const v1::CreateMigrationRequest& request, const std::string& drain_host = "");
  // NOT_FOUND, or FAILED_PRECONDITION once terminal. A PENDING migration is
  // CANCELLED at once; a running one is cancelled by its driver at the next
  // safe point (never after the handoff).
  absl::StatusOr<v1::Migration> CancelMigration(const std::string& id,
                                                const std::string& reason);
  // Caps the in-flight migrations of the drain of `host` (0 = no cap beyond
  // the limits). Persisted (store aux record "drain/<host>") before it takes
  // effect, and loaded by Start(), so a restarted controller keeps running
  // the drain's remaining migrations at this cap. It only affects
  // migrations created by a drain of that host; the next drain replaces it.
  absl::Status SetDrainParallelism(const std::string& host, uint32_t max_parallel);

  // Wakes the loop (a new PENDING migration, a host change).
  void Kick();
  // Held while choosing a host and recording the choice, by the loop and by
  // CreateVm, so two placements never take the same last capacity.
  absl::Mutex* placement_mu() { return &placement_mu_; }
  absl::StatusOr<scheduler::ClusterSnapshot> Snapshot() const;
  const OrchestratorOptions& options() const { return options_; }

  // Runs one pass of the loop now (tests).
  absl::Status SchedulePassForTest() { return SchedulePass(); }
  // Number of runner threads alive (tests).
  int ActiveRunners();

 private:
  // When Start() ran (options_.clock()); see source_host_grace.
  absl::Time started_at_ = absl::InfinitePast();

  struct Runner {
    std::thread thread;
    std::shared_ptr<MigrationDriver> driver;  // null while reconciling
    bool done = false;
    // Set by the completion backstop: a CANCELLED result becomes FAILED
    // with this failure.
    v1::MigrationFailure forced_failure = v1::MIGRATION_FAILURE_UNSPECIFIED;
    absl::Time started;
  };
  using MutateFn =
      std::function<absl::Status(v1::Migration*, v1::Vm*, std::vector<v1::Event>*)>;

  void Loop();
  absl::Status SchedulePass();
  void ReapRunners() ABSL_LOCKS_EXCLUDED(mu_);
  // Starts a runner thread unless one exists; false when stopping.
  bool StartRunner(const std::string& id, bool reconcile);
  void Drive(const std::string& id);
  // One reconcile attempt; true if the migration reached a terminal phase
  // (or is already terminal).
  bool Reconcile(const std::string& id);
  bool RollBack(const v1::Migration& m, const AgentView& src, const AgentView& dst,
                const std::string& why);
  bool ConfirmHandedOff(const v1::Migration& m, const std::string& why);
  AgentView AskAgent(const std::string& host, const std::string& id);
  std::string AgentAddress(const std::string& host);

  // Read-modify-write of a migration (and its VM) with CAS retries.
  absl::StatusOr<v1::Migration> Mutate(const std::string& id, const MutateFn& fn);
  absl::Status SetPhase(const std::string& id, v1::MigrationPhase phase,
                        const std::string& message);
  // Commits the terminal phase. With `only_from` set, only if the record
  // is still in that phase (ABORTED otherwise).
  absl::Status Finish(const std::string& id, v1::MigrationResult result,
                      const v1::MigrationProgress* last_progress,
                      v1::MigrationPhase only_from = v1::MIGRATION_PHASE_UNSPECIFIED);
  void RecordProgress(const std::string& id, const v1::MigrationProgress& p,
                      absl::Time* last_write);
  bool stopping();

  Store* const store_;
  const OrchestratorOptions options_;
  absl::Mutex placement_mu_;
  int64_t listener_id_ = 0;

  absl::Mutex mu_;
  bool started_ ABSL_GUARDED_BY(mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::map<std::string, std::unique_ptr<Runner>> runners_ ABSL_GUARDED_BY(mu_);
  // Earliest time the next reconcile of a migration may start.
  absl::flat_hash_map<std::string, absl::Time> retry_after_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, uint32_t> drain_parallel_ ABSL_GUARDED_BY(mu_);
  std::thread loop_;
};

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_ORCHESTRATOR_ORCHESTRATOR_H_
