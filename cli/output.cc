#include "cli/output.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "cli/units.h"
#include "cli/yaml.h"
#include "google/protobuf/struct.pb.h"
#include "google/protobuf/util/json_util.h"

namespace ferry::cli {

using google::protobuf::Message;

absl::StatusOr<OutputFormat> ParseOutputFormat(absl::string_view s) {
  if (s.empty() || s == "table") return OutputFormat::kTable;
  if (s == "wide") return OutputFormat::kWide;
  if (s == "json") return OutputFormat::kJson;
  if (s == "yaml") return OutputFormat::kYaml;
  if (s == "name") return OutputFormat::kName;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown output format \"", s,
      "\": use table, wide, json, yaml or name"));
}

std::string RenderTable(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> widths;
  return RenderTable(rows, &widths);
}

std::string RenderTable(const std::vector<std::vector<std::string>>& rows,
                        std::vector<size_t>* widths) {
  std::vector<size_t>& width = *widths;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) {
      width[i] = std::max(width[i], row[i].size());
    }
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(width[i] - row[i].size() + 3, ' ');
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

absl::Time ToTime(const google::protobuf::Timestamp& ts) {
  return absl::FromUnixSeconds(ts.seconds()) + absl::Nanoseconds(ts.nanos());
}

absl::Duration ToDuration(const google::protobuf::Duration& d) {
  return absl::Seconds(d.seconds()) + absl::Nanoseconds(d.nanos());
}

std::string AgeSince(const google::protobuf::Timestamp& ts, absl::Time now) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "<unknown>";
  return FormatAge(now - ToTime(ts));
}

std::string EnumSuffix(absl::string_view full, absl::string_view prefix) {
  absl::ConsumePrefix(&full, prefix);
  return full.empty() ? "UNKNOWN" : std::string(full);
}

std::string PhaseName(v1::MigrationPhase p) {
  return EnumSuffix(v1::MigrationPhase_Name(p), "MIGRATION_PHASE_");
}

std::string VmPhaseName(v1::VmPhase p) {
  return EnumSuffix(v1::VmPhase_Name(p), "VM_PHASE_");
}

std::string HostStatus(const v1::Host& h) {
  std::string s;
  switch (h.readiness()) {
    case v1::HOST_READINESS_READY: s = "Ready"; break;
    case v1::HOST_READINESS_NOT_READY: s = "NotReady"; break;
    default: s = "Unknown"; break;
  }
  if (h.cordoned()) s += ",SchedulingDisabled";
  return s;
}

bool IsTerminal(v1::MigrationPhase p) {
  return p == v1::MIGRATION_PHASE_SUCCEEDED ||
         p == v1::MIGRATION_PHASE_FAILED || p == v1::MIGRATION_PHASE_CANCELLED;
}

uint64_t EffectiveRemaining(const v1::MigrationProgress& p) {
  if (p.round() > 0 || p.remaining_bytes() > 0) {
    return std::min(p.remaining_bytes(), p.total_bytes());
  }
  // Page size: proto/vm.proto's default; the progress sample carries none.
  constexpr uint64_t kPage = 4096;
  uint64_t done = (p.pages_sent() + p.zero_pages()) * kPage;
  return done >= p.total_bytes() ? 0 : p.total_bytes() - done;
}

int ProgressPercent(const v1::Migration& m) {
  if (m.phase() == v1::MIGRATION_PHASE_SUCCEEDED) return 100;
  const v1::MigrationProgress& p = m.progress();
  if (p.total_bytes() == 0) return -1;
  uint64_t remaining = std::min(EffectiveRemaining(p), p.total_bytes());
  return static_cast<int>((p.total_bytes() - remaining) * 100 /
                          p.total_bytes());
}

std::optional<absl::Duration> KnownExpectedDowntime(
    const v1::MigrationProgress& p) {
  if (!p.has_expected_downtime()) return std::nullopt;
  absl::Duration d = ToDuration(p.expected_downtime());
  if (d >= absl::Hours(24)) return std::nullopt;
  return d;
}

namespace {

std::string OrDash(absl::string_view s) {
  return s.empty() ? "-" : std::string(s);
}

std::string Backends(const v1::HostInfo& info) {
  std::vector<std::string> names;
  for (int b : info.backends()) {
    names.push_back(absl::AsciiStrToLower(EnumSuffix(
        v1::VmBackend_Name(static_cast<v1::VmBackend>(b)), "VM_BACKEND_")));
  }
  return OrDash(absl::StrJoin(names, ","));
}

std::string WorkloadSummary(const v1::Workload& w) {
  if (w.kind() == v1::WORKLOAD_KIND_UNSPECIFIED) return "-";
  std::string s = absl::AsciiStrToLower(
      EnumSuffix(v1::WorkloadKind_Name(w.kind()), "WORKLOAD_KIND_"));
  if (w.dirty_rate_bytes_per_s() > 0) {
    absl::StrAppend(&s, "@", FormatRate(w.dirty_rate_bytes_per_s()));
  }
  return s;
}

std::string MigrationReason(const v1::Migration& m) {
  if (m.has_result() && m.result().failure() != v1::MIGRATION_FAILURE_UNSPECIFIED) {
    return EnumSuffix(v1::MigrationFailure_Name(m.result().failure()),
                      "MIGRATION_FAILURE_");
  }
  if (m.phase() == v1::MIGRATION_PHASE_PENDING &&
      m.pending_reason() != v1::PENDING_REASON_UNSPECIFIED) {
    return EnumSuffix(v1::PendingReason_Name(m.pending_reason()),
                      "PENDING_REASON_");
  }
  if (m.cancel_requested()) return "CANCEL_REQUESTED";
  return "-";
}

}  // namespace

