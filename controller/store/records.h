// How each stored proto maps onto the store: its column family, key, labels
// and record kind. One specialization per record type; Store's templates are
// instantiated for exactly these (store.cc).
#ifndef FERRY_CONTROLLER_STORE_RECORDS_H_
#define FERRY_CONTROLLER_STORE_RECORDS_H_

#include <string>

#include "controller/store/codec.h"
#include "google/protobuf/map.h"
#include "proto/controller.pb.h"

namespace ferry::controller {

// Column families. kDefault is RocksDB's mandatory one and stays empty.
enum class Cf : int { kDefault = 0, kHosts, kVms, kMigrations, kEvents, kMeta };
inline constexpr int kNumCfs = 6;
inline constexpr const char* kCfNames[kNumCfs] = {
    "default", "hosts", "vms", "migrations", "events", "meta"};

// Keys of the `meta` column family.
inline constexpr char kMetaSchemaVersion[] = "schema_version";
inline constexpr char kMetaRevision[] = "revision";
inline constexpr char kMetaLastEventSequence[] = "last_event_sequence";
// Bump on any incompatible change to keys, column families or envelope.
inline constexpr uint32_t kSchemaVersion = 1;

template <typename T>
struct RecordTraits;

template <>
struct RecordTraits<v1::Host> {
  static constexpr RecordKind kKind = RecordKind::kHost;
  static constexpr Cf kCf = Cf::kHosts;
  static constexpr const char* kNoun = "host";
  static const std::string& Key(const v1::Host& h) { return h.name(); }
  static const google::protobuf::Map<std::string, std::string>& Labels(
      const v1::Host& h) {
    return h.info().labels();
  }
};

template <>
struct RecordTraits<v1::Vm> {
  static constexpr RecordKind kKind = RecordKind::kVm;
  static constexpr Cf kCf = Cf::kVms;
  static constexpr const char* kNoun = "vm";
  static const std::string& Key(const v1::Vm& v) { return v.spec().name(); }
  static const google::protobuf::Map<std::string, std::string>& Labels(
      const v1::Vm& v) {
    return v.spec().labels();
  }
};

template <>
struct RecordTraits<v1::Migration> {
  static constexpr RecordKind kKind = RecordKind::kMigration;
  static constexpr Cf kCf = Cf::kMigrations;
  static constexpr const char* kNoun = "migration";
  static const std::string& Key(const v1::Migration& m) { return m.id(); }
  // Migrations carry no labels; a non-empty selector requiring a label
  // matches none of them.
  static const google::protobuf::Map<std::string, std::string>& Labels(
      const v1::Migration&) {
    static const auto* const kEmpty =
        new google::protobuf::Map<std::string, std::string>();
    return *kEmpty;
  }
};

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_STORE_RECORDS_H_
