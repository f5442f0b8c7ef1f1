// Text of `ferryctl describe`, separated from the RPCs so tests can check
// it against golden strings.
#ifndef FERRY_CLI_DESCRIBE_H_
#define FERRY_CLI_DESCRIBE_H_

#include <string>
#include <vector>

#include "absl/time/time.h"
#include "proto/controller.pb.h"

namespace ferry::cli {

std::string DescribeHost(const v1::Host& h, const std::vector<v1::Vm>& vms,
                         absl::Time now);
std::string DescribeVm(const v1::Vm& vm,
                       const std::vector<v1::Migration>& migrations,
                       absl::Time now);
// Includes transitions, a per-round summary of progress_samples and the
// result.
std::string DescribeMigration(const v1::Migration& m, absl::Time now);
// The last 10 events, oldest first.
std::string DescribeEvents(const std::vector<v1::Event>& events,
                           absl::Time now);

}  // namespace ferry::cli

#endif  // FERRY_CLI_DESCRIBE_H_
