#include "agent/migration/source/stream_sender.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "agent/migration/destination/wire.h"
#include "agent/migration/source/outgoing.h"

namespace ferry::migration {
namespace {

codec::EncoderOptions WithRoute(codec::EncoderOptions o, uint32_t index,
                                uint32_t count) {
  o.route.index = index;
  o.route.count = count;
  return o;
}

// Round 0: the destination's memory is fresh (zero), so pages that are
// holes in the source's memfd (never written) need not be read at all —
// reading them would fault them in and allocate them. A write after this
// check is in the dirty log, which started before round 0.
void DropHoles(const mmu::GuestMemory& memory,
               const std::vector<mmu::PageRun>& in,
               std::vector<mmu::PageRun>* out, uint64_t* hole_pages) {
  out->clear();
  for (const mmu::PageRun& r : in) {
    absl::StatusOr<mmu::Memslot> slot = memory.FindSlot(r.gpa);
    if (!slot.ok()) {  // let the encoder report it
      out->push_back(r);
      continue;
    }
    uint64_t i = 0;
    while (i < r.npages) {
      const uint64_t page = r.first_page + i;
      const uint64_t hole_end =
          std::min(HoleEnd(memory, *slot, page), r.first_page + r.npages);
      if (hole_end > page) {
        *hole_pages += hole_end - page;
        i = hole_end - r.first_page;
        continue;
      }
      // Backed: exactly to the end of this data extent (SEEK_HOLE). Passing
      // whole 2 MiB stripes instead let one backed page (e.g. one the
      // dirty-rate sampler had read) drag 511 holes into the encoder, whose
      // zero check then faulted them in: ~0.5 s and 1 GiB of allocation
      // for an idle 1 GiB KVM VM's round 0.
      const uint64_t stop =
          std::min(r.first_page + r.npages, DataEnd(memory, *slot, page)) -
          r.first_page;
      mmu::PageRun piece{r.slot, page, stop - i, r.gpa + (i << mmu::kPageShift)};
      if (!out->empty() && out->back().slot == piece.slot &&
          out->back().first_page + out->back().npages == piece.first_page) {
        out->back().npages += piece.npages;
      } else {
        out->push_back(piece);
      }
      i = stop;
    }
  }
}

}  // namespace

StreamSender::StreamSender(Config config, v1::MigrationService::Stub* stub,
                           const mmu::GuestMemory& memory,
                           SendCounters* counters)
    : config_(std::move(config)),
      stub_(stub),
      encoder_(&memory, WithRoute(config_.encoder, config_.index,
                                  config_.stream_count)),
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

bool StreamSender::AwaitWritten(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto written = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return failed_ || (queue_.empty() && !encoding_);
  };
  return mu_.AwaitWithTimeout(absl::Condition(&written), timeout) && !failed_;
}

uint64_t StreamSender::unacked_bytes() const {
  absl::MutexLock lock(&mu_);
  return unacked_bytes_;
}

