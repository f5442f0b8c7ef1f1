#include "cli/progress.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli/output.h"
#include "cli/units.h"

namespace ferry::cli {

std::string ProgressBar(int percent, int width) {
  int filled = percent < 0 ? 0 : std::min(width, percent * width / 100);
  return absl::StrCat("[", std::string(filled, '#'),
                      std::string(width - filled, '-'), "]");
}

std::string ProgressPrinter::Line(const v1::Migration& m,
                                  std::optional<absl::Duration> eta) {
  const v1::MigrationProgress& p = m.progress();
  int pct = ProgressPercent(m);
  std::string s = absl::StrCat(PhaseName(m.phase()));
  if (pct >= 0) absl::StrAppend(&s, " ", pct, "%");
  if (!m.has_progress()) {
    if (m.phase() == v1::MIGRATION_PHASE_PENDING && !m.pending_message().empty()) {
      absl::StrAppend(&s, "  ", m.pending_message());
    }
    return s;
  }
  absl::StrAppend(&s, "  round ", p.round(), "  sent ",
                  FormatBytes(p.payload_bytes()), "  remaining ",
                  FormatBytes(EffectiveRemaining(p)), "  dirty ",
                  FormatRate(p.dirty_rate_bytes_per_s()), "  bw ",
                  FormatRate(p.bandwidth_bytes_per_s()));
  if (auto d = KnownExpectedDowntime(p)) {
    absl::StrAppend(&s, "  downtime ~", FormatSpan(*d));
  } else {
    absl::StrAppend(&s, "  downtime --");
  }
  if (p.throttle_percent() > 0) {
    absl::StrAppend(&s, "  throttle ", p.throttle_percent(), "%");
  }
  absl::StrAppend(&s, "  ETA ", eta ? FormatEta(*eta) : std::string("--"));
  return s;
}

void ProgressPrinter::OnUpdate(const v1::Migration& m, absl::Time now) {
  const v1::MigrationProgress& p = m.progress();
  std::optional<absl::Duration> eta;
  if (m.phase() == v1::MIGRATION_PHASE_TRANSFERRING ||
      m.phase() == v1::MIGRATION_PHASE_THROTTLING) {
    eta = eta_.Update(now, m.has_progress()
                               ? RawEta(EffectiveRemaining(p),
                                        p.bandwidth_bytes_per_s(),
                                        p.dirty_rate_bytes_per_s())
                               : std::nullopt);
  } else if (m.phase() >= v1::MIGRATION_PHASE_SWITCHOVER) {
    eta = absl::ZeroDuration();
  }
  std::string line = Line(m, eta);
  if (tty_) {
    // \r + erase-line redraws in place; no newline until Finish().
    *out_ << "\r\033[K" << ProgressBar(ProgressPercent(m), 20) << " " << line
          << std::flush;
    drawn_ = true;
    return;
  }
  // The summary that follows says how it ended; a last progress line
  // would only repeat the previous one with a new phase.
  if (IsTerminal(m.phase())) return;
  bool changed = !printed_any_ || m.phase() != last_phase_ ||
                 p.round() != last_round_;
  if (!changed && now - last_print_ < plain_interval_) return;
  *out_ << line << "\n" << std::flush;
  printed_any_ = true;
  last_phase_ = m.phase();
  last_round_ = p.round();
  last_print_ = now;
}

void ProgressPrinter::Finish() {
  if (drawn_) *out_ << "\n" << std::flush;
  drawn_ = false;
}

std::string MigrationSummary(const v1::Migration& m) {
  const v1::MigrationResult& r = m.result();
  std::string out =
      absl::StrCat("migration ", m.id(), " ", PhaseName(m.phase()));
  if (r.failure() != v1::MIGRATION_FAILURE_UNSPECIFIED) {
    absl::StrAppend(&out, " (", EnumSuffix(v1::MigrationFailure_Name(r.failure()),
                                          "MIGRATION_FAILURE_"), ")");
  }
  if (!r.message().empty()) absl::StrAppend(&out, ": ", r.message());
  absl::StrAppend(&out, "\n");
  std::string host = !r.vm_host().empty() ? r.vm_host()
                     : m.phase() == v1::MIGRATION_PHASE_SUCCEEDED
                         ? m.target_host()
                         : m.source_host();
  auto row = [&](absl::string_view k, const std::string& v) {
    absl::StrAppend(&out, absl::StrFormat("  %-11s %s\n", k, v));
  };
  row("vm", absl::StrCat(m.vm_name(), " on ", host.empty() ? "-" : host));
  row("total time",
      r.has_total_time() ? FormatSpan(ToDuration(r.total_time())) : "-");
  row("downtime",
      r.has_downtime() ? FormatSpan(ToDuration(r.downtime())) : "-");
  row("bytes sent", absl::StrCat(FormatBytes(r.wire_bytes()), " (",
                                 r.pages_sent(), " pages)"));
  row("rounds", absl::StrCat(r.rounds()));
  if (r.max_throttle_percent() > 0) {
    row("throttle", absl::StrCat("max ", r.max_throttle_percent(), "%"));
  }
  if (m.phase() == v1::MIGRATION_PHASE_SUCCEEDED) {
    row("verified", r.memory_verified() ? "yes" : "no");
  }
  return out;
}

std::string DrainLine(const v1::DrainHostUpdate& u) {
  std::string outcome =
      EnumSuffix(v1::DrainOutcome_Name(u.outcome()), "DRAIN_OUTCOME_");
  std::string s = absl::StrFormat("%-20s %-9s", u.vm_name(), outcome);
  if (!u.migration_id().empty()) absl::StrAppend(&s, " migration ", u.migration_id());
  if (!u.message().empty()) absl::StrAppend(&s, "  ", u.message());
  absl::StrAppend(&s, "  (", u.vms_remaining(), " remaining)");
  return s;
}

}  // namespace ferry::cli
