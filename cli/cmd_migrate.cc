// migrate (with live progress) and drain.
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "cli/app_internal.h"
#include "cli/output.h"
#include "cli/progress.h"
#include "cli/units.h"
#include "common/status_macros.h"
#include "google/protobuf/util/time_util.h"

namespace ferry::cli {
namespace {

using google::protobuf::util::TimeUtil;

google::protobuf::Duration ToProto(absl::Duration d) {
  return TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

absl::StatusOr<uint32_t> ParseCount(const ParsedArgs& a, const char* flag,
                                    uint32_t lo, uint32_t hi) {
  uint32_t v;
  if (!absl::SimpleAtoi(a.Get(flag), &v) || v < lo || v > hi) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid --", flag, " \"", a.Get(flag), "\": expected ", lo, " to ", hi));
  }
  return v;
}

// Only flags given are set, so the cluster defaults fill in the rest.
absl::StatusOr<v1::MigrationPolicy> BuildPolicy(const ParsedArgs& a) {
  v1::MigrationPolicy p;
  if (a.Has("max-downtime")) {
    ASSIGN_OR_RETURN(absl::Duration d, ParseDurationArg(a.Get("max-downtime")));
    if (d <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError("--max-downtime must be positive");
    }
    *p.mutable_max_downtime() = ToProto(d);
  }
  if (a.Has("bandwidth")) {
    ASSIGN_OR_RETURN(uint64_t bw, ParseRate(a.Get("bandwidth")));
    p.set_max_bandwidth_bytes_per_s(bw);
  }
  if (a.Has("streams")) {
    ASSIGN_OR_RETURN(uint32_t n, ParseCount(a, "streams", 1, 16));
    p.set_streams(n);
  }
  if (a.Has("max-rounds")) {
    ASSIGN_OR_RETURN(uint32_t n, ParseCount(a, "max-rounds", 0, 1000000));
    p.set_max_rounds(n);
  }
  if (a.Has("auto-converge")) p.set_auto_converge(a.Get("auto-converge") == "true");
  if (a.Has("xor-delta")) p.set_xor_delta(a.Get("xor-delta") == "true");
  if (a.Has("compression")) {
    std::string c = absl::AsciiStrToLower(a.Get("compression"));
    if (c == "none") p.set_compression(v1::COMPRESSION_NONE);
    else if (c == "lz4") p.set_compression(v1::COMPRESSION_LZ4);
    else if (c == "zstd") p.set_compression(v1::COMPRESSION_ZSTD);
    else if (c == "auto") p.set_compression(v1::COMPRESSION_AUTO);
    else return absl::InvalidArgumentError(absl::StrCat(
        "invalid --compression \"", c, "\": use none, lz4, zstd or auto"));
  }
  if (a.Has("verify")) {
    std::string v = absl::AsciiStrToLower(a.Get("verify"));
    if (v == "none") p.set_verify_memory(v1::MEMORY_VERIFICATION_NONE);
    else if (v == "sampled") p.set_verify_memory(v1::MEMORY_VERIFICATION_SAMPLED);
    else if (v == "full") p.set_verify_memory(v1::MEMORY_VERIFICATION_FULL);
    else return absl::InvalidArgumentError(absl::StrCat(
        "invalid --verify \"", v, "\": use none, sampled or full"));
  }
  if (a.Has("handoff")) {
    std::string h = absl::AsciiStrToLower(a.Get("handoff"));
    if (h == "controller") p.set_handoff(v1::HANDOFF_MODE_CONTROLLER);
    else if (h == "direct") p.set_handoff(v1::HANDOFF_MODE_DIRECT);
    else return absl::InvalidArgumentError(absl::StrCat(
        "invalid --handoff \"", h, "\": use controller or direct"));
  }
  if (a.Has("progress-timeout")) {
    ASSIGN_OR_RETURN(absl::Duration d, ParseDurationArg(a.Get("progress-timeout")));
    *p.mutable_progress_timeout() = ToProto(d);
  }
  if (a.Has("timeout-per-gib")) {
    ASSIGN_OR_RETURN(absl::Duration d, ParseDurationArg(a.Get("timeout-per-gib")));
    *p.mutable_completion_timeout_per_gib() = ToProto(d);
  }
  return p;
}

int Summarize(Invocation& inv, const v1::Migration& m) {
  inv.out() << MigrationSummary(m);
  return m.phase() == v1::MIGRATION_PHASE_SUCCEEDED ? kExitOk : kExitFailed;
}

// Follows a migration to its end with live progress.
int WaitForMigration(Invocation& inv, Client& c, const std::string& id) {
  ProgressPrinter printer(&inv.out(), inv.env.out_is_tty,
                          inv.env.plain_progress_interval);
  auto ctx = c.StreamContext();
  grpc::Status s;
  {
    CancelOnInterrupt cancel(inv, ctx.get());
    v1::WatchMigrationRequest req;
    req.set_id(id);
    auto reader = c.stub().WatchMigration(ctx.get(), req);
    v1::Migration m;
    while (reader->Read(&m)) {
      printer.OnUpdate(m, inv.env.now());
      if (IsTerminal(m.phase())) {
        printer.Finish();
        ctx->TryCancel();  // Done; do not wait for the server to close.
        reader->Finish();
        return Summarize(inv, m);
      }
    }
    s = reader->Finish();
  }
  printer.Finish();
  if (inv.Interrupted()) {
    inv.err() << "stopped waiting; migration " << id
              << " continues (follow it with: ferryctl get migration " << id
              << " --watch)\n";
    return kExitInterrupted;
  }
  // The stream ended early (controller restart, proxy timeout): one last
  // look decides between a summary and an error.
  v1::GetMigrationRequest req;
  req.set_id(id);
  req.set_view(v1::MIGRATION_VIEW_BASIC);
  v1::Migration m;
  auto uctx = c.UnaryContext();
  grpc::Status gs = c.stub().GetMigration(uctx.get(), req, &m);
  if (gs.ok() && IsTerminal(m.phase())) return Summarize(inv, m);
  if (!s.ok()) return c.Fail(inv, s);
  inv.err() << "error: the server ended the watch of migration " << id
            << " before it finished (phase " << PhaseName(m.phase())
            << "); follow it with: ferryctl get migration " << id << " --watch\n";
  return kExitFailed;
}

}  // namespace

