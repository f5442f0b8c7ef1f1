#include "proto/phases.h"
#include "agent/migration/source/outgoing.h"

#include "agent/migration/destination/malloc_tuning.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/migration/destination/wire.h"
#include "agent/migration/source/stream_sender.h"
#include "common/status_macros.h"

namespace ferry::migration {
namespace {

constexpr absl::Duration kPoll = absl::Milliseconds(20);
// A round smaller than this says more about latency than bandwidth.
constexpr uint64_t kMinBandwidthSampleBytes = 4 << 20;
constexpr double kBandwidthAlpha = 0.5;
// Pages per Work handed to a stream (= WIRE_CONSTANT_MAX_BATCH_PAYLOAD_BYTES).
constexpr uint64_t kBatchPages = codec::kMaxDataPagesPerBatch;

// FERRY_MIGRATION_TRACE=1 prints per-round and switchover timings.
bool Trace() {
  static const bool on = std::getenv("FERRY_MIGRATION_TRACE") != nullptr;
  return on;
}

void ToProto(absl::Duration d, google::protobuf::Duration* out) {
  if (d == absl::InfiniteDuration()) d = absl::Hours(24 * 365);
  const int64_t ns = absl::ToInt64Nanoseconds(d);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<OutgoingMigration>> OutgoingMigration::Start(
    vmm::Vm* vm, OutgoingOptions options) {
  TuneMallocForDataPlane();  // normally already applied before main()
  if (vm == nullptr) return absl::InvalidArgumentError("Start: no VM");
  if (options.migration_id.empty() || options.endpoint.empty()) {
    return absl::InvalidArgumentError(
        "Start: migration_id and endpoint are required");
  }
  if (!options.release) {
    return absl::InvalidArgumentError(
        "Start: a release callback is required (it destroys the source copy "
        "after the handoff)");
  }
  if (!options.clock) options.clock = mmu::SystemMonotonicClock();
  if (!options.wall_clock) options.wall_clock = [] { return absl::Now(); };
  if (!options.credentials) options.credentials = grpc::InsecureChannelCredentials();
  if (!options.throttle_factory) {
    options.throttle_factory = [](vmm::Vm* v, mmu::DirtyLog*) {
      return std::make_unique<VmThrottle>(v);
    };
  }
  std::unique_ptr<OutgoingMigration> m(
      new OutgoingMigration(vm, std::move(options)));
  m->thread_ = std::thread([p = m.get()] { p->Run(); });
  return m;
}

OutgoingMigration::OutgoingMigration(vmm::Vm* vm, OutgoingOptions options)
    : vm_(vm),
      options_(std::move(options)),
      policy_(ResolvePolicy(options_.policy)),
      start_ns_(options_.clock()),
      start_wall_(options_.wall_clock()) {
  best_remaining_ns_ = start_ns_;
  last_publish_ns_ = start_ns_;
}

OutgoingMigration::~OutgoingMigration() {
  {
    absl::MutexLock lock(&mu_);
    shutting_down_ = true;
    if (!switchover_sent_ && !result_) {
      cancel_reason_ = "the agent is shutting down";
      cancel_ = true;
    }
  }
  if (thread_.joinable()) thread_.join();
}

// ---------------------------------------------------------------------------
// Public API

v1::MigrationProgress OutgoingMigration::Progress() const {
  absl::MutexLock lock(&mu_);
  return SampleLocked();
}

v1::MigrationPhase OutgoingMigration::phase() const {
  absl::MutexLock lock(&mu_);
  return phase_;
}

bool OutgoingMigration::handoff_unknown() const {
  absl::MutexLock lock(&mu_);
  return handoff_unknown_;
}

int OutgoingMigration::Watch(Watcher watcher) {
  v1::MigrationProgress now;
  int id;
  {
    absl::MutexLock lock(&mu_);
    id = next_watcher_++;
    watchers_[id] = watcher;
    now = SampleLocked();
  }
  watcher(now);
  return id;
}

void OutgoingMigration::Unwatch(int id) {
  absl::MutexLock lock(&mu_);
  watchers_.erase(id);
}

absl::Status OutgoingMigration::Cancel(const std::string& reason) {
  absl::MutexLock lock(&mu_);
  if (result_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "migration ", options_.migration_id, " already ended (",
        v1::MigrationPhase_Name(result_->phase()), ")"));
  }
  if (switchover_sent_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "migration ", options_.migration_id, " is past Switchover: the "
        "destination decides now (cancel it there, then ConfirmOutgoing)"));
  }
  cancel_reason_ = reason;
  cancel_ = true;
  return absl::OkStatus();
}

