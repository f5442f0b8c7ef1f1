// Live progress of a migration for `migrate --wait`: on a terminal a bar
// redrawn in place; otherwise plain lines, one per phase or round change
// and at most every `plain_interval` in between. Then a summary.
#ifndef FERRY_CLI_PROGRESS_H_
#define FERRY_CLI_PROGRESS_H_

#include <ostream>
#include <string>

#include "absl/time/time.h"
#include "cli/eta.h"
#include "proto/controller.pb.h"

namespace ferry::cli {

class ProgressPrinter {
 public:
  ProgressPrinter(std::ostream* out, bool tty, absl::Duration plain_interval)
      : out_(out), tty_(tty), plain_interval_(plain_interval) {}

  // One watched record; `now` drives the ETA countdown and line pacing.
  void OnUpdate(const v1::Migration& m, absl::Time now);
  // Ends the redrawn line (TTY) so what follows starts on a fresh one.
  void Finish();

  // The text after the bar: phase, round, bytes, rates, downtime, ETA.
  static std::string Line(const v1::Migration& m,
                          std::optional<absl::Duration> eta);

 private:
  std::ostream* out_;
  bool tty_;
  absl::Duration plain_interval_;
  EtaSmoother eta_;
  bool drawn_ = false;  // TTY: a bar line is on screen without newline.
  bool printed_any_ = false;
  v1::MigrationPhase last_phase_ = v1::MIGRATION_PHASE_UNSPECIFIED;
  uint32_t last_round_ = 0;
  absl::Time last_print_;
};

// "[#######-------------]" of `width` cells for 0-100 (-1: empty).
std::string ProgressBar(int percent, int width);

// The end-of-migration report: result, total time, downtime, bytes, rounds.
std::string MigrationSummary(const v1::Migration& m);

// One line of a drain's progress, e.g. "vm-a   MIGRATED   (id 42) ...".
std::string DrainLine(const v1::DrainHostUpdate& u);

}  // namespace ferry::cli

#endif  // FERRY_CLI_PROGRESS_H_