std::vector<std::string> HostHeader(bool wide) {
  std::vector<std::string> h = {"NAME", "STATUS", "VMS", "CPU", "MEMORY",
                                "AGE"};
  if (wide) {
    for (const char* c : {"SCHEDULED-MEM", "AGENT", "MIGRATION-ADDR",
                          "VERSION", "BACKENDS", "HEARTBEAT"}) {
      h.push_back(c);
    }
  }
  return h;
}

std::vector<std::string> HostRow(const v1::Host& h, bool wide,
                                 absl::Time now) {
  const v1::HostInfo& i = h.info();
  std::vector<std::string> r = {
      h.name(),
      HostStatus(h),
      absl::StrCat(i.allocated().vms()),
      absl::StrCat(i.allocated().vcpus(), "/", i.capacity().vcpus()),
      absl::StrCat(FormatBytes(i.allocated().memory_bytes()), "/",
                   FormatBytes(i.capacity().memory_bytes())),
      AgeSince(h.register_time(), now)};
  if (wide) {
    r.push_back(FormatBytes(h.scheduled().memory_bytes()));
    r.push_back(OrDash(i.agent_address()));
    r.push_back(OrDash(i.migration_address()));
    r.push_back(OrDash(i.agent_version()));
    r.push_back(Backends(i));
    r.push_back(h.has_last_heartbeat_time()
                    ? AgeSince(h.last_heartbeat_time(), now) + " ago"
                    : "never");
  }
  return r;
}

std::vector<std::string> VmHeader(bool wide) {
  std::vector<std::string> h = {"NAME",   "PHASE",      "HOST", "VCPUS",
                                "MEMORY", "DIRTY-RATE", "AGE"};
  if (wide) {
    for (const char* c :
         {"BACKEND", "WORKLOAD", "MIGRATION", "SELFCHECK-ERRORS", "UID"}) {
      h.push_back(c);
    }
  }
  return h;
}

std::vector<std::string> VmRow(const v1::Vm& vm, bool wide, absl::Time now) {
  const v1::VmStatus& st = vm.status();
  std::vector<std::string> r = {
      vm.spec().name(),
      VmPhaseName(st.phase()),
      OrDash(st.host()),
      absl::StrCat(vm.spec().vcpu_count()),
      FormatBytes(vm.spec().memory_bytes()),
      FormatRate(st.dirty_rate_bytes_per_s()),
      AgeSince(vm.create_time(), now)};
  if (wide) {
    v1::VmBackend b = st.backend() != v1::VM_BACKEND_UNSPECIFIED
                          ? st.backend()
                          : vm.spec().backend();
    r.push_back(b == v1::VM_BACKEND_UNSPECIFIED
                    ? "-"
                    : absl::AsciiStrToLower(
                          EnumSuffix(v1::VmBackend_Name(b), "VM_BACKEND_")));
    r.push_back(WorkloadSummary(vm.spec().workload()));
    r.push_back(OrDash(st.migration_id()));
    r.push_back(absl::StrCat(st.selfcheck_errors()));
    r.push_back(OrDash(vm.uid()));
  }
  return r;
}

std::vector<std::string> MigrationHeader(bool wide) {
  std::vector<std::string> h = {"ID",    "VM",       "SOURCE", "TARGET",
                                "PHASE", "PROGRESS", "AGE"};
  if (wide) {
    for (const char* c :
         {"ROUND", "REMAINING", "BANDWIDTH", "DOWNTIME", "REASON"}) {
      h.push_back(c);
    }
  }
  return h;
}

std::vector<std::string> MigrationRow(const v1::Migration& m, bool wide,
                                      absl::Time now) {
  int pct = ProgressPercent(m);
  std::vector<std::string> r = {
      m.id(),
      m.vm_name(),
      OrDash(m.source_host()),
      m.target_host().empty() ? "<pending>" : m.target_host(),
      PhaseName(m.phase()),
      pct < 0 ? "-" : absl::StrCat(pct, "%"),
      AgeSince(m.create_time(), now)};
  if (wide) {
    const v1::MigrationProgress& p = m.progress();
    bool has_p = m.has_progress();
    r.push_back(has_p ? absl::StrCat(p.round()) : "-");
    r.push_back(has_p ? FormatBytes(p.remaining_bytes()) : "-");
    r.push_back(has_p ? FormatRate(p.bandwidth_bytes_per_s()) : "-");
    if (m.has_result() && m.result().has_downtime()) {
      r.push_back(FormatSpan(ToDuration(m.result().downtime())));
    } else if (has_p && KnownExpectedDowntime(p)) {
      r.push_back("~" + FormatSpan(*KnownExpectedDowntime(p)));
    } else {
      r.push_back("-");
    }
    r.push_back(MigrationReason(m));
  }
  return r;
}