absl::StatusOr<v1::MigrationResult> OutgoingMigration::Confirm(
    v1::ConfirmOutcome outcome) {
  if (outcome != v1::CONFIRM_OUTCOME_HANDED_OFF &&
      outcome != v1::CONFIRM_OUTCOME_ABORTED) {
    return absl::InvalidArgumentError("Confirm: outcome must be set");
  }
  absl::MutexLock lock(&mu_);
  if (result_) return *result_;
  if (!switchover_sent_) {
    return absl::FailedPreconditionError(
        "Confirm before Switchover: the source still owns the VM; use Cancel");
  }
  if (!confirm_) {
    confirm_ = outcome;
    if (outcome == v1::CONFIRM_OUTCOME_HANDED_OFF) resumed_ns_ = options_.clock();
  }
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return result_.has_value() || shutting_down_;
  };
  mu_.Await(absl::Condition(&done));
  if (!result_) return absl::UnavailableError("the agent is shutting down");
  return *result_;
}

v1::MigrationResult OutgoingMigration::Wait() {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return result_.has_value();
  };
  mu_.Await(absl::Condition(&done));
  return *result_;
}

bool OutgoingMigration::WaitFor(absl::Duration timeout,
                                v1::MigrationResult* result) {
  absl::MutexLock lock(&mu_);
  auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return result_.has_value();
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) return false;
  if (result != nullptr) *result = *result_;
  return true;
}

// ---------------------------------------------------------------------------
// Progress

v1::MigrationProgress OutgoingMigration::SampleLocked() const {
  v1::MigrationProgress p;
  p.set_migration_id(options_.migration_id);
  p.set_phase(phase_);
  ToProto(options_.wall_clock(), p.mutable_sample_time());
  ToProto(absl::Nanoseconds(options_.clock() - start_ns_), p.mutable_elapsed());
  p.set_round(round_);
  p.set_total_bytes(vm_ != nullptr ? vm_->spec().memory_bytes() : 0);
  p.set_pages_sent(counters_.pages_sent.load());
  p.set_zero_pages(counters_.zero_pages.load());
  p.set_payload_bytes(counters_.payload_bytes.load());
  p.set_wire_bytes(counters_.wire_bytes.load());
  const uint64_t round_sent =
      counters_.round_pages_sent.load() - round_start_pages_;
  const uint64_t left =
      round_dirty_pages_ > round_sent ? round_dirty_pages_ - round_sent : 0;
  p.set_remaining_bytes(v1::IsTerminalPhase(phase_) ? 0 : left * mmu::kPageSize);
  p.set_dirty_rate_pages_per_s(static_cast<uint64_t>(dirty_pages_per_s_));
  p.set_dirty_rate_bytes_per_s(
      static_cast<uint64_t>(dirty_pages_per_s_ * mmu::kPageSize));
  p.set_bandwidth_bytes_per_s(static_cast<uint64_t>(bandwidth_));
  // Unknown (no bandwidth measured yet) is left absent rather than sent as
  // a huge number that dashboards and alert rules would take at face value.
  if (expected_downtime_ != absl::InfiniteDuration()) {
    ToProto(expected_downtime_, p.mutable_expected_downtime());
  }
  p.set_throttle_percent(throttle_percent_);
  p.set_xor_delta_pages(counters_.xor_pages.load());
  const uint64_t compressed = counters_.compressed_bytes.load();
  p.set_compression_ratio(
      compressed > 0 ? static_cast<double>(counters_.payload_bytes.load()) / compressed
                     : 1.0);
  p.set_round_pages_sent(round_sent);
  p.set_round_dirty_pages(round_dirty_pages_);
  if (result_) *p.mutable_result() = *result_;
  return p;
}

void OutgoingMigration::Publish() {
  std::vector<Watcher> watchers;
  v1::MigrationProgress sample;
  {
    absl::MutexLock lock(&mu_);
    sample = SampleLocked();
    for (auto& [id, w] : watchers_) watchers.push_back(w);
  }
  last_publish_ns_ = Now();
  for (auto& w : watchers) w(sample);
}

void OutgoingMigration::SetPhase(v1::MigrationPhase phase) {
  {
    absl::MutexLock lock(&mu_);
    phase_ = phase;
  }
  Publish();
}

