#include "controller/store/store.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "controller/store/label_selector.h"
#include "google/protobuf/util/time_util.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/write_batch.h"

namespace ferry::controller {
namespace {

constexpr size_t kMaxKeyBytes = 512;

absl::Status FromRocks(const rocksdb::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  std::string msg = absl::StrCat(what, ": ", s.ToString());
  if (s.IsNotFound()) return absl::NotFoundError(msg);
  if (s.IsCorruption()) return absl::DataLossError(msg);
  if (s.IsInvalidArgument()) return absl::InvalidArgumentError(msg);
  if (s.IsBusy() || s.IsTryAgain()) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

// RocksDB reports a held LOCK as an IOError: "lock hold by current process"
// (same process) or "While lock file: <path>/LOCK: Resource temporarily
// unavailable" (another process).
bool IsLockError(const rocksdb::Status& s) {
  const std::string text = s.ToString();
  return s.IsIOError() && (absl::StrContains(text, "lock hold by current") ||
                           absl::StrContains(text, "/LOCK"));
}

std::string Describe(const char* noun, absl::string_view key) {
  return absl::StrCat(noun, " '", key, "'");
}

std::unique_ptr<google::protobuf::Message> NewRecord(RecordKind kind) {
  switch (kind) {
    case RecordKind::kHost:
      return std::make_unique<v1::Host>();
    case RecordKind::kVm:
      return std::make_unique<v1::Vm>();
    case RecordKind::kMigration:
      return std::make_unique<v1::Migration>();
    case RecordKind::kEvent:
      return std::make_unique<v1::Event>();
  }
  return nullptr;
}

uint64_t VersionOf(const google::protobuf::Message& msg) {
  const auto* field = msg.GetDescriptor()->FindFieldByName("resource_version");
  return field ? msg.GetReflection()->GetUInt64(msg, field) : 0;
}

void SetVersion(google::protobuf::Message* msg, uint64_t v) {
  const auto* field = msg->GetDescriptor()->FindFieldByName("resource_version");
  if (field) msg->GetReflection()->SetUInt64(msg, field, v);
}

absl::Status CorruptAt(const absl::Status& s, absl::string_view cf,
                       absl::string_view key) {
  return absl::DataLossError(
      absl::StrCat("corrupt value in column family '", cf, "' at key '",
                   absl::CHexEscape(key), "': ", s.message()));
}

std::string MakePageToken(RecordKind kind, absl::string_view last_key) {
  return absl::WebSafeBase64Escape(
      absl::StrCat(RecordKindName(kind), ":", last_key));
}

absl::StatusOr<std::string> ParsePageToken(RecordKind kind,
                                           absl::string_view token) {
  std::string raw;
  const std::string want = absl::StrCat(RecordKindName(kind), ":");
  if (!absl::WebSafeBase64Unescape(token, &raw) ||
      !absl::StartsWith(raw, want)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "page_token is not one returned by a List of ",
        RecordKindName(kind), " records; pass next_page_token unchanged"));
  }
  return raw.substr(want.size());
}

absl::StatusOr<int32_t> PageSize(int32_t requested) {
  if (requested < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size ", requested, " is negative"));
  }
  if (requested == 0) return kDefaultPageSize;
  return std::min(requested, kMaxPageSize);
}

}  // namespace

Store::Store(std::string path, StoreOptions options)
    : path_(std::move(path)), options_(std::move(options)) {}

Store::~Store() {
  if (db_ == nullptr) return;
  for (rocksdb::ColumnFamilyHandle* h : cfs_) {
    if (h != nullptr) db_->DestroyColumnFamilyHandle(h);
  }
  db_->Close().PermitUncheckedError();
  delete db_;
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const std::string& path,
                                                   StoreOptions options) {
  const bool create = options.create_if_missing;
  std::unique_ptr<Store> store(new Store(path, std::move(options)));
  RETURN_IF_ERROR(store->Init(create));
  RETURN_IF_ERROR(store->LoadMeta());
  return store;
}