namespace {

google::protobuf::Value ToValue(const Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  // The generated code always prints; a failure would be a protobuf bug.
  (void)google::protobuf::util::MessageToJsonString(m, &json, opts);
  google::protobuf::Value v;
  (void)google::protobuf::util::JsonStringToMessage(json, &v);
  return v;
}

google::protobuf::Value ListValue(const std::vector<const Message*>& ms) {
  google::protobuf::Value v;
  auto* items = (*v.mutable_struct_value()->mutable_fields())["items"]
                    .mutable_list_value();
  for (const Message* m : ms) *items->add_values() = ToValue(*m);
  return v;
}

std::string CompactJson(const Message& m) {
  std::string json;
  google::protobuf::util::JsonPrintOptions opts;
  (void)google::protobuf::util::MessageToJsonString(m, &json, opts);
  return json;
}

// Re-indents compact JSON with two spaces. protobuf's own pretty printer
// indents by one; doing it here also lets a list keep each message's
// field order (a google.protobuf.Struct would scramble it).
std::string Reindent(absl::string_view json) {
  std::string out;
  int depth = 0;
  bool in_string = false;
  auto newline = [&] {
    out += '\n';
    out.append(2 * depth, ' ');
  };
  for (size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      out += c;
      if (c == '\\' && i + 1 < json.size()) {
        out += json[++i];
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    switch (c) {
      case '"': in_string = true; out += c; break;
      case '{':
      case '[':
        out += c;
        if (i + 1 < json.size() && (json[i + 1] == '}' || json[i + 1] == ']')) {
          out += json[++i];  // "{}" / "[]" stay on one line.
        } else {
          ++depth;
          newline();
        }
        break;
      case '}':
      case ']': --depth; newline(); out += c; break;
      case ',': out += c; newline(); break;
      case ':': out += ": "; break;
      default: out += c;
    }
  }
  out += '\n';
  return out;
}

}  // namespace

std::string ToJson(const Message& m) { return Reindent(CompactJson(m)); }

std::string ToJsonList(const std::vector<const Message*>& ms) {
  std::string json = "{\"items\":[";
  for (size_t i = 0; i < ms.size(); ++i) {
    if (i > 0) json += ",";
    json += CompactJson(*ms[i]);
  }
  json += "]}";
  return Reindent(json);
}

std::string ToYaml(const Message& m) { return ValueToYaml(ToValue(m)); }

std::string ToYamlList(const std::vector<const Message*>& ms) {
  return ValueToYaml(ListValue(ms));
}

namespace {

template <typename T, typename RowFn>
std::string Format(const std::vector<T>& items, OutputFormat f, bool single,
                   const std::vector<std::string>& header, RowFn row,
                   absl::string_view kind) {
  std::vector<const Message*> ptrs;
  for (const T& item : items) ptrs.push_back(&item);
  switch (f) {
    case OutputFormat::kJson:
      return single && items.size() == 1 ? ToJson(items[0]) : ToJsonList(ptrs);
    case OutputFormat::kYaml:
      return single && items.size() == 1 ? ToYaml(items[0]) : ToYamlList(ptrs);
    case OutputFormat::kName: {
      std::string out;
      for (const T& item : items) absl::StrAppend(&out, kind, "/", row(item)[0], "\n");
      return out;
    }
    default: {
      if (items.empty()) return "";
      std::vector<std::vector<std::string>> rows = {header};
      for (const T& item : items) rows.push_back(row(item));
      return RenderTable(rows);
    }
  }
}

}  // namespace

std::string FormatHosts(const std::vector<v1::Host>& hosts, OutputFormat f,
                        bool single, absl::Time now) {
  bool wide = f == OutputFormat::kWide;
  return Format(hosts, f, single, HostHeader(wide),
                [&](const v1::Host& h) { return HostRow(h, wide, now); },
                "host");
}

std::string FormatVms(const std::vector<v1::Vm>& vms, OutputFormat f,
                      bool single, absl::Time now) {
  bool wide = f == OutputFormat::kWide;
  return Format(vms, f, single, VmHeader(wide),
                [&](const v1::Vm& v) { return VmRow(v, wide, now); },
                "vm");
}

std::string FormatMigrations(const std::vector<v1::Migration>& ms,
                             OutputFormat f, bool single, absl::Time now) {
  bool wide = f == OutputFormat::kWide;
  return Format(ms, f, single, MigrationHeader(wide),
                [&](const v1::Migration& m) {
                  return MigrationRow(m, wide, now);
                },
                "migration");
}

}  // namespace ferry::cli
