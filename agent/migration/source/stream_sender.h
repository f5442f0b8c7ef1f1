// StreamSender: one Transfer stream of an outgoing migration. A writer
// thread encodes queued work into PageBatches with the stream's own
// codec::PageBatchEncoder (zero pages, XOR deltas, AUTO compression) and
// writes them (at most max_inflight unacked); a reader thread consumes
// cumulative TransferAcks. Sequence numbers are contiguous from 1 (work
// whose pages are all zero in round 0 produces no batch and gets none).
//
// XOR consistency (codec.h): the encoder's cache must equal what the
// destination applied. Whenever batches may be lost (Cancel / TakeUnsent,
// i.e. a stream reset or a rollback), the cache is reset.
#ifndef FERRY_AGENT_MIGRATION_SOURCE_STREAM_SENDER_H_
#define FERRY_AGENT_MIGRATION_SOURCE_STREAM_SENDER_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "agent/migration/codec/codec.h"
#include "grpcpp/grpcpp.h"
#include "mmu/guest_memory.h"
#include "proto/migration.grpc.pb.h"

namespace ferry::migration {

struct SendCounters;

class StreamSender {
 public:
  struct Work {
    uint32_t round = 0;
    bool skip_zero = false;
    uint64_t pages = 0;
    std::vector<mmu::PageRun> runs;  // each inside one 2 MiB stripe
  };
  struct Config {
    uint32_t index = 0;
    std::string migration_id;
    std::string session_id;
    uint32_t max_inflight = 16;
    uint32_t max_queued = 4;
    double max_bytes_per_s = 0;  // this stream's share; 0 = unlimited
    std::function<void(uint32_t, v1::PageBatch*)> hook;
    codec::EncoderOptions encoder;  // route is set from index / stream count
    uint32_t stream_count = 1;
  };

  StreamSender(Config config, v1::MigrationService::Stub* stub,
               const mmu::GuestMemory& memory, SendCounters* counters);
  ~StreamSender();  // Cancel()s if still running

  // Opens the call, sends StreamOpen and starts the threads.
  absl::Status Open();
  // Queues work, waiting up to `timeout` for room. False if the stream
  // failed or the wait timed out; then `work` stays with the caller.
  bool Enqueue(Work& work, absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` for: nothing queued or unacked (true), or failure.
  bool AwaitIdle(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Waits up to `timeout` for: everything queued encoded and written (acks
  // may still be outstanding), true; or failure.
  bool AwaitWritten(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Bytes written but not acknowledged yet (approximate).
  uint64_t unacked_bytes() const ABSL_LOCKS_EXCLUDED(mu_);
  // The measured wire rate of this stream (EWMA, bytes/s; 0 = unknown).
  double link_bytes_per_s() const ABSL_LOCKS_EXCLUDED(mu_);
  bool failed() const ABSL_LOCKS_EXCLUDED(mu_);
  // When the last ack (or the open) arrived.
  absl::Time last_progress() const ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t last_sequence() const ABSL_LOCKS_EXCLUDED(mu_);
  // Half-closes after the queue drained and returns the call's status.
  absl::Status Close(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);
  // Tears the call down; returns the call's status (the destination's
  // reason when it ended the stream).
  absl::Status Cancel() ABSL_LOCKS_EXCLUDED(mu_);
  // After Cancel: pages of queued and unacked batches, to give back to the
  // dirty log (migration.proto "Loss").
  std::vector<mmu::PageRun> TakeUnsent() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void WriterLoop();
  void ReaderLoop();
  void Fail(absl::Status status) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Join();  // joins both threads, Finish()es the call once

  const Config config_;
  v1::MigrationService::Stub* const stub_;
  // Writer thread only (and TakeUnsent after it is joined).
  codec::PageBatchEncoder encoder_;
  const mmu::GuestMemory& memory_;
  SendCounters* const counters_;

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::TransferRequest, v1::TransferAck>>
      stream_;
  std::thread writer_;
  std::thread reader_;
  bool joined_ = false;
  absl::Status final_status_;

  mutable absl::Mutex mu_;
  std::deque<Work> queue_ ABSL_GUARDED_BY(mu_);
  struct Inflight {
    std::vector<mmu::PageRun> runs;  // a Work's runs ride on its last batch
    uint64_t wire_bytes = 0;
  };
  std::map<uint64_t, Inflight> inflight_ ABSL_GUARDED_BY(mu_);
  uint64_t unacked_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  double link_ ABSL_GUARDED_BY(mu_) = 0;
  bool encoding_ ABSL_GUARDED_BY(mu_) = false;  // a popped Work not yet in flight
  std::vector<mmu::PageRun> encoding_runs_ ABSL_GUARDED_BY(mu_);
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t acked_ ABSL_GUARDED_BY(mu_) = 0;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool failed_ ABSL_GUARDED_BY(mu_) = false;
  bool reader_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  absl::Time last_progress_ ABSL_GUARDED_BY(mu_);
};

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_SOURCE_STREAM_SENDER_H_