double StreamSender::link_bytes_per_s() const {
  absl::MutexLock lock(&mu_);
  return link_;
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
  v1::TransferRequest request;  // reused: keeps its payload buffer
  std::vector<mmu::PageRun> runs;
  // Link rate: bytes over the time spent blocked in Write, per window.
  constexpr uint64_t kRateWindowBytes = 4 << 20;
  uint64_t window_bytes = 0;
  int64_t window_ns = 0;
  const codec::CodecStats* stats = &encoder_.stats();
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
    uint64_t holes = 0;
    if (work.skip_zero) {
      DropHoles(memory_, work.runs, &runs, &holes);
    } else {
      runs = work.runs;
    }
    counters_->zero_pages += holes;
    codec::EncodePass pass = work.skip_zero ? codec::EncodePass::FirstRound(runs)
                                            : codec::EncodePass::LaterRound(runs);
    uint64_t last_sequence = 0;
    while (true) {
      const codec::CodecStats before = *stats;
      absl::StatusOr<bool> more = encoder_.NextBatch(&pass, request.mutable_batch());
      if (!more.ok()) {
        Fail(more.status());
        return;
      }
      const codec::CodecStats& after = *stats;
      counters_->zero_pages += (after.pages_zero - before.pages_zero) +
                               (after.pages_zero_skipped - before.pages_zero_skipped);
      if (!*more) break;
      v1::PageBatch* batch = request.mutable_batch();
      uint64_t sequence = 0;
      const size_t wire = request.ByteSizeLong();
      {
        absl::MutexLock lock(&mu_);
        // Room for this batch (the first one of a Work was checked above).
        auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return failed_ || inflight_.size() < config_.max_inflight;
        };
        mu_.Await(absl::Condition(&room));
        if (failed_) return;
        sequence = ++last_sequence_;
        Inflight& f = inflight_[sequence];
        f.wire_bytes = wire;
        unacked_bytes_ += wire;
        last_sequence = sequence;
      }
      batch->set_round(work.round);
      batch->set_sequence(sequence);
      if (config_.hook) config_.hook(config_.index, batch);
      if (config_.max_bytes_per_s > 0) {  // this stream's share of the cap
        const double now_s = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch());
        if (next_send_s > now_s) absl::SleepFor(absl::Seconds(next_send_s - now_s));
        next_send_s = std::max(next_send_s, now_s) + wire / config_.max_bytes_per_s;
      }
      const int64_t t0 = absl::GetCurrentTimeNanos();
      if (!stream_->Write(request)) {
        Fail(absl::UnavailableError(absl::StrCat(
            "Transfer stream ", config_.index, ": write failed (the destination "
            "ended the stream)")));
        return;
      }
      window_ns += absl::GetCurrentTimeNanos() - t0;
      window_bytes += wire;
      if (window_bytes >= kRateWindowBytes && window_ns > 0) {
        double rate = window_bytes * 1e9 / window_ns;
        if (config_.max_bytes_per_s > 0) rate = std::min(rate, config_.max_bytes_per_s);
        {
          absl::MutexLock lock(&mu_);
          link_ = link_ == 0 ? rate : 0.25 * rate + 0.75 * link_;
          rate = link_;
        }
        encoder_.SetLinkBandwidth(rate);
        window_bytes = 0;
        window_ns = 0;
      }
      counters_->pages_sent += (after.pages_raw - before.pages_raw) +
                               (after.pages_xor - before.pages_xor);
      counters_->xor_pages += after.pages_xor - before.pages_xor;
      counters_->payload_bytes += after.payload_bytes - before.payload_bytes;
      counters_->compressed_bytes += after.wire_bytes - before.wire_bytes;
      counters_->wire_bytes += wire;
      counters_->batches += 1;
    }
    counters_->round_pages_sent += work.pages;
    absl::MutexLock lock(&mu_);
    // The Work's pages ride on its last batch: given back if it is lost
    // (acks are cumulative; if it was acked already, so were the others).
    if (auto it = inflight_.find(last_sequence); it != inflight_.end()) {
      it->second.runs = std::move(work.runs);
    }
    encoding_ = false;
    encoding_runs_.clear();
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
      auto end = inflight_.upper_bound(acked_);
      for (auto it = inflight_.begin(); it != end; ++it) {
        unacked_bytes_ -= std::min(unacked_bytes_, it->second.wire_bytes);
      }
      inflight_.erase(inflight_.begin(), end);
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
  for (auto& [seq, f] : inflight_) {
    runs.insert(runs.end(), f.runs.begin(), f.runs.end());
  }
  inflight_.clear();
  unacked_bytes_ = 0;
  // Batches after the receiver's applied sequence are lost: the cache no
  // longer matches the destination (codec.h, "XOR consistency"). The
  // writer is joined (Cancel ran first), so the encoder is ours.
  if (joined_) encoder_.ResetXorCache();
  return runs;
}

}  // namespace ferry::migration