void OutgoingMigration::Finish(v1::MigrationPhase phase,
                               v1::MigrationFailure failure,
                               const absl::Status& why) {
  {
    absl::MutexLock lock(&mu_);
    v1::MigrationResult r;
    r.set_phase(phase);
    r.set_failure(failure);
    r.set_error_code(static_cast<int32_t>(why.code()));
    r.set_message(std::string(why.message()));
    r.set_vm_host(phase == v1::MIGRATION_PHASE_SUCCEEDED
                      ? options_.destination_host
                      : options_.source_host);
    if (paused_ns_ != 0 && phase == v1::MIGRATION_PHASE_SUCCEEDED) {
      // Until the source learnt that the destination runs (DIRECT: the
      // Switchover answer; else Confirm), not until it released its copy.
      const int64_t end = resumed_ns_ != 0 ? resumed_ns_ : options_.clock();
      ToProto(absl::Nanoseconds(end - paused_ns_), r.mutable_downtime());
    }
    ToProto(absl::Nanoseconds(options_.clock() - start_ns_), r.mutable_total_time());
    r.set_rounds(round_ + 1);
    r.set_wire_bytes(counters_.wire_bytes.load());
    r.set_pages_sent(counters_.pages_sent.load());
    r.set_memory_verified(memory_verified_ && phase == v1::MIGRATION_PHASE_SUCCEEDED);
    r.set_max_throttle_percent(max_throttle_);
    result_ = r;
    phase_ = phase;
  }
  Publish();
}

// ---------------------------------------------------------------------------
// The migration thread

void OutgoingMigration::Run() {
  SetPhase(v1::MIGRATION_PHASE_PREPARING);
  if (absl::Status s = Connect(); !s.ok()) {
    // Nothing to undo: the VM never stopped and no pages moved.
    Finish(v1::MIGRATION_PHASE_FAILED, v1::MIGRATION_FAILURE_HANDSHAKE, s);
    return;
  }
  if (absl::Status s = StartTracking(); !s.ok()) {
    Rollback(v1::MIGRATION_FAILURE_SOURCE_ERROR, s);
    return;
  }
  if (absl::Status s = OpenStreams(); !s.ok()) {
    Rollback(v1::MIGRATION_FAILURE_TRANSPORT, s);
    return;
  }
  SetPhase(v1::MIGRATION_PHASE_TRANSFERRING);
  uint32_t stuck = 0;
  for (uint32_t round = 0;; ++round) {
    const int64_t round_start = Now();
    const uint64_t wire_before = counters_.wire_bytes.load();
    const uint64_t pages_before = counters_.pages_sent.load();
    uint64_t pending = dirty_log_->pending_pages();
    if (round > 0) {
      absl::StatusOr<mmu::DirtyLog::HarvestResult> h = dirty_log_->Harvest();
      if (!h.ok()) {
        Rollback(v1::MIGRATION_FAILURE_SOURCE_ERROR, h.status());
        return;
      }
      mmu::DirtyRate rate = meter_->Record(h->stats);
      pending = h->pending_pages;
      absl::MutexLock lock(&mu_);
      dirty_pages_per_s_ = rate.pages_per_sec;
    }
    const uint64_t remaining = pending * mmu::kPageSize;
    if (remaining < best_remaining_) {
      if (remaining < best_remaining_ / 10 * 9) stuck = 0; else ++stuck;
      best_remaining_ = remaining;
      best_remaining_ns_ = Now();
    } else {
      ++stuck;
    }
    ConvergenceDecision d;
    {
      absl::MutexLock lock(&mu_);
      round_ = round;
      round_dirty_pages_ = pending;
      round_start_pages_ = counters_.round_pages_sent.load();
      remaining_bytes_ = remaining;
      if (round > 0) {
        d = DecideRound(policy_, {round, remaining, bandwidth_, hello_rtt_,
                                  stuck, throttle_percent_});
      }
      expected_downtime_ = d.expected_downtime;
    }
    Publish();
    if (d.kind == ConvergenceDecision::Kind::kSwitchover) break;
    if (d.kind == ConvergenceDecision::Kind::kFail) {
      Rollback(d.failure, absl::FailedPreconditionError(d.message));
      return;
    }
    if (d.kind == ConvergenceDecision::Kind::kThrottle) {
      if (absl::Status s = throttle_->Set(d.throttle_percent); !s.ok()) {
        Rollback(v1::MIGRATION_FAILURE_SOURCE_ERROR, s);
        return;
      }
      stuck = 0;
      {
        absl::MutexLock lock(&mu_);
        throttle_percent_ = d.throttle_percent;
        max_throttle_ = std::max(max_throttle_, d.throttle_percent);
      }
      SetPhase(v1::MIGRATION_PHASE_THROTTLING);
    }
    if (absl::Status s = SendRound(round); !s.ok()) {
      Rollback(failure_kind_ != v1::MIGRATION_FAILURE_UNSPECIFIED
                   ? failure_kind_
                   : v1::MIGRATION_FAILURE_TRANSPORT,
               s);
      return;
    }
    // Bandwidth, in the unit of remaining_bytes: the data pages this round
    // moved (whatever the codec made of them: deltas, compressed; zero and
    // hole pages, nearly free, are left out) over how long it took. Wire bytes would overestimate the downtime
    // by the compression ratio.
    const uint64_t sent =
        (counters_.pages_sent.load() - pages_before) * mmu::kPageSize;
    const uint64_t wire = counters_.wire_bytes.load() - wire_before;
    const double secs = (Now() - round_start) / 1e9;
    absl::MutexLock lock(&mu_);
    if (Trace()) {
      std::fprintf(stderr, "migration %s round %u: %llu pages pending, %.1f MiB "
                   "wire in %.1f ms\n", options_.migration_id.c_str(), round,
                   static_cast<unsigned long long>(pending), wire / 1048576.0,
                   secs * 1e3);
    }
    if (secs > 0 && (sent >= kMinBandwidthSampleBytes || bandwidth_ == 0)) {
      const double sample = sent / secs;
      bandwidth_ = bandwidth_ == 0 ? sample
                                   : kBandwidthAlpha * sample +
                                         (1 - kBandwidthAlpha) * bandwidth_;
    }
  }
  Switchover();
}