absl::Status Store::Init(bool create_if_missing) {
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = create_if_missing;
  db_options.create_missing_column_families = create_if_missing;
  // Refuse a store written by a build with column families we do not know:
  // opening it would silently ignore part of the state.
  std::vector<std::string> existing;
  if (rocksdb::DB::ListColumnFamilies(db_options, path_, &existing).ok()) {
    for (const std::string& name : existing) {
      if (std::find(std::begin(kCfNames), std::end(kCfNames), name) ==
          std::end(kCfNames)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "store at ", path_, " has unknown column family '", name,
            "'; it was written by a newer controller (this build knows ",
            absl::StrJoin(kCfNames, ", "), ")"));
      }
    }
  }
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  for (const char* name : kCfNames) {
    descriptors.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::Status s =
      rocksdb::DB::Open(db_options, path_, descriptors, &handles, &db_);
  if (IsLockError(s)) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store at ", path_,
        " is already open (RocksDB LOCK held by another Store or process); "
        "only one controller may own a store: ",
        s.ToString()));
  }
  RETURN_IF_ERROR(FromRocks(s, absl::StrCat("opening store at ", path_)));
  std::copy(handles.begin(), handles.end(), cfs_.begin());
  return absl::OkStatus();
}

absl::StatusOr<std::string> Store::ReadRaw(Cf c, absl::string_view key,
                                           bool* found) const {
  std::string value;
  rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), cf(c),
                               rocksdb::Slice(key.data(), key.size()), &value);
  *found = s.ok();
  if (s.IsNotFound()) return std::string();
  RETURN_IF_ERROR(FromRocks(
      s, absl::StrCat("reading ", kCfNames[static_cast<int>(c)], "/", key)));
  return value;
}

absl::Status Store::LoadMeta() {
  bool found = false;
  ASSIGN_OR_RETURN(std::string raw, ReadRaw(Cf::kMeta, kMetaSchemaVersion, &found));
  if (!found) {
    // A fresh store, unless records exist without metadata.
    for (Cf c : {Cf::kHosts, Cf::kVms, Cf::kMigrations, Cf::kEvents}) {
      std::unique_ptr<rocksdb::Iterator> it(
          db_->NewIterator(rocksdb::ReadOptions(), cf(c)));
      it->SeekToFirst();
      if (it->Valid()) {
        return absl::DataLossError(absl::StrCat(
            "store at ", path_, " holds records but no meta/",
            kMetaSchemaVersion, "; refusing to guess its format"));
      }
    }
    rocksdb::WriteOptions wo;
    wo.sync = true;
    return FromRocks(db_->Put(wo, cf(Cf::kMeta), kMetaSchemaVersion,
                              EncodeFixed32(kSchemaVersion)),
                     "writing schema version");
  }
  uint32_t version = 0;
  if (absl::Status s = DecodeFixed32(raw, &version); !s.ok()) {
    return CorruptAt(s, "meta", kMetaSchemaVersion);
  }
  if (version != kSchemaVersion) {
    return absl::FailedPreconditionError(absl::StrCat(
        "store at ", path_, " has schema version ", version,
        "; this controller reads version ", kSchemaVersion,
        ". Run the matching controller build or migrate the store"));
  }
  uint64_t revision = 0, last_seq = 0;
  for (auto [key, out] : {std::pair{kMetaRevision, &revision},
                          std::pair{kMetaLastEventSequence, &last_seq}}) {
    ASSIGN_OR_RETURN(raw, ReadRaw(Cf::kMeta, key, &found));
    if (!found) continue;
    if (absl::Status s = DecodeFixed64(raw, out); !s.ok()) {
      return CorruptAt(s, "meta", key);
    }
  }
  // Events and the counter are written in one batch, so they agree; take
  // the max anyway so that a sequence is never handed out twice.
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), cf(Cf::kEvents)));
  it->SeekToLast();
  if (it->Valid()) {
    uint64_t seq = 0;
    absl::string_view key(it->key().data(), it->key().size());
    if (absl::Status s = ParseEventKey(key, &seq); !s.ok()) {
      return CorruptAt(s, "events", key);
    }
    last_seq = std::max(last_seq, seq);
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "scanning events"));
  absl::MutexLock lock(&state_mu_);
  revision_ = revision;
  last_event_sequence_ = last_seq;
  return absl::OkStatus();
}

template <typename T>
absl::StatusOr<T> Store::Get(absl::string_view key) const {
  using Traits = RecordTraits<T>;
  bool found = false;
  ASSIGN_OR_RETURN(std::string raw, ReadRaw(Traits::kCf, key, &found));
  if (!found) {
    return absl::NotFoundError(
        absl::StrCat(Describe(Traits::kNoun, key), " not found"));
  }
  T record;
  if (absl::Status s = DecodeRecord(Traits::kKind, raw, &record); !s.ok()) {
    return CorruptAt(s, kCfNames[static_cast<int>(Traits::kCf)], key);
  }
  return record;
}

