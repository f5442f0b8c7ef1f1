// Sample records for the output and end-to-end tests, all relative to
// kNow so AGE columns are reproducible.
#ifndef FERRY_CLI_TEST_FIXTURES_H_
#define FERRY_CLI_TEST_FIXTURES_H_

#include "absl/time/time.h"
#include "proto/controller.pb.h"

namespace ferry::cli::testing {

// 2027-01-15T08:00:00Z.
inline const absl::Time kNow = absl::FromUnixSeconds(1800000000);

google::protobuf::Timestamp Ts(absl::Time t);
google::protobuf::Duration Dur(absl::Duration d);

v1::Host NodeA();   // Ready, 2 VMs, 2d3h old.
v1::Host NodeB();   // Cordoned, empty, 45s old.
v1::Vm Web1();      // RUNNING on node-a, uniform workload.
v1::Vm Db1();       // PENDING, no host.
v1::Migration Mig1();  // web-1 node-a -> node-b, TRANSFERRING round 2, 75%.
v1::Migration Mig2();  // db-1, PENDING (no capacity).
v1::Migration Mig3();  // web-1, SUCCEEDED, with transitions and samples.

}  // namespace ferry::cli::testing

#endif  // FERRY_CLI_TEST_FIXTURES_H_