absl::Status OutgoingMigration::Connect() {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetMaxSendMessageSize(8 << 20);
  // The data plane: large frames and buffers, flow-control windows that
  // grow with the measured BDP (the receiver's side: ConfigureServer).
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 1);
  args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
  args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
  args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
  // Each migration gets its own connection (not shared with other
  // channels to the same endpoint).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  channel_ = grpc::CreateCustomChannel(options_.endpoint, options_.credentials,
                                       args);
  stub_ = v1::MigrationService::NewStub(channel_);
  v1::HelloRequest req;
  req.set_magic(static_cast<uint32_t>(v1::WIRE_CONSTANT_MAGIC));
  req.set_protocol_version(kProtocolVersionSource);
  req.set_min_protocol_version(kMinProtocolVersionSource);
  req.set_migration_id(options_.migration_id);
  req.set_token(options_.token);
  *req.mutable_memory() = LayoutOf(vm_->memory());
  req.set_stream_count(policy_.streams);
  // What the codec may use under this policy (AUTO: either compressor).
  req.add_compressions(v1::COMPRESSION_NONE);
  if (policy_.compression == v1::COMPRESSION_LZ4 ||
      policy_.compression == v1::COMPRESSION_AUTO) {
    req.add_compressions(v1::COMPRESSION_LZ4);
  }
  if (policy_.compression == v1::COMPRESSION_ZSTD ||
      policy_.compression == v1::COMPRESSION_AUTO) {
    req.add_compressions(v1::COMPRESSION_ZSTD);
  }
  req.set_xor_delta(policy_.xor_delta);
  req.set_source_host(options_.source_host);
  v1::HelloResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.rpc_timeout));
  ctx.set_wait_for_ready(true);  // a just-started destination may still bind
  const int64_t t0 = Now();
  RETURN_IF_ERROR(FromGrpc(stub_->Hello(&ctx, req, &resp), "Hello"));
  hello_rtt_ = absl::Nanoseconds(Now() - t0);
  session_ = resp.session_id();
  return absl::OkStatus();
}

absl::Status OutgoingMigration::StartTracking() {
  ASSIGN_OR_RETURN(std::unique_ptr<mmu::DirtyTracker> tracker,
                   vm_->CreateDirtyTracker(mmu::DirtyTrackingMode::kUnspecified));
  ASSIGN_OR_RETURN(dirty_log_,
                   mmu::DirtyLog::Create(std::move(tracker), vm_->memory().slots()));
  meter_ = std::make_unique<mmu::DirtyRateMeter>(options_.clock, absl::Seconds(2));
  // Round 0: every page pending, marked after the tracker starts.
  RETURN_IF_ERROR(dirty_log_->Start(/*all_pending=*/true));
  meter_->Restart();
  throttle_ = options_.throttle_factory(vm_, dirty_log_.get());
  return absl::OkStatus();
}