int CmdMigrate(Invocation& inv) {
  if (inv.words.size() != 2 || CanonicalResource(inv.words[0]) != "vms") {
    return UsageError(inv, "usage: ferryctl migrate vm NAME [--to HOST] [flags]");
  }
  const std::string& name = inv.words[1];
  auto policy = BuildPolicy(inv.args);
  if (!policy.ok()) return UsageError(inv, policy.status());
  std::optional<absl::Duration> deadline;
  if (inv.args.Has("timeout")) {
    if (inv.args.Has("timeout-per-gib")) {
      return UsageError(inv, "give --timeout or --timeout-per-gib, not both");
    }
    auto d = ParseDurationArg(inv.args.Get("timeout"));
    if (!d.ok()) return UsageError(inv, d.status());
    if (*d <= absl::ZeroDuration()) return UsageError(inv, "--timeout must be positive");
    deadline = *d;
  }
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  if (deadline) {
    // The policy's deadline scales with memory (KubeVirt's per-GiB
    // timeout); turn the whole-migration deadline asked for into that.
    v1::GetVmRequest req;
    req.set_name(name);
    v1::Vm vm;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().GetVm(ctx.get(), req, &vm);
    if (!s.ok()) return c.Fail(inv, s);
    double gib = static_cast<double>(vm.spec().memory_bytes()) / (1ull << 30);
    if (gib <= 0) gib = 1;
    *policy->mutable_completion_timeout_per_gib() = ToProto(*deadline / gib);
  }
  v1::CreateMigrationRequest req;
  req.set_vm_name(name);
  req.set_target_host(inv.args.Get("to"));
  *req.mutable_policy() = *policy;
  req.set_request_id(RandomRequestId());
  v1::Migration m;
  auto ctx = c.UnaryContext();
  grpc::Status s = c.stub().CreateMigration(ctx.get(), req, &m);
  if (!s.ok()) return c.Fail(inv, s);
  inv.out() << "migration/" << m.id() << " created: vm " << m.vm_name()
            << " from " << (m.source_host().empty() ? "-" : m.source_host())
            << " to "
            << (!m.target_host().empty()             ? m.target_host()
                : !m.requested_target_host().empty() ? m.requested_target_host()
                : inv.args.Has("to")                 ? inv.args.Get("to")
                                                     : "<scheduler's choice>")
            << "\n";
  if (inv.args.Get("wait", "true") != "true") {
    inv.out() << "follow it with: ferryctl get migration " << m.id()
              << " --watch\n";
    return kExitOk;
  }
  inv.out().flush();
  return WaitForMigration(inv, c, m.id());
}

int CmdDrain(Invocation& inv) {
  if (inv.words.size() != 1) {
    return UsageError(inv, "usage: ferryctl drain HOST [flags]");
  }
  if (inv.args.Has("timeout")) {
    return UsageError(inv, "drain takes --timeout-per-gib (VMs differ in size), "
                           "not --timeout");
  }
  const std::string& host = inv.words[0];
  auto policy = BuildPolicy(inv.args);
  if (!policy.ok()) return UsageError(inv, policy.status());
  v1::DrainHostRequest req;
  req.set_name(host);
  *req.mutable_policy() = *policy;
  if (inv.args.Has("max-parallel")) {
    auto n = ParseCount(inv.args, "max-parallel", 0, 1024);
    if (!n.ok()) return UsageError(inv, n.status());
    req.set_max_parallel(*n);
  }
  bool wait = inv.args.Get("wait", "true") == "true";
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  auto ctx = c.StreamContext();
  int migrated = 0, failed = 0, skipped = 0;
  grpc::Status s;
  {
    CancelOnInterrupt cancel(inv, ctx.get());
    auto reader = c.stub().DrainHost(ctx.get(), req);
    v1::DrainHostUpdate u;
    while (reader->Read(&u)) {
      inv.out() << DrainLine(u) << "\n";
      inv.out().flush();
      switch (u.outcome()) {
        case v1::DRAIN_OUTCOME_MIGRATED: ++migrated; break;
        case v1::DRAIN_OUTCOME_FAILED: ++failed; break;
        case v1::DRAIN_OUTCOME_SKIPPED: ++skipped; break;
        default: break;
      }
      if (!wait) {
        // The drain lives in the controller; dropping the stream leaves it
        // running (see DrainHost in controller.proto).
        ctx->TryCancel();
        reader->Finish();
        inv.out() << "drain of host/" << host
                  << " continues in the controller; follow it with: ferryctl "
                     "get migrations --host " << host << " --watch\n";
        return kExitOk;
      }
    }
    s = reader->Finish();
  }
  if (inv.Interrupted()) {
    inv.err() << "stopped waiting; the drain of " << host
              << " continues (run the same command again to re-attach)\n";
    return kExitInterrupted;
  }
  if (!s.ok()) return c.Fail(inv, s);
  inv.out() << "host/" << host << " drained: " << migrated << " migrated, "
            << failed << " failed, " << skipped << " skipped\n";
  return failed > 0 ? kExitFailed : kExitOk;
}

}  // namespace ferry::cli