template <typename T>
absl::StatusOr<ListPage<T>> Store::List(const ListOptions<T>& options) const {
  using Traits = RecordTraits<T>;
  ASSIGN_OR_RETURN(const int32_t page_size, PageSize(options.page_size));
  ASSIGN_OR_RETURN(LabelSelector selector,
                   LabelSelector::Parse(options.label_selector));
  std::string after;
  if (!options.page_token.empty()) {
    ASSIGN_OR_RETURN(after, ParsePageToken(Traits::kKind, options.page_token));
  }
  // One iterator = one consistent snapshot for the page.
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), cf(Traits::kCf)));
  it->Seek(std::max(after, options.prefix));
  ListPage<T> page;
  std::string last_key;
  for (; it->Valid(); it->Next()) {
    absl::string_view key(it->key().data(), it->key().size());
    if (!absl::StartsWith(key, options.prefix)) break;
    if (!options.page_token.empty() && key == after) continue;
    T record;
    absl::string_view value(it->value().data(), it->value().size());
    if (absl::Status s = DecodeRecord(Traits::kKind, value, &record); !s.ok()) {
      return CorruptAt(s, kCfNames[static_cast<int>(Traits::kCf)], key);
    }
    if (!selector.Matches(Traits::Labels(record))) continue;
    if (options.filter && !options.filter(record)) continue;
    if (static_cast<int32_t>(page.items.size()) == page_size) {
      // A further match exists: the token is exact, never an empty page.
      page.next_page_token = MakePageToken(Traits::kKind, last_key);
      break;
    }
    last_key = std::string(key);
    page.items.push_back(std::move(record));
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "listing"));
  return page;
}

template <typename T>
absl::StatusOr<T> Store::Create(T record, const v1::Event* event) {
  WriteTxn txn;
  txn.Create(record);
  if (event != nullptr) txn.AppendEvent(*event);
  ASSIGN_OR_RETURN(CommitResult result, Commit(txn));
  record.set_resource_version(result.revision);
  return record;
}

template <typename T>
absl::StatusOr<T> Store::Update(T record, const v1::Event* event) {
  WriteTxn txn;
  txn.Update(record);
  if (event != nullptr) txn.AppendEvent(*event);
  ASSIGN_OR_RETURN(CommitResult result, Commit(txn));
  record.set_resource_version(result.revision);
  return record;
}

template <typename T>
absl::Status Store::Delete(absl::string_view key, uint64_t expected_version,
                           const v1::Event* event) {
  WriteTxn txn;
  txn.Delete<T>(std::string(key), expected_version);
  if (event != nullptr) txn.AppendEvent(*event);
  return Commit(txn).status();
}

absl::Status Store::CheckOp(const WriteTxn::Op& op) const {
  const std::string what = Describe(op.noun, op.key);
  if (op.key.empty() || op.key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        op.noun, " name must be 1..", kMaxKeyBytes, " bytes, got ",
        op.key.size()));
  }
  if (op.type == WriteTxn::Op::kUpdate && op.expected_version == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "update of ", what,
        " has resource_version 0; read the record and update that copy"));
  }
  bool found = false;
  ASSIGN_OR_RETURN(std::string raw, ReadRaw(op.cf, op.key, &found));
  if (op.type == WriteTxn::Op::kCreate) {
    if (found) return absl::AlreadyExistsError(absl::StrCat(what, " already exists"));
    return absl::OkStatus();
  }
  if (!found) return absl::NotFoundError(absl::StrCat(what, " not found"));
  // An unconditional delete works even on a corrupt value (repair path).
  if (op.type == WriteTxn::Op::kDelete && op.expected_version == 0) {
    return absl::OkStatus();
  }
  std::unique_ptr<google::protobuf::Message> current = NewRecord(op.kind);
  if (absl::Status s = DecodeRecord(op.kind, raw, current.get()); !s.ok()) {
    return CorruptAt(s, kCfNames[static_cast<int>(op.cf)], op.key);
  }
  const uint64_t stored = VersionOf(*current);
  if (stored != op.expected_version) {
    return absl::AbortedError(absl::StrCat(
        what, " changed: resource_version ", op.expected_version,
        " is stale (stored ", stored, "); re-read and retry"));
  }
  return absl::OkStatus();
}