absl::Status OutgoingMigration::OpenStreams() {
  const double share =
      policy_.max_bandwidth_bytes_per_s > 0
          ? static_cast<double>(policy_.max_bandwidth_bytes_per_s) / policy_.streams
          : 0;
  for (uint32_t i = 0; i < policy_.streams; ++i) {
    StreamSender::Config c;
    c.index = i;
    c.migration_id = options_.migration_id;
    c.session_id = session_;
    c.max_inflight = std::max<uint32_t>(1, options_.max_inflight_batches);
    c.max_bytes_per_s = share;
    c.hook = options_.batch_hook;
    c.stream_count = policy_.streams;
    c.encoder.compression.mode = policy_.compression;
    if (share > 0) c.encoder.compression.default_link_bytes_per_s = share;
    c.encoder.xor_delta = policy_.xor_delta;
    c.encoder.xor_cache_bytes = policy_.xor_delta_cache_bytes / policy_.streams;
    streams_.push_back(std::make_unique<StreamSender>(
        std::move(c), stub_.get(), vm_->memory(), &counters_));
    RETURN_IF_ERROR(streams_.back()->Open());
  }
  return absl::OkStatus();
}

absl::Status OutgoingMigration::CheckDeadlines() {
  if (cancelled()) {
    failure_kind_ = v1::MIGRATION_FAILURE_CANCELLED;
    absl::MutexLock lock(&mu_);
    return absl::CancelledError("cancelled: " + cancel_reason_);
  }
  const int64_t now = Now();
  if (policy_.completion_timeout_per_gib > absl::ZeroDuration()) {
    const double gib = static_cast<double>(vm_->memory().total_bytes()) /
                       static_cast<double>(uint64_t{1} << 30);
    const absl::Duration limit = policy_.completion_timeout_per_gib * gib;
    if (absl::Nanoseconds(now - start_ns_) > limit) {
      failure_kind_ = v1::MIGRATION_FAILURE_COMPLETION_TIMEOUT;
      return absl::DeadlineExceededError(absl::StrCat(
          "migration not complete within ", absl::FormatDuration(limit),
          " (completion_timeout_per_gib x ", gib, " GiB)"));
    }
  }
  if (absl::Nanoseconds(now - best_remaining_ns_) > policy_.progress_timeout) {
    failure_kind_ = v1::MIGRATION_FAILURE_PROGRESS_TIMEOUT;
    return absl::DeadlineExceededError(absl::StrCat(
        "remaining bytes made no new minimum for ",
        absl::FormatDuration(policy_.progress_timeout), " (best ",
        best_remaining_, " bytes)"));
  }
  // A destination that refuses one stream's batch aborts the migration and
  // so ends the other streams too: report the stream that says why.
  absl::Status stream_error;
  for (const auto& s : streams_) {
    if (!s->failed()) continue;
    failure_kind_ = v1::MIGRATION_FAILURE_TRANSPORT;
    absl::Status st = s->Cancel();
    if (st.ok()) st = absl::UnavailableError("Transfer stream failed");
    if (stream_error.ok() || (stream_error.code() == absl::StatusCode::kCancelled &&
                              st.code() != absl::StatusCode::kCancelled)) {
      stream_error = st;
    }
  }
  if (!stream_error.ok()) return stream_error;
  for (const auto& s : streams_) {
    if (absl::Now() - s->last_progress() > policy_.progress_timeout &&
        !s->AwaitIdle(absl::ZeroDuration())) {
      failure_kind_ = v1::MIGRATION_FAILURE_TRANSPORT;
      return absl::DeadlineExceededError(absl::StrCat(
          "no TransferAck for ", absl::FormatDuration(policy_.progress_timeout)));
    }
  }
  return absl::OkStatus();
}

