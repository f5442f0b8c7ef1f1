#include "cli/describe.h"

#include <algorithm>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "cli/output.h"
#include "cli/units.h"

namespace ferry::cli {
namespace {

class Doc {
 public:
  void Field(absl::string_view key, absl::string_view value, int indent = 0) {
    absl::StrAppend(&text_, std::string(indent, ' '),
                    absl::StrFormat("%-*s %s\n", 20 - indent,
                                    absl::StrCat(key, ":"),
                                    value.empty() ? "-" : value));
  }
  void Section(absl::string_view title) { absl::StrAppend(&text_, title, ":\n"); }
  void Table(std::vector<std::vector<std::string>> rows) {
    std::string t = RenderTable(rows);
    for (absl::string_view line : absl::StrSplit(t, '\n', absl::SkipEmpty())) {
      absl::StrAppend(&text_, "  ", line, "\n");
    }
  }
  void Line(absl::string_view s) { absl::StrAppend(&text_, "  ", s, "\n"); }
  std::string Take() { return std::move(text_); }

 private:
  std::string text_;
};

std::string When(const google::protobuf::Timestamp& ts, absl::Time now) {
  if (ts.seconds() == 0 && ts.nanos() == 0) return "-";
  return absl::StrCat(absl::FormatTime("%Y-%m-%dT%H:%M:%SZ", ToTime(ts),
                                       absl::UTCTimeZone()),
                      " (", AgeSince(ts, now), " ago)");
}

std::string Labels(const google::protobuf::Map<std::string, std::string>& m) {
  std::map<std::string, std::string> sorted(m.begin(), m.end());
  return absl::StrJoin(sorted, ",", absl::PairFormatter("="));
}

std::string Lower(absl::string_view full, absl::string_view prefix) {
  return absl::AsciiStrToLower(EnumSuffix(full, prefix));
}

std::string Resources(const v1::HostResources& r) {
  return absl::StrCat("cpu ", r.vcpus(), ", memory ",
                      FormatBytes(r.memory_bytes()), ", vms ", r.vms());
}

std::string Policy(const v1::MigrationPolicy& p) {
  std::vector<std::string> parts;
  if (p.has_max_downtime()) {
    parts.push_back("max-downtime " + FormatSpan(ToDuration(p.max_downtime())));
  }
  if (p.has_max_bandwidth_bytes_per_s()) {
    parts.push_back("bandwidth " + (p.max_bandwidth_bytes_per_s() == 0
                                        ? std::string("unlimited")
                                        : FormatRate(p.max_bandwidth_bytes_per_s())));
  }
  if (p.has_streams()) parts.push_back(absl::StrCat("streams ", p.streams()));
  if (p.has_auto_converge()) {
    parts.push_back(absl::StrCat("auto-converge ", p.auto_converge() ? "on" : "off"));
  }
  if (p.compression() != v1::COMPRESSION_UNSPECIFIED) {
    parts.push_back("compression " +
                    Lower(v1::Compression_Name(p.compression()), "COMPRESSION_"));
  }
  if (p.has_max_rounds()) parts.push_back(absl::StrCat("max-rounds ", p.max_rounds()));
  if (p.has_completion_timeout_per_gib()) {
    parts.push_back("timeout/GiB " +
                    FormatSpan(ToDuration(p.completion_timeout_per_gib())));
  }
  if (p.has_progress_timeout()) {
    parts.push_back("progress-timeout " +
                    FormatSpan(ToDuration(p.progress_timeout())));
  }
  if (p.has_xor_delta()) {
    parts.push_back(absl::StrCat("xor-delta ", p.xor_delta() ? "on" : "off"));
  }
  if (p.handoff() != v1::HANDOFF_MODE_UNSPECIFIED) {
    parts.push_back("handoff " + Lower(v1::HandoffMode_Name(p.handoff()), "HANDOFF_MODE_"));
  }
  if (p.verify_memory() != v1::MEMORY_VERIFICATION_UNSPECIFIED) {
    parts.push_back("verify " + Lower(v1::MemoryVerification_Name(p.verify_memory()),
                                      "MEMORY_VERIFICATION_"));
  }
  return absl::StrJoin(parts, ", ");
}

}  // namespace

std::string DescribeHost(const v1::Host& h, const std::vector<v1::Vm>& vms,
                         absl::Time now) {
  const v1::HostInfo& i = h.info();
  Doc d;
  d.Field("Name", h.name());
  d.Field("Status", HostStatus(h));
  if (h.cordoned()) d.Field("Cordon reason", h.cordon_reason());
  d.Field("Labels", Labels(i.labels()));
  d.Field("Agent", i.agent_address());
  d.Field("Migration address", i.migration_address());
  d.Field("Agent version", i.agent_version());
  d.Field("Protocol", absl::StrCat(i.min_protocol_version(), "-",
                                   i.max_protocol_version()));
  std::vector<std::string> backends;
  for (int b : i.backends()) {
    backends.push_back(Lower(v1::VmBackend_Name(static_cast<v1::VmBackend>(b)),
                             "VM_BACKEND_"));
  }
  d.Field("Backends", absl::StrJoin(backends, ","));
  d.Field("Registered", When(h.register_time(), now));
  d.Field("Last heartbeat", When(h.last_heartbeat_time(), now));
  d.Section("Resources");
  d.Field("Capacity", Resources(i.capacity()), 2);
  d.Field("Allocated", Resources(i.allocated()), 2);
  d.Field("Scheduled", Resources(h.scheduled()), 2);
  d.Section(absl::StrCat("VMs (", vms.size(), ")"));
  if (!vms.empty()) {
    std::vector<std::vector<std::string>> rows = {
        {"NAME", "PHASE", "VCPUS", "MEMORY", "DIRTY-RATE", "MIGRATION"}};
    for (const v1::Vm& vm : vms) {
      rows.push_back({vm.spec().name(), VmPhaseName(vm.status().phase()),
                      absl::StrCat(vm.spec().vcpu_count()),
                      FormatBytes(vm.spec().memory_bytes()),
                      FormatRate(vm.status().dirty_rate_bytes_per_s()),
                      vm.status().migration_id().empty()
                          ? "-"
                          : vm.status().migration_id()});
    }
    d.Table(rows);
  }
  return d.Take();
}

std::string DescribeVm(const v1::Vm& vm,
                       const std::vector<v1::Migration>& migrations,
                       absl::Time now) {
  const v1::VmSpec& sp = vm.spec();
  const v1::VmStatus& st = vm.status();
  Doc d;
  d.Field("Name", sp.name());
  d.Field("UID", vm.uid());
  d.Field("Phase", VmPhaseName(st.phase()));
  if (!st.message().empty()) d.Field("Message", st.message());
  d.Field("Host", st.host());
  d.Field("Labels", Labels(sp.labels()));
  d.Field("Created", When(vm.create_time(), now));
  d.Field("Started", When(st.started_time(), now));
  d.Section("Spec");
  d.Field("vCPUs", absl::StrCat(sp.vcpu_count()), 2);
  d.Field("Memory", FormatBytes(sp.memory_bytes()), 2);
  d.Field("Backend", Lower(v1::VmBackend_Name(sp.backend()), "VM_BACKEND_"), 2);
  const v1::Workload& w = sp.workload();
  d.Field("Workload", Lower(v1::WorkloadKind_Name(w.kind()), "WORKLOAD_KIND_"), 2);
  d.Field("Working set",
          w.working_set_bytes() ? FormatBytes(w.working_set_bytes()) : "all", 4);
  d.Field("Dirty rate",
          w.dirty_rate_bytes_per_s() ? FormatRate(w.dirty_rate_bytes_per_s())
                                     : "unlimited", 4);
  if (w.kind() == v1::WORKLOAD_KIND_HOTCOLD) {
    d.Field("Hot", absl::StrFormat("%.0f%% of the set gets %.0f%% of writes",
                                   w.hot_fraction() * 100,
                                   w.hot_probability() * 100), 4);
  }
  d.Section("Status");
  d.Field("Backend", Lower(v1::VmBackend_Name(st.backend()), "VM_BACKEND_"), 2);
  d.Field("Dirty tracking", Lower(v1::DirtyTrackingMode_Name(st.tracking_mode()),
                                  "DIRTY_TRACKING_MODE_"), 2);
  d.Field("Dirty rate", FormatRate(st.dirty_rate_bytes_per_s()), 2);
  d.Field("Selfcheck errors", absl::StrCat(st.selfcheck_errors()), 2);
  d.Field("Guest", absl::StrCat(st.guest().pages_written(), " pages written, ",
                                st.guest().pages_verified(), " verified, stamp ",
                                st.guest().stamp()), 2);
  d.Field("Workload seed", absl::StrCat(st.workload_seed()), 2);
  d.Field("Migration", st.migration_id(), 2);
  d.Section(absl::StrCat("Migrations (", migrations.size(), ")"));
  if (!migrations.empty()) {
    std::vector<std::vector<std::string>> rows = {MigrationHeader(false)};
    for (const v1::Migration& m : migrations) {
      rows.push_back(MigrationRow(m, false, now));
    }
    d.Table(rows);
  }
  return d.Take();
}

std::string DescribeMigration(const v1::Migration& m, absl::Time now) {
  Doc d;
  d.Field("ID", m.id());
  d.Field("VM", absl::StrCat(m.vm_name(), m.vm_uid().empty() ? "" : " (uid ",
                             m.vm_uid(), m.vm_uid().empty() ? "" : ")"));
  d.Field("Source", m.source_host());
  d.Field("Target", m.target_host().empty() ? "<pending>" : m.target_host());
  if (!m.requested_target_host().empty()) {
    d.Field("Requested target", m.requested_target_host());
  }
  d.Field("Phase", PhaseName(m.phase()));
  if (m.phase() == v1::MIGRATION_PHASE_PENDING) {
    d.Field("Pending", absl::StrCat(EnumSuffix(v1::PendingReason_Name(m.pending_reason()),
                                               "PENDING_REASON_"),
                                    m.pending_message().empty() ? "" : ": ",
                                    m.pending_message()));
  }
  if (m.cancel_requested()) d.Field("Cancel requested", m.cancel_reason());
  if (!m.drain_host().empty()) d.Field("Drain of", m.drain_host());
  d.Field("Created", When(m.create_time(), now));
  d.Field("Started", When(m.start_time(), now));
  d.Field("Ended", When(m.end_time(), now));
  d.Field("Requested policy", Policy(m.requested_policy()));
  d.Field("Policy", Policy(m.policy()));

  d.Section("Transitions");
  if (m.transitions().empty()) d.Line("<none>");
  absl::Time prev;
  for (int i = 0; i < m.transitions_size(); ++i) {
    const v1::PhaseTransition& t = m.transitions(i);
    absl::Time at = ToTime(t.time());
    std::string after = i == 0 ? "" : absl::StrCat("+", FormatSpan(at - prev));
    std::string line = absl::StrFormat(
        "%-14s %s %s", PhaseName(t.phase()),
        absl::FormatTime("%H:%M:%E3S", at, absl::UTCTimeZone()), after);
    while (line.back() == ' ') line.pop_back();
    d.Line(line);
    prev = at;
  }

  if (m.has_progress()) {
    const v1::MigrationProgress& p = m.progress();
    d.Section("Progress");
    int pct = ProgressPercent(m);
    d.Field("Round", absl::StrCat(p.round(), pct >= 0 ? absl::StrCat(" (", pct, "% of memory sent)") : ""), 2);
    d.Field("Elapsed", FormatSpan(ToDuration(p.elapsed())), 2);
    d.Field("Sent", absl::StrCat(FormatBytes(p.payload_bytes()), " payload, ",
                                 FormatBytes(p.wire_bytes()), " on the wire, ",
                                 p.pages_sent(), " pages, ", p.zero_pages(),
                                 " zero"), 2);
    d.Field("Remaining", absl::StrCat(FormatBytes(EffectiveRemaining(p)), " of ",
                                      FormatBytes(p.total_bytes())), 2);
    d.Field("Dirty rate", FormatRate(p.dirty_rate_bytes_per_s()), 2);
    d.Field("Bandwidth", FormatRate(p.bandwidth_bytes_per_s()), 2);
    auto expected = KnownExpectedDowntime(p);
    d.Field("Expected downtime", expected ? FormatSpan(*expected) : "-", 2);
    if (p.throttle_percent() > 0) {
      d.Field("Throttle", absl::StrCat(p.throttle_percent(), "%"), 2);
    }
  }

  if (m.progress_samples_size() > 0) {
    // The last sample of each round tells the convergence story: did the
    // remaining bytes shrink round over round?
    std::map<uint32_t, const v1::MigrationProgress*> last_of_round;
    for (const auto& s : m.progress_samples()) last_of_round[s.round()] = &s;
    d.Section(absl::StrCat("Progress history (", m.progress_samples_size(),
                           " samples, ", last_of_round.size(), " rounds)"));
    std::vector<std::vector<std::string>> rows = {
        {"ROUND", "ELAPSED", "REMAINING", "DIRTY-RATE", "BANDWIDTH",
         "EXP-DOWNTIME", "THROTTLE"}};
    for (const auto& [round, s] : last_of_round) {
      rows.push_back({absl::StrCat(round), FormatSpan(ToDuration(s->elapsed())),
                      FormatBytes(EffectiveRemaining(*s)),
                      FormatRate(s->dirty_rate_bytes_per_s()),
                      FormatRate(s->bandwidth_bytes_per_s()),
                      KnownExpectedDowntime(*s)
                          ? FormatSpan(*KnownExpectedDowntime(*s))
                          : "-",
                      absl::StrCat(s->throttle_percent(), "%")});
    }
    d.Table(rows);
  }

  if (m.has_result()) {
    const v1::MigrationResult& r = m.result();
    d.Section("Result");
    d.Field("Outcome", PhaseName(r.phase()), 2);
    if (r.failure() != v1::MIGRATION_FAILURE_UNSPECIFIED) {
      d.Field("Failure", EnumSuffix(v1::MigrationFailure_Name(r.failure()),
                                    "MIGRATION_FAILURE_"), 2);
    }
    if (!r.message().empty()) d.Field("Message", r.message(), 2);
    d.Field("VM host", r.vm_host(), 2);
    d.Field("Downtime", FormatSpan(ToDuration(r.downtime())), 2);
    d.Field("Total time", FormatSpan(ToDuration(r.total_time())), 2);
    d.Field("Rounds", absl::StrCat(r.rounds()), 2);
    d.Field("Sent", absl::StrCat(FormatBytes(r.wire_bytes()), " (", r.pages_sent(),
                                 " pages)"), 2);
    d.Field("Memory verified", r.memory_verified() ? "yes" : "no", 2);
    if (r.max_throttle_percent() > 0) {
      d.Field("Max throttle", absl::StrCat(r.max_throttle_percent(), "%"), 2);
    }
  }
  return d.Take();
}

std::string DescribeEvents(const std::vector<v1::Event>& events,
                           absl::Time now) {
  if (events.empty()) return "Events:              <none>\n";
  Doc d;
  d.Section("Events");
  std::vector<std::vector<std::string>> rows = {{"AGE", "TYPE", "REASON", "MESSAGE"}};
  size_t start = events.size() > 10 ? events.size() - 10 : 0;
  for (size_t i = start; i < events.size(); ++i) {
    const v1::Event& e = events[i];
    std::string type = e.severity() == v1::EVENT_SEVERITY_ERROR     ? "Error"
                       : e.severity() == v1::EVENT_SEVERITY_WARNING ? "Warning"
                                                                    : "Normal";
    rows.push_back({AgeSince(e.time(), now), type, e.reason(), e.message()});
  }
  d.Table(rows);
  return d.Take();
}

}  // namespace ferry::cli