absl::StatusOr<CommitResult> Store::Commit(const WriteTxn& txn) {
  if (txn.empty()) return absl::InvalidArgumentError("empty transaction");
  std::set<std::pair<RecordKind, std::string>> keys;
  for (const WriteTxn::Op& op : txn.ops()) {
    if (!keys.emplace(op.kind, op.key).second) {
      return absl::InvalidArgumentError(absl::StrCat(
          "transaction touches ", Describe(op.noun, op.key), " twice"));
    }
  }
  absl::MutexLock commit_lock(&commit_mu_);
  for (const WriteTxn::Op& op : txn.ops()) RETURN_IF_ERROR(CheckOp(op));

  uint64_t revision, seq;
  {
    absl::MutexLock lock(&state_mu_);
    revision = revision_ + 1;
    seq = last_event_sequence_;
  }
  CommitInfo info;
  info.revision = revision;
  rocksdb::WriteBatch batch;
  for (const WriteTxn::Op& op : txn.ops()) {
    info.changed.emplace_back(op.kind, op.key);
    if (op.type == WriteTxn::Op::kDelete) {
      batch.Delete(cf(op.cf), op.key);
      continue;
    }
    std::unique_ptr<google::protobuf::Message> record(op.record->New());
    record->CopyFrom(*op.record);
    SetVersion(record.get(), revision);
    batch.Put(cf(op.cf), op.key, EncodeRecord(op.kind, *record));
  }
  CommitResult result;
  result.revision = revision;
  for (v1::Event event : txn.events()) {
    event.set_sequence(++seq);
    if (!event.has_time()) {
      const int64_t nanos = absl::ToUnixNanos(options_.clock());
      *event.mutable_time() =
          google::protobuf::util::TimeUtil::NanosecondsToTimestamp(nanos);
    }
    batch.Put(cf(Cf::kEvents), EventKey(seq),
              EncodeRecord(RecordKind::kEvent, event));
    result.event_sequences.push_back(seq);
    info.events.push_back(std::move(event));
  }
  batch.Put(cf(Cf::kMeta), kMetaRevision, EncodeFixed64(revision));
  batch.Put(cf(Cf::kMeta), kMetaLastEventSequence, EncodeFixed64(seq));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  const absl::Time write_start = absl::Now();
  RETURN_IF_ERROR(FromRocks(db_->Write(wo, &batch), "committing"));
  if (options_.on_commit_write) options_.on_commit_write(absl::Now() - write_start);
  {
    absl::MutexLock lock(&state_mu_);
    revision_ = revision;
    last_event_sequence_ = seq;
  }
  absl::MutexLock lock(&listeners_mu_);
  for (const auto& [id, listener] : listeners_) listener(info);
  return result;
}

absl::StatusOr<EventPage> Store::ListEvents(const EventQuery& query) const {
  ASSIGN_OR_RETURN(const int32_t limit, PageSize(query.limit));
  EventPage page;
  page.last_scanned_sequence = query.after_sequence;
  if (query.after_sequence == UINT64_MAX) return page;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), cf(Cf::kEvents)));
  for (it->Seek(EventKey(query.after_sequence + 1)); it->Valid(); it->Next()) {
    absl::string_view key(it->key().data(), it->key().size());
    if (static_cast<int32_t>(page.events.size()) == limit) {
      page.more = true;
      break;
    }
    v1::Event event;
    absl::string_view value(it->value().data(), it->value().size());
    absl::Status s = ParseEventKey(key, &page.last_scanned_sequence);
    if (s.ok()) s = DecodeRecord(RecordKind::kEvent, value, &event);
    if (!s.ok()) return CorruptAt(s, "events", key);
    if (query.object_kind != v1::OBJECT_KIND_UNSPECIFIED &&
        event.object_kind() != query.object_kind) {
      continue;
    }
    if (!query.object_name.empty() && event.object_name() != query.object_name) {
      continue;
    }
    if (event.severity() < query.min_severity) continue;
    page.events.push_back(std::move(event));
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "listing events"));
  return page;
}

