// Small conversions the controller uses everywhere: absl time <-> protobuf
// Timestamp/Duration, absl::Status <-> grpc::Status, fresh ids.
#ifndef FERRY_CONTROLLER_ORCHESTRATOR_PROTO_TIME_H_
#define FERRY_CONTROLLER_ORCHESTRATOR_PROTO_TIME_H_

#include <cstdint>
#include <string>

#include <grpcpp/grpcpp.h>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace ferry::controller {

inline void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}
inline absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}
inline void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}
inline absl::Duration FromProto(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

// absl and gRPC share the canonical code numbers.
inline grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}
inline absl::Status FromGrpc(const grpc::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      s.error_message());
}

// 128 random bits as a UUID-shaped string (version 4 layout).
inline std::string NewUuid() {
  absl::BitGen gen;
  const uint64_t a = absl::Uniform<uint64_t>(gen);
  const uint64_t b = absl::Uniform<uint64_t>(gen);
  return absl::StrFormat("%08x-%04x-4%03x-%04x-%012x", a >> 32, (a >> 16) & 0xffff,
                         a & 0xfff, ((b >> 48) & 0x3fff) | 0x8000,
                         b & 0xffffffffffffull);
}

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_ORCHESTRATOR_PROTO_TIME_H_
