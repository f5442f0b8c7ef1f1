// Parses the Prometheus text exposition format (version 0.0.4) into
// samples, so tests and benchmarks can check what a daemon exposes.
#ifndef FERRY_COMMON_METRICS_TEXT_FORMAT_H_
#define FERRY_COMMON_METRICS_TEXT_FORMAT_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace ferry::metrics {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

// INVALID_ARGUMENT with the line number for a malformed sample line.
// Comment (# HELP / # TYPE) and blank lines are skipped.
absl::StatusOr<std::vector<Sample>> ParseTextFormat(absl::string_view text);

// The first sample named `name` whose labels include every pair of `match`.
std::optional<double> FindSample(
    const std::vector<Sample>& samples, absl::string_view name,
    const std::map<std::string, std::string>& match = {});

// How many samples are named `name`.
int CountSamples(const std::vector<Sample>& samples, absl::string_view name);

}  // namespace ferry::metrics

#endif  // FERRY_COMMON_METRICS_TEXT_FORMAT_H_
