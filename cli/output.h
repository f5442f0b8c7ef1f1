// Printing of hosts, VMs and migrations for `get` and `top`: kubectl-style
// tables (normal and wide), canonical protobuf JSON, and YAML of that JSON.
#ifndef FERRY_CLI_OUTPUT_H_
#define FERRY_CLI_OUTPUT_H_

#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "google/protobuf/timestamp.pb.h"
#include "proto/controller.pb.h"

namespace ferry::cli {

enum class OutputFormat { kTable, kWide, kJson, kYaml, kName };

// "table", "wide", "json", "yaml", "name" (also "" = table). "name" prints
// KIND/NAME lines, for scripts and shell completion.
absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view s);

// Left-aligned columns, three spaces apart, like kubectl. The last column is
// not padded, so lines carry no trailing blanks.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows);
// The same, with each column at least (*widths)[i] wide; widths grow to fit.
// --watch passes the widths of its first table so later rows line up.
std::string RenderTable(const std::vector<std::vector<std::string>>& rows,
                        std::vector<size_t>* widths);

// Header and row cells of each resource. `now` makes AGE reproducible.
std::vector<std::string> HostHeader(bool wide);
std::vector<std::string> HostRow(const v1::Host& h, bool wide, absl::Time now);
std::vector<std::string> VmHeader(bool wide);
std::vector<std::string> VmRow(const v1::Vm& vm, bool wide, absl::Time now);
std::vector<std::string> MigrationHeader(bool wide);
std::vector<std::string> MigrationRow(const v1::Migration& m, bool wide,
                                      absl::Time now);

// Canonical JSON of one message, indented, ending in a newline.
std::string ToJson(const google::protobuf::Message& m);
// {"items": [...]} of several messages.
std::string ToJsonList(const std::vector<const google::protobuf::Message*>& ms);
// YAML of the same.
std::string ToYaml(const google::protobuf::Message& m);
std::string ToYamlList(const std::vector<const google::protobuf::Message*>& ms);

// Everything `get` prints for a list (`single` = a NAME was given: one
// object in json/yaml instead of {"items": [...]}).
std::string FormatHosts(const std::vector<v1::Host>& hosts, OutputFormat f,
                        bool single, absl::Time now);
std::string FormatVms(const std::vector<v1::Vm>& vms, OutputFormat f,
                      bool single, absl::Time now);
std::string FormatMigrations(const std::vector<v1::Migration>& ms,
                             OutputFormat f, bool single, absl::Time now);

// Small shared helpers.
absl::Time ToTime(const google::protobuf::Timestamp& ts);
absl::Duration ToDuration(const google::protobuf::Duration& d);
// AGE cell: "<unknown>" for an unset timestamp.
std::string AgeSince(const google::protobuf::Timestamp& ts, absl::Time now);
// "TRANSFERRING" from MIGRATION_PHASE_TRANSFERRING, etc.
std::string EnumSuffix(absl::string_view full, absl::string_view prefix);
std::string PhaseName(v1::MigrationPhase p);
std::string VmPhaseName(v1::VmPhase p);
std::string HostStatus(const v1::Host& h);  // "Ready,SchedulingDisabled"
// Bytes still to send. Early round-0 samples carry remaining_bytes 0 (no
// harvest yet); then it is derived from what was sent: total - (data +
// zero pages) * 4 KiB.
uint64_t EffectiveRemaining(const v1::MigrationProgress& p);
// Share of guest memory no longer waiting to be sent, 0-100; -1 unknown.
int ProgressPercent(const v1::Migration& m);
// expected_downtime unless unset or the agent's "cannot tell" sentinel
// (it reports a year when bandwidth is still unknown).
std::optional<absl::Duration> KnownExpectedDowntime(
    const v1::MigrationProgress& p);
bool IsTerminal(v1::MigrationPhase p);

}  // namespace ferry::cli

#endif  // FERRY_CLI_OUTPUT_H_