namespace {
constexpr absl::string_view kAuxPrefix = "aux/";
absl::StatusOr<std::string> AuxKey(absl::string_view key) {
  if (key.empty() || key.size() > kMaxKeyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "aux key must be 1..", kMaxKeyBytes, " bytes, got ", key.size()));
  }
  return absl::StrCat(kAuxPrefix, key);
}
}  // namespace

absl::Status Store::PutAux(absl::string_view key, absl::string_view value) {
  ASSIGN_OR_RETURN(const std::string k, AuxKey(key));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  // Under the commit mutex so a Commit's batch and this write are ordered.
  absl::MutexLock lock(&commit_mu_);
  return FromRocks(db_->Put(wo, cf(Cf::kMeta), k, rocksdb::Slice(value.data(), value.size())),
                   absl::StrCat("writing ", k));
}

absl::StatusOr<std::string> Store::GetAux(absl::string_view key) const {
  ASSIGN_OR_RETURN(const std::string k, AuxKey(key));
  bool found = false;
  ASSIGN_OR_RETURN(std::string raw, ReadRaw(Cf::kMeta, k, &found));
  if (!found) return absl::NotFoundError(absl::StrCat(k, " not found"));
  return raw;
}

absl::Status Store::DeleteAux(absl::string_view key) {
  ASSIGN_OR_RETURN(const std::string k, AuxKey(key));
  rocksdb::WriteOptions wo;
  wo.sync = options_.sync;
  absl::MutexLock lock(&commit_mu_);
  return FromRocks(db_->Delete(wo, cf(Cf::kMeta), k), absl::StrCat("deleting ", k));
}

absl::StatusOr<std::vector<std::pair<std::string, std::string>>> Store::ListAux(
    absl::string_view prefix) const {
  const std::string start = absl::StrCat(kAuxPrefix, prefix);
  std::vector<std::pair<std::string, std::string>> out;
  std::unique_ptr<rocksdb::Iterator> it(
      db_->NewIterator(rocksdb::ReadOptions(), cf(Cf::kMeta)));
  for (it->Seek(start); it->Valid(); it->Next()) {
    absl::string_view key(it->key().data(), it->key().size());
    if (!absl::StartsWith(key, start)) break;
    key.remove_prefix(kAuxPrefix.size());
    out.emplace_back(std::string(key), it->value().ToString());
  }
  RETURN_IF_ERROR(FromRocks(it->status(), "listing aux records"));
  return out;
}

uint64_t Store::revision() const {
  absl::MutexLock lock(&state_mu_);
  return revision_;
}

uint64_t Store::last_event_sequence() const {
  absl::MutexLock lock(&state_mu_);
  return last_event_sequence_;
}

uint64_t Store::WaitForRevision(uint64_t after_revision,
                                absl::Duration timeout) const {
  absl::MutexLock lock(&state_mu_);
  auto advanced = [this, after_revision]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(
                      state_mu_) { return revision_ > after_revision; };
  state_mu_.AwaitWithTimeout(absl::Condition(&advanced), timeout);
  return revision_;
}

int64_t Store::AddListener(Listener listener) {
  absl::MutexLock lock(&listeners_mu_);
  const int64_t id = next_listener_id_++;
  listeners_.emplace_back(id, std::move(listener));
  return id;
}

void Store::RemoveListener(int64_t id) {
  absl::MutexLock lock(&listeners_mu_);
  listeners_.erase(std::remove_if(listeners_.begin(), listeners_.end(),
                                  [id](const auto& l) { return l.first == id; }),
                   listeners_.end());
}

// The record types the store holds (records.h).
#define FERRY_STORE_INSTANTIATE(T)                                          \
  template absl::StatusOr<T> Store::Get<T>(absl::string_view) const;        \
  template absl::StatusOr<ListPage<T>> Store::List<T>(                      \
      const ListOptions<T>&) const;                                         \
  template absl::StatusOr<T> Store::Create<T>(T, const v1::Event*);         \
  template absl::StatusOr<T> Store::Update<T>(T, const v1::Event*);         \
  template absl::Status Store::Delete<T>(absl::string_view, uint64_t,       \
                                         const v1::Event*);
FERRY_STORE_INSTANTIATE(v1::Host)
FERRY_STORE_INSTANTIATE(v1::Vm)
FERRY_STORE_INSTANTIATE(v1::Migration)
#undef FERRY_STORE_INSTANTIATE

}  // namespace ferry::controller