absl::Status OutgoingMigration::SendRound(uint32_t round) {
  const int64_t t_start = Now();
  const uint32_t n = static_cast<uint32_t>(streams_.size());
  std::vector<StreamSender::Work> pending(n);
  auto flush = [&](uint32_t s) -> absl::Status {
    if (pending[s].pages == 0) return absl::OkStatus();
    while (!streams_[s]->Enqueue(pending[s], kPoll)) {
      absl::Status st = CheckDeadlines();
      if (st.ok() && streams_[s]->failed()) {
        failure_kind_ = v1::MIGRATION_FAILURE_TRANSPORT;
        st = streams_[s]->Cancel();
      }
      if (!st.ok()) {
        dirty_log_->GiveBack(pending[s].runs).IgnoreError();
        pending[s] = {};
        return st.ok() ? absl::UnavailableError("stream failed") : st;
      }
    }
    pending[s] = {};
    return absl::OkStatus();
  };
  int64_t take_ns = 0, flush_ns = 0;
  while (true) {
    RETURN_IF_ERROR(CheckDeadlines());
    const int64_t t0 = Now();
    ASSIGN_OR_RETURN(std::vector<mmu::PageRun> runs,
                     dirty_log_->TakeBatch(kBatchPages));
    take_ns += Now() - t0;
    if (runs.empty()) break;
    for (mmu::PageRun run : runs) {
      while (run.npages > 0) {  // split at stripes: one stream per stripe
        const uint64_t stripe_end = (run.gpa / kStripeBytes + 1) * kStripeBytes;
        const uint64_t n_pages =
            std::min(run.npages, (stripe_end - run.gpa) >> mmu::kPageShift);
        mmu::PageRun piece{run.slot, run.first_page, n_pages, run.gpa};
        const uint32_t s = StreamForGpa(run.gpa, n);
        if (pending[s].pages + n_pages > kBatchPages) {
          absl::Status st = flush(s);
          if (!st.ok()) {
            mmu::PageRun rest{run.slot, run.first_page, run.npages, run.gpa};
            dirty_log_->GiveBack({&rest, 1}).IgnoreError();
            return st;
          }
        }
        pending[s].round = round;
        pending[s].skip_zero = round == 0;
        pending[s].pages += n_pages;
        pending[s].runs.push_back(piece);
        run.gpa += n_pages << mmu::kPageShift;
        run.first_page += n_pages;
        run.npages -= n_pages;
      }
    }
    const int64_t t1 = Now();
    for (uint32_t s = 0; s < n; ++s) {
      if (pending[s].pages >= kBatchPages) RETURN_IF_ERROR(flush(s));
    }
    flush_ns += Now() - t1;
    if (absl::Nanoseconds(Now() - last_publish_ns_) >= options_.progress_interval) {
      Publish();
    }
  }
  for (uint32_t s = 0; s < n; ++s) RETURN_IF_ERROR(flush(s));
  const int64_t t2 = Now();
  // No ack barrier between rounds: once a round's batches are written the
  // next harvest may start (a page always travels on the same stream, so
  // a later copy cannot overtake an earlier one). The final round too:
  // Switchover names the last sequences and the destination waits for them.
  absl::Status written = WaitWritten();
  if (Trace()) {
    std::fprintf(stderr, "  send round %u: %.2f ms (take %.2f, enqueue %.2f, "
                 "write tail %.2f)\n", round, (Now() - t_start) / 1e6,
                 take_ns / 1e6, flush_ns / 1e6, (Now() - t2) / 1e6);
  }
  return written;
}

absl::Status OutgoingMigration::WaitWritten() {
  for (const auto& s : streams_) {
    while (!s->AwaitWritten(kPoll)) {
      RETURN_IF_ERROR(CheckDeadlines());
      if (absl::Nanoseconds(Now() - last_publish_ns_) >= options_.progress_interval) {
        Publish();
      }
    }
  }
  return absl::OkStatus();
}

absl::Status OutgoingMigration::WaitDrained() {
  for (const auto& s : streams_) {
    while (!s->AwaitIdle(kPoll)) {
      RETURN_IF_ERROR(CheckDeadlines());
      if (absl::Nanoseconds(Now() - last_publish_ns_) >= options_.progress_interval) {
        Publish();
      }
    }
  }
  return absl::OkStatus();
}

