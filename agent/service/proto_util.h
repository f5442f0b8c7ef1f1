// Small helpers shared by the agent's gRPC layer: proto time types and
// random identifiers.
#ifndef FERRY_AGENT_SERVICE_PROTO_UTIL_H_
#define FERRY_AGENT_SERVICE_PROTO_UTIL_H_

#include <google/protobuf/duration.pb.h>
#include <google/protobuf/timestamp.pb.h>

#include <cstdint>
#include <random>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"

namespace ferry::service {

inline void ToProtoTime(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  int64_t s = ns / 1000000000, n = ns % 1000000000;
  if (n < 0) {  // Timestamp.nanos is always non-negative
    n += 1000000000;
    --s;
  }
  out->set_seconds(s);
  out->set_nanos(static_cast<int32_t>(n));
}

inline absl::Time FromProtoTime(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

inline void ToProtoDuration(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

inline absl::Duration FromProtoDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// `bits` random bits (a multiple of 32) as lowercase hex, from the OS's
// entropy source: instance ids and uids must not repeat across restarts.
inline std::string RandomHexId(int bits = 128) {
  std::random_device rd;
  std::string out;
  for (int i = 0; i < bits / 32; ++i) {
    absl::StrAppendFormat(&out, "%08x", static_cast<uint32_t>(rd()));
  }
  return out;
}

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_PROTO_UTIL_H_
