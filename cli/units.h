// Parsing and printing of the quantities ferryctl deals in: byte sizes,
// byte rates, durations and ages. Parsers return INVALID_ARGUMENT with a
// message naming the bad input and the accepted forms.
#ifndef FERRY_CLI_UNITS_H_
#define FERRY_CLI_UNITS_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace ferry::cli {

// "1GiB", "512Mi", "1.5G", "100MB", "4096". IEC prefixes (Ki, KiB, Mi, ...)
// are powers of 1024; SI ones (k, K, KB, M, MB, ...) powers of 1000, as in
// Kubernetes quantities. A bare number is bytes. Bits ("Mb") are rejected.
absl::StatusOr<uint64_t> ParseBytes(absl::string_view text);

// A size per second: "100MB/s", "1GiB/s"; the "/s" may be left out.
absl::StatusOr<uint64_t> ParseRate(absl::string_view text);

// Go-style duration ("50ms", "1m30s", "2h"); must have a unit, must be >= 0
// and finite.
absl::StatusOr<absl::Duration> ParseDurationArg(absl::string_view text);

// "true"/"false" (also 1/0, yes/no).
absl::StatusOr<bool> ParseBoolArg(absl::string_view text);

// 1536 -> "1.5KiB", 0 -> "0B", 1073741824 -> "1GiB". One decimal below 10
// of a unit, none above, trailing ".0" dropped.
std::string FormatBytes(uint64_t bytes);
// FormatBytes + "/s".
std::string FormatRate(uint64_t bytes_per_s);

// Kubernetes-style age: "45s", "5m3s", "3h", "2d", "1y20d": precise when
// young, coarser with age, never more than two units.
std::string FormatAge(absl::Duration d);

// A short exact-ish span for downtimes and totals: "35ms", "1.25s", "2m5s".
std::string FormatSpan(absl::Duration d);

// An ETA in whole seconds, rounded up so it reaches "0s" only when due:
// "0s", "12s", "2m5s", "1h3m".
std::string FormatEta(absl::Duration d);

}  // namespace ferry::cli

#endif  // FERRY_CLI_UNITS_H_
