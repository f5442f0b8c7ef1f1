// WriteTxn: a set of record changes and events that Store::Commit writes
// atomically (one synced RocksDB WriteBatch) or not at all.
//
//   WriteTxn txn;
//   txn.Update(migration);   // CAS on migration.resource_version
//   txn.Update(vm);          // CAS on vm.resource_version
//   txn.AppendEvent(event);  // sequence and (if unset) time filled in
//   ASSIGN_OR_RETURN(CommitResult r, store->Commit(txn));
//   // every record written now has resource_version == r.revision
#ifndef FERRY_CONTROLLER_STORE_WRITE_TXN_H_
#define FERRY_CONTROLLER_STORE_WRITE_TXN_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "controller/store/records.h"
#include "proto/controller.pb.h"

namespace ferry::controller {

class WriteTxn {
 public:
  // ALREADY_EXISTS at commit if the key is taken. resource_version ignored.
  template <typename T>
  void Create(T record) {
    Add<T>(Op::kCreate, std::move(record), 0);
  }
  // Compare-and-swap: the stored record's resource_version must equal
  // record.resource_version (ABORTED if not; NOT_FOUND if absent;
  // INVALID_ARGUMENT if 0 — read the record first).
  template <typename T>
  void Update(T record) {
    const uint64_t expected = record.resource_version();
    Add<T>(Op::kUpdate, std::move(record), expected);
  }
  // NOT_FOUND if absent; ABORTED if expected_version != 0 and differs.
  template <typename T>
  void Delete(std::string key, uint64_t expected_version = 0) {
    Op op;
    op.kind = RecordTraits<T>::kKind;
    op.cf = RecordTraits<T>::kCf;
    op.noun = RecordTraits<T>::kNoun;
    op.type = Op::kDelete;
    op.key = std::move(key);
    op.expected_version = expected_version;
    ops_.push_back(std::move(op));
  }
  void AppendEvent(v1::Event event) { events_.push_back(std::move(event)); }

  bool empty() const { return ops_.empty() && events_.empty(); }

  struct Op {
    enum Type { kCreate, kUpdate, kDelete };
    RecordKind kind;
    Cf cf;
    const char* noun;
    Type type;
    std::string key;
    uint64_t expected_version = 0;
    // Create/Update: the record (its resource_version is overwritten).
    std::shared_ptr<google::protobuf::Message> record;
  };
  const std::vector<Op>& ops() const { return ops_; }
  const std::vector<v1::Event>& events() const { return events_; }

 private:
  template <typename T>
  void Add(typename Op::Type type, T record, uint64_t expected) {
    Op op;
    op.kind = RecordTraits<T>::kKind;
    op.cf = RecordTraits<T>::kCf;
    op.noun = RecordTraits<T>::kNoun;
    op.type = type;
    op.key = RecordTraits<T>::Key(record);
    op.expected_version = expected;
    op.record = std::make_shared<T>(std::move(record));
    ops_.push_back(std::move(op));
  }

  std::vector<Op> ops_;
  std::vector<v1::Event> events_;
};

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_STORE_WRITE_TXN_H_
