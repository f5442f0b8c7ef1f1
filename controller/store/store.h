// The controller's durable state: hosts, VMs, migrations and the event log,
// in RocksDB on local disk.
//
// Layout: one column family per record type (`hosts`, `vms`, `migrations`),
// `events` keyed by sequence, and `meta` (schema version, revision, last
// event sequence). Values are protos in a checked envelope (codec.h).
//
// Durability: every commit is ONE rocksdb::WriteBatch written with
// WriteOptions.sync = true, so it is on disk (WAL fsynced) before Commit()
// returns — the DESIGN.md rule "every state transition is written before it
// is acted on". A multi-record transition (migration phase + VM phase +
// event) is one WriteTxn, hence one batch: after a crash either all of it is
// there or none.
//
// Concurrency: reads go straight to RocksDB and never block. Commits are
// serialized by one mutex held across the compare-and-swap checks and the
// write. That costs group commit (one fsync per commit), which is fine for a
// control plane doing tens of transitions per second; OptimisticTransactionDB
// would allow parallel commits at the price of retry loops in every caller.
//
// resource_version: the store keeps one cluster-wide `revision` that every
// commit bumps; every record a commit writes gets resource_version = that
// revision (etcd/Kubernetes style). So versions are unique across records
// and across delete/re-create, and a stale version from an earlier
// incarnation of a name can never match.
#ifndef FERRY_CONTROLLER_STORE_STORE_H_
#define FERRY_CONTROLLER_STORE_STORE_H_

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controller/store/records.h"
#include "controller/store/write_txn.h"
#include "proto/controller.pb.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
}  // namespace rocksdb

namespace ferry::controller {

struct StoreOptions {
  bool create_if_missing = true;
  // fsync the WAL on every commit. Only benchmarks measuring the difference
  // turn it off; the controller never does.
  bool sync = true;
  // Time stamped on events that carry none. Injected for tests.
  std::function<absl::Time()> clock = [] { return absl::Now(); };
  // Called after every successful commit with the time of the RocksDB write
  // itself (the batch with its synced WAL); for metrics. Must be cheap and
  // thread-safe: it runs under the commit mutex.
  std::function<void(absl::Duration)> on_commit_write;
};

inline constexpr int32_t kDefaultPageSize = 100;
inline constexpr int32_t kMaxPageSize = 1000;

template <typename T>
struct ListOptions {
  // Only keys (names / ids) starting with this.
  std::string prefix;
  // Kubernetes syntax, see label_selector.h.
  std::string label_selector;
  // Extra predicate (e.g. VMs on one host, migrations in some phases).
  std::function<bool(const T&)> filter;
  // 0 = kDefaultPageSize; capped at kMaxPageSize.
  int32_t page_size = 0;
  // From the previous page's next_page_token; opaque.
  std::string page_token;
};

template <typename T>
struct ListPage {
  std::vector<T> items;
  // Empty when there is nothing more to list.
  std::string next_page_token;
};

struct EventQuery {
  // Only events with sequence > this; 0 = from the start.
  uint64_t after_sequence = 0;
  // 0 = kDefaultPageSize; capped at kMaxPageSize.
  int32_t limit = 0;
  v1::ObjectKind object_kind = v1::OBJECT_KIND_UNSPECIFIED;  // any
  std::string object_name;                                    // any
  v1::EventSeverity min_severity = v1::EVENT_SEVERITY_UNSPECIFIED;
};

struct EventPage {
  std::vector<v1::Event> events;
  // The last sequence looked at (matching or not): pass it as the next
  // after_sequence so a filtered tail does not rescan.
  uint64_t last_scanned_sequence = 0;
  // True if the limit stopped the scan before the end of the log.
  bool more = false;
};

struct CommitResult {
  // The store revision of this commit = resource_version of every record it
  // wrote.
  uint64_t revision = 0;
  // Sequences given to the txn's events, in order.
  std::vector<uint64_t> event_sequences;
};

// What a commit listener is told, after the commit is durable.
struct CommitInfo {
  uint64_t revision = 0;
  // Records written or deleted: (kind, key).
  std::vector<std::pair<RecordKind, std::string>> changed;
  // The events appended, sequence and time filled in.
  std::vector<v1::Event> events;
};

class Store {
 public:
  // Opens (creating if allowed) the store at `path`. FAILED_PRECONDITION if
  // another Store or process holds the directory (RocksDB's LOCK file) or
  // the schema version differs; DATA_LOSS if the metadata is corrupt.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const std::string& path,
                                                     StoreOptions options = {});
  // Closes the DB. Does not force a flush: the synced WAL is the truth.
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // T is v1::Host, v1::Vm or v1::Migration (records.h).
  // NOT_FOUND if absent; DATA_LOSS naming the key if the value is corrupt.
  template <typename T>
  absl::StatusOr<T> Get(absl::string_view key) const;
  // In key order; INVALID_ARGUMENT for a bad selector, page size or token.
  template <typename T>
  absl::StatusOr<ListPage<T>> List(const ListOptions<T>& options) const;
  // Single-record commits, optionally with one event; return the record as
  // stored (resource_version set). Semantics as WriteTxn's ops.
  template <typename T>
  absl::StatusOr<T> Create(T record, const v1::Event* event = nullptr);
  template <typename T>
  absl::StatusOr<T> Update(T record, const v1::Event* event = nullptr);
  template <typename T>
  absl::Status Delete(absl::string_view key, uint64_t expected_version = 0,
                      const v1::Event* event = nullptr);