void OutgoingMigration::Switchover() {
  SetPhase(v1::MIGRATION_PHASE_SWITCHOVER);
  paused_wall_ = options_.wall_clock();
  paused_ns_ = Now();
  paused_ = true;
  if (absl::Status s = vm_->Pause(); !s.ok()) {
    Rollback(v1::MIGRATION_FAILURE_SOURCE_ERROR, s);
    return;
  }
  // The throttle lives in guest memory: take it off before the last pass.
  if (absl::Status s = throttle_->Reset(); !s.ok()) {
    Rollback(v1::MIGRATION_FAILURE_SOURCE_ERROR, s);
    return;
  }
  absl::StatusOr<mmu::DirtyLog::HarvestResult> h = dirty_log_->Harvest();
  if (!h.ok()) {
    Rollback(v1::MIGRATION_FAILURE_SOURCE_ERROR, h.status());
    return;
  }
  {
    absl::MutexLock lock(&mu_);
    round_ += 1;
    round_dirty_pages_ = h->pending_pages;
    round_start_pages_ = counters_.round_pages_sent.load();
  }
  if (absl::Status s = SendRound(round_); !s.ok()) {
    Rollback(failure_kind_ != v1::MIGRATION_FAILURE_UNSPECIFIED
                 ? failure_kind_
                 : v1::MIGRATION_FAILURE_TRANSPORT,
             s);
    return;
  }
  const int64_t t_sent = Now();
  v1::SwitchoverRequest req;
  req.set_migration_id(options_.migration_id);
  req.set_session_id(session_);
  // Streams stay open (acks may be outstanding): the destination waits
  // until it applied these before it verifies.
  for (const auto& s : streams_) req.add_final_sequences(s->last_sequence());
  absl::StatusOr<v1::VmState> state = vm_->Save();
  if (!state.ok()) {
    Rollback(v1::MIGRATION_FAILURE_SOURCE_ERROR, state.status());
    return;
  }
  *req.mutable_state() = std::move(*state);
  const uint64_t seed = static_cast<uint64_t>(paused_ns_) ^ 0x5eedf00dull;
  *req.mutable_digest() = ComputeDigest(vm_->memory(), policy_.verify_memory,
                                        seed, policy_.verify_sample_pages);
  ToProto(paused_wall_, req.mutable_paused_time());
  StopTracking();  // the tracker must die before the Vm can be released
  bool cancel_now;
  {
    absl::MutexLock lock(&mu_);
    cancel_now = cancel_;
    if (!cancel_now) switchover_sent_ = true;  // from here the destination decides
  }
  if (cancel_now) {
    Rollback(v1::MIGRATION_FAILURE_CANCELLED, absl::CancelledError("cancelled"));
    return;
  }
  const int64_t t_send = Now();
  v1::SwitchoverResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + options_.switchover_timeout));
  grpc::Status rpc = stub_->Switchover(&ctx, req, &resp);
  const int64_t t_answer = Now();
  if (rpc.ok() && resp.state() == v1::HANDOFF_STATE_RESUMED) {
    absl::MutexLock lock(&mu_);
    resumed_ns_ = t_answer;
  }
  if (Trace()) {
    std::fprintf(stderr, "migration %s switchover: pause+harvest+final pass "
                 "%.2f ms, save+digest %.2f ms, Switchover RPC %.2f ms\n",
                 options_.migration_id.c_str(), (t_sent - paused_ns_) / 1e6,
                 (t_send - t_sent) / 1e6, (t_answer - t_send) / 1e6);
  }
  // Whatever the answer, the data plane is done.
  StopStreams(/*give_back=*/false);
  if (!rpc.ok()) {
    // The answer is lost: ask the destination to abort. Only an explicit
    // ABORTED lets us resume; RESUMED means it runs there.
    v1::HandoffState st = v1::HANDOFF_STATE_UNSPECIFIED;
    AbortDestination(&st);
    resp.set_state(st);
    resp.set_failure(v1::MIGRATION_FAILURE_TRANSPORT);
    resp.set_message(absl::StrCat("Switchover RPC failed: ", rpc.error_message()));
  }
  switch (resp.state()) {
    case v1::HANDOFF_STATE_RESUMED:
      {
        absl::MutexLock lock(&mu_);
        memory_verified_ = resp.digest().memslots_size() > 0;
      }
      HandOff(absl::Nanoseconds(Now() - paused_ns_));
      return;
    case v1::HANDOFF_STATE_ABORTED: {
      absl::Status resumed = vm_->Resume();
      paused_ = false;
      Finish(v1::MIGRATION_PHASE_FAILED,
             resp.failure() != v1::MIGRATION_FAILURE_UNSPECIFIED
                 ? resp.failure()
                 : v1::MIGRATION_FAILURE_DESTINATION_ERROR,
             absl::AbortedError(absl::StrCat(
                 "destination aborted at Switchover: ", resp.message(),
                 resumed.ok() ? "; VM resumed on the source"
                              : "; resuming the source failed: " +
                                    resumed.ToString())));
      return;
    }
    case v1::HANDOFF_STATE_ARMED: {
      {
        absl::MutexLock lock(&mu_);
        memory_verified_ = resp.digest().memslots_size() > 0;
      }
      SetPhase(v1::MIGRATION_PHASE_FINISHING);
      break;
    }
    default: {
      // The answer is lost and the destination could not be asked (e.g. it
      // died). Whether it armed is unknown, so the source may not resume by
      // itself; like ARMED, the decision passes to the controller, which
      // asks the destination (FinishIncoming / GetMigration) and confirms.
      // Staying in SWITCHOVER here left a driver waiting for FINISHING
      // forever.
      {
        absl::MutexLock lock(&mu_);
        handoff_unknown_ = true;
        message_ = resp.message();
      }
      SetPhase(v1::MIGRATION_PHASE_FINISHING);
      break;
    }
  }
  AwaitConfirm();
}

