#include "agent/migration/source/stream_sender.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/migration/source/outgoing.h"

namespace ferry::migration {

StreamSender::StreamSender(Config config, v1::MigrationService::Stub* stub,
                           std::unique_ptr<BatchEncoder> encoder,
                           const mmu::GuestMemory& memory,
                           SendCounters* counters)
    : config_(std::move(config)),
      stub_(stub),
      encoder_(std::move(encoder)),
      memory_(memory),
      counters_(counters) {}

StreamSender::~StreamSender() { Cancel(); }

absl::Status StreamSender::Open() {
  stream_ = stub_->Transfer(&context_);
  v1::TransferRequest open;
  open.mutable_open()->set_migration_id(config_.migration_id);
  open.mutable_open()->set_session_id(config_.session_id);
  open.mutable_open()->set_stream_index(config_.index);
  open.mutable_open()->set_resume_after_sequence(0);
  if (!stream_->Write(open)) {
    joined_ = true;
    grpc::Status s = stream_->Finish();
    return absl::UnavailableError(absl::StrCat(
        "Transfer stream ", config_.index, " could not open: ", s.error_message()));
  }
  {
    absl::MutexLock lock(&mu_);
    last_progress_ = absl::Now();
  }
  writer_ = std::thread([this] { WriterLoop(); });
  reader_ = std::thread([this] { ReaderLoop(); });
  return absl::OkStatus();
}

bool StreamSender::Enqueue(Work& work, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return failed_ || queue_.size() < config_.max_queued;
  };
  if (!mu_.AwaitWithTimeout(absl::Condition(&room), timeout) || failed_) {
    return false;
  }
  queue_.push_back(std::move(work));
  return true;
}

bool StreamSender::AwaitIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return failed_ || (queue_.empty() && !encoding_ && inflight_.empty());
  };
  return mu_.AwaitWithTimeout(absl::Condition(&idle), timeout) && !failed_;
}

bool StreamSender::failed() const {
  absl::MutexLock lock(&mu_);
  return failed_;
}

absl::Time StreamSender::last_progress() const {
  absl::MutexLock lock(&mu_);
  return last_progress_;
}

uint64_t StreamSender::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return last_sequence_;
}

void StreamSender::Fail(absl::Status status) {
  absl::MutexLock lock(&mu_);
  if (!failed_) {
    failed_ = true;
    status_ = std::move(status);
  }
}

void StreamSender::WriterLoop() {
  double next_send_s = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
  while (true) {
    Work work;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return failed_ || (closing_ && queue_.empty()) ||
               (!queue_.empty() && inflight_.size() < config_.max_inflight);
      };
      mu_.Await(absl::Condition(&ready));
      if (failed_ || queue_.empty()) return;
      work = std::move(queue_.front());
      queue_.pop_front();
      encoding_ = true;
      encoding_runs_ = work.runs;
    }
    v1::TransferRequest request;
    v1::PageBatch* batch = request.mutable_batch();
    EncodeStats stats;
    absl::Status encoded =
        encoder_->Encode(work.runs, memory_, work.skip_zero, batch, &stats);
    if (!encoded.ok()) {
      Fail(encoded);
      return;
    }
    counters_->zero_pages += stats.zero_pages;
    counters_->round_pages_sent += work.pages;
    uint64_t sequence = 0;
    {
      absl::MutexLock lock(&mu_);
      encoding_ = false;
      encoding_runs_.clear();
      if (batch->runs_size() == 0) continue;  // all zero in round 0
      sequence = ++last_sequence_;
      inflight_[sequence] = std::move(work.runs);
    }
    batch->set_round(work.round);
    batch->set_sequence(sequence);
    if (config_.hook) config_.hook(config_.index, batch);
    const size_t wire = request.ByteSizeLong();
    if (config_.max_bytes_per_s > 0) {  // this stream's share of the cap
      const double now_s = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
      if (next_send_s > now_s) absl::SleepFor(absl::Seconds(next_send_s - now_s));
      next_send_s = std::max(next_send_s, now_s) + wire / config_.max_bytes_per_s;
    }
    if (!stream_->Write(request)) {
      Fail(absl::UnavailableError(absl::StrCat(
          "Transfer stream ", config_.index, ": write failed (the destination "
          "ended the stream)")));
      return;
    }
    counters_->pages_sent += stats.data_pages;
    counters_->payload_bytes += stats.payload_bytes;
    counters_->wire_bytes += wire;
    counters_->batches += 1;
  }
}