  // Checks every op's precondition, then writes all ops, the events and the
  // new revision in one synced batch. All or nothing.
  absl::StatusOr<CommitResult> Commit(const WriteTxn& txn);

  absl::StatusOr<EventPage> ListEvents(const EventQuery& query) const;

  // Small controller-internal bookkeeping that is not a resource (request_id
  // idempotency records, drain parameters): opaque values in the `meta`
  // column family under "aux/<key>", each Put/Delete one synced write. No
  // resource_version, no events, no listeners, revision() unchanged.
  // INVALID_ARGUMENT for an empty or oversized key.
  absl::Status PutAux(absl::string_view key, absl::string_view value);
  // NOT_FOUND if absent.
  absl::StatusOr<std::string> GetAux(absl::string_view key) const;
  // OK if absent.
  absl::Status DeleteAux(absl::string_view key);
  // (key without "aux/", value) for every key starting with `prefix`.
  absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ListAux(
      absl::string_view prefix) const;

  uint64_t revision() const;
  uint64_t last_event_sequence() const;
  // Blocks until revision() > after_revision or `timeout` passes; returns
  // the revision then. For streaming APIs: wait, then List/ListEvents.
  uint64_t WaitForRevision(uint64_t after_revision,
                           absl::Duration timeout) const;

  // Called after every durable commit, in commit order, with commits
  // blocked: a listener must be quick and must not call Commit/Create/
  // Update/Delete or RemoveListener (reads are fine). Typical use: copy what
  // it needs into a queue and signal.
  using Listener = std::function<void(const CommitInfo&)>;
  int64_t AddListener(Listener listener);
  // After it returns the listener is not running and will not be called.
  void RemoveListener(int64_t id);

  const std::string& path() const { return path_; }

 private:
  Store(std::string path, StoreOptions options);
  absl::Status Init(bool create_if_missing);
  absl::Status LoadMeta();
  rocksdb::ColumnFamilyHandle* cf(Cf c) const {
    return cfs_[static_cast<int>(c)];
  }
  absl::StatusOr<std::string> ReadRaw(Cf c, absl::string_view key,
                                      bool* found) const;
  // Checks one op (exists / absent / resource_version) against the store.
  absl::Status CheckOp(const WriteTxn::Op& op) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(commit_mu_);

  const std::string path_;
  const StoreOptions options_;
  rocksdb::DB* db_ = nullptr;  // Owned; closed and deleted in ~Store.
  std::array<rocksdb::ColumnFamilyHandle*, kNumCfs> cfs_{};

  // Serializes commits: CAS checks and the write happen under it.
  absl::Mutex commit_mu_;
  // revision_/last_event_sequence_ are written under commit_mu_ AND state_mu_
  // and read under either; state_mu_ is what waiters block on.
  mutable absl::Mutex state_mu_ ABSL_ACQUIRED_AFTER(commit_mu_);
  uint64_t revision_ ABSL_GUARDED_BY(state_mu_) = 0;
  uint64_t last_event_sequence_ ABSL_GUARDED_BY(state_mu_) = 0;

  absl::Mutex listeners_mu_ ABSL_ACQUIRED_AFTER(commit_mu_);
  int64_t next_listener_id_ ABSL_GUARDED_BY(listeners_mu_) = 1;
  std::vector<std::pair<int64_t, Listener>> listeners_
      ABSL_GUARDED_BY(listeners_mu_);
};

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_STORE_STORE_H_