void OutgoingMigration::AwaitConfirm() {
  v1::ConfirmOutcome outcome;
  {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return confirm_.has_value() || shutting_down_;
    };
    mu_.Await(absl::Condition(&ready));
    if (!confirm_) return;  // shutting down: the VM stays paused
    outcome = *confirm_;
    handoff_unknown_ = false;
  }
  if (outcome == v1::CONFIRM_OUTCOME_HANDED_OFF) {
    HandOff(absl::Nanoseconds(Now() - paused_ns_));
    return;
  }
  absl::Status resumed = vm_->Resume();
  paused_ = false;
  Finish(v1::MIGRATION_PHASE_FAILED, v1::MIGRATION_FAILURE_DESTINATION_ERROR,
         absl::AbortedError(absl::StrCat(
             "the controller confirmed the destination ABORTED",
             resumed.ok() ? "; VM resumed on the source"
                          : "; resuming failed: " + resumed.ToString())));
}

void OutgoingMigration::HandOff(absl::Duration downtime) {
  SetPhase(v1::MIGRATION_PHASE_CONFIRMING);
  StopTracking();
  paused_ = false;
  options_.release(vm_);  // the source copy is gone; never touch vm_ again
  Finish(v1::MIGRATION_PHASE_SUCCEEDED, v1::MIGRATION_FAILURE_UNSPECIFIED,
         absl::OkStatus());
  (void)downtime;
}

bool OutgoingMigration::AbortDestination(v1::HandoffState* state) {
  if (stub_ == nullptr) return false;
  v1::AbortRequest req;
  req.set_migration_id(options_.migration_id);
  req.set_session_id(session_);
  req.set_token(options_.token);
  {
    absl::MutexLock lock(&mu_);
    req.set_reason(cancel_reason_.empty() ? "source rollback" : cancel_reason_);
  }
  v1::AbortResponse resp;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(3)));
  if (!stub_->Abort(&ctx, req, &resp).ok()) return false;
  *state = resp.state();
  return true;
}

void OutgoingMigration::StopStreams(bool give_back) {
  for (auto& s : streams_) {
    s->Cancel().IgnoreError();
    std::vector<mmu::PageRun> runs = s->TakeUnsent();
    if (give_back && dirty_log_ != nullptr && !runs.empty()) {
      dirty_log_->GiveBack(runs).IgnoreError();
    }
  }
  streams_.clear();
}

void OutgoingMigration::StopTracking() {
  if (throttle_ != nullptr) throttle_->Reset().IgnoreError();
  throttle_.reset();
  if (dirty_log_ != nullptr) dirty_log_->Stop().IgnoreError();
  dirty_log_.reset();
}

void OutgoingMigration::Rollback(v1::MigrationFailure failure,
                                 const absl::Status& why) {
  SetPhase(v1::MIGRATION_PHASE_ROLLING_BACK);
  StopStreams(/*give_back=*/true);
  v1::HandoffState st = v1::HANDOFF_STATE_UNSPECIFIED;
  AbortDestination(&st);  // best effort: a dead destination aborts by itself
  StopTracking();
  std::string extra;
  if (paused_) {
    absl::Status resumed = vm_->Resume();
    paused_ = false;
    if (!resumed.ok()) extra = "; resuming the source failed: " + resumed.ToString();
  }
  const bool cancelled_by_user =
      failure == v1::MIGRATION_FAILURE_CANCELLED && cancelled();
  Finish(cancelled_by_user ? v1::MIGRATION_PHASE_CANCELLED
                           : v1::MIGRATION_PHASE_FAILED,
         failure,
         extra.empty() ? why
                       : absl::Status(why.code(), absl::StrCat(why.message(), extra)));
}

}  // namespace ferry::migration