void StreamSender::ReaderLoop() {
  v1::TransferAck ack;
  while (stream_->Read(&ack)) {
    absl::MutexLock lock(&mu_);
    if (ack.applied_sequence() > last_sequence_) {
      failed_ = true;
      status_ = absl::InternalError(absl::StrCat(
          "stream ", config_.index, ": ack for sequence ",
          ack.applied_sequence(), " that was never sent"));
      break;
    }
    if (ack.applied_sequence() > acked_) {
      acked_ = ack.applied_sequence();
      inflight_.erase(inflight_.begin(), inflight_.upper_bound(acked_));
      last_progress_ = absl::Now();
    }
  }
  absl::MutexLock lock(&mu_);
  reader_done_ = true;
  const bool clean = closing_ && queue_.empty() && inflight_.empty() && !encoding_;
  if (!clean && !failed_) {
    failed_ = true;
    status_ = absl::UnavailableError(absl::StrCat(
        "Transfer stream ", config_.index, " ended by the destination with ",
        inflight_.size(), " batches unacked"));
  }
}

absl::Status StreamSender::Join() {
  if (joined_) return final_status_;
  joined_ = true;
  if (writer_.joinable()) writer_.join();
  if (reader_.joinable()) reader_.join();
  grpc::Status s = stream_->Finish();
  absl::MutexLock lock(&mu_);
  if (!s.ok()) {
    final_status_ = absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                                 absl::StrCat("Transfer stream ", config_.index,
                                              ": ", s.error_message()));
  } else {
    final_status_ = status_;
  }
  return final_status_;
}

absl::Status StreamSender::Close(absl::Duration timeout) {
  if (joined_ || stream_ == nullptr) return final_status_;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
  }
  if (writer_.joinable()) writer_.join();
  bool ok;
  {
    absl::MutexLock lock(&mu_);
    ok = !failed_;
  }
  if (ok) stream_->WritesDone();
  {
    absl::MutexLock lock(&mu_);
    auto done = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return reader_done_;
    };
    if (!mu_.AwaitWithTimeout(absl::Condition(&done), timeout)) {
      failed_ = true;
      status_ = absl::DeadlineExceededError(absl::StrCat(
          "Transfer stream ", config_.index, " did not close within ",
          absl::FormatDuration(timeout)));
      context_.TryCancel();
    }
  }
  return Join();
}

absl::Status StreamSender::Cancel() {
  if (joined_ || stream_ == nullptr) return final_status_;
  bool ended_by_peer;
  {
    absl::MutexLock lock(&mu_);
    closing_ = true;
    ended_by_peer = reader_done_;
    if (!failed_) {
      failed_ = true;
      status_ = absl::CancelledError("stream cancelled by the sender");
    }
  }
  // If the destination already ended the call, keep its status (the
  // reason) instead of overwriting it with CANCELLED; the writer's next
  // Write fails on its own.
  if (!ended_by_peer) context_.TryCancel();
  return Join();
}

std::vector<mmu::PageRun> StreamSender::TakeUnsent() {
  absl::MutexLock lock(&mu_);
  std::vector<mmu::PageRun> runs;
  for (Work& w : queue_) runs.insert(runs.end(), w.runs.begin(), w.runs.end());
  queue_.clear();
  runs.insert(runs.end(), encoding_runs_.begin(), encoding_runs_.end());
  encoding_runs_.clear();
  for (auto& [seq, r] : inflight_) runs.insert(runs.end(), r.begin(), r.end());
  inflight_.clear();
  return runs;
}

}  // namespace ferry::migration
