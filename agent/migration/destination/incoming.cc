#include "agent/migration/destination/incoming.h"

#include "agent/migration/destination/malloc_tuning.h"

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <optional>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "agent/migration/codec/codec.h"
#include "agent/guest/abi.h"
#include "agent/vmm/guest_config.h"
#include "common/status_macros.h"
#include "grpcpp/grpcpp.h"

namespace ferry::migration {

const char* ReceiverStateName(ReceiverState s) {
  switch (s) {
    case ReceiverState::kPrepared: return "PREPARED";
    case ReceiverState::kConnected: return "CONNECTED";
    case ReceiverState::kReceiving: return "RECEIVING";
    case ReceiverState::kVerifying: return "VERIFYING";
    case ReceiverState::kArmed: return "ARMED";
    case ReceiverState::kResumed: return "RESUMED";
    case ReceiverState::kAborted: return "ABORTED";
  }
  return "?";
}

namespace {

// Below this gpa a backend may write guest memory when it creates a
// machine (KVM: GDT, IDT, page tables; agent/guest/abi.h): the digest
// always reads it.
constexpr uint64_t kShellWrites = FERRY_GUEST_LOAD_GPA;

std::string DefaultRandomHex() {
  thread_local absl::BitGen gen;
  return absl::StrFormat("%016x%016x", absl::Uniform<uint64_t>(gen),
                         absl::Uniform<uint64_t>(gen));
}

// Compares secrets in time independent of where they differ.
bool ConstantTimeEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= a[i] ^ b[i];
  return diff == 0;
}

grpc::Status ToGrpc(const absl::Status& s) {
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()),
                      std::string(s.message()));
}

absl::Time FromProto(const google::protobuf::Timestamp& t) {
  return absl::FromUnixSeconds(t.seconds()) + absl::Nanoseconds(t.nanos());
}

void ToProto(absl::Time t, google::protobuf::Timestamp* out) {
  const int64_t ns = absl::ToUnixNanos(t);
  out->set_seconds(ns / 1000000000);
  out->set_nanos(static_cast<int32_t>(ns % 1000000000));
}

bool Receiving(ReceiverState s) {
  return s == ReceiverState::kConnected || s == ReceiverState::kReceiving;
}

v1::HandoffState HandoffOf(ReceiverState s) {
  switch (s) {
    case ReceiverState::kArmed: return v1::HANDOFF_STATE_ARMED;
    case ReceiverState::kResumed: return v1::HANDOFF_STATE_RESUMED;
    case ReceiverState::kAborted: return v1::HANDOFF_STATE_ABORTED;
    default: return v1::HANDOFF_STATE_UNSPECIFIED;
  }
}

}  // namespace

struct IncomingMigrations::Incoming {
  // Fixed at Prepare.
  std::string id;
  v1::VmSpec spec;
  v1::MigrationPolicy policy;
  v1::MemoryLayout layout;
  std::string token;
  absl::Time expire_time;
  std::string endpoint;

  absl::Mutex mu;
  ReceiverState state ABSL_GUARDED_BY(mu) = ReceiverState::kPrepared;
  std::string session ABSL_GUARDED_BY(mu);
  bool token_spent ABSL_GUARDED_BY(mu) = false;
  uint32_t stream_count ABSL_GUARDED_BY(mu) = 0;
  std::vector<uint64_t> applied ABSL_GUARDED_BY(mu);
  std::vector<uint64_t> applied_pages ABSL_GUARDED_BY(mu);
  std::vector<bool> stream_open ABSL_GUARDED_BY(mu);
  std::vector<std::unique_ptr<codec::PageBatchDecoder>> decoders
      ABSL_GUARDED_BY(mu);
  // Batches being decoded into the shell's memory right now (outside mu).
  int applying ABSL_GUARDED_BY(mu) = 0;
  // From Prepare: the VM shell (machine, parked vCPU threads) over the
  // guest memory that batches are decoded into; Switchover only verifies
  // and loads the state (KVM-FACTS: creating a VM costs 6.5-12 ms, keep it
  // out of the downtime). ARMED: loaded, parked; RESUMED: handed to adopt.
  std::unique_ptr<vmm::Vm> vm ABSL_GUARDED_BY(mu);
  // Per gfn: a batch wrote the page. The rest of the shell's memory is the
  // zeros it was populated with (below kShellWrites the backend may have
  // written: always read), so the digest need not read it: reading cold
  // memory costs ~20 us a page on this host. Each 64-page word belongs to
  // one 2 MiB stripe, so to one stream's reactor; Switchover reads it
  // after inc.applying drops to 0 (ordered by mu).
  std::vector<uint64_t> written;
  absl::Time last_activity ABSL_GUARDED_BY(mu);
  absl::Time terminal_time ABSL_GUARDED_BY(mu);
  v1::MigrationFailure failure ABSL_GUARDED_BY(mu) =
      v1::MIGRATION_FAILURE_UNSPECIFIED;
  std::string message ABSL_GUARDED_BY(mu);
  bool memory_verified ABSL_GUARDED_BY(mu) = false;
  v1::MemoryDigest digest ABSL_GUARDED_BY(mu);  // ours, at Switchover
  absl::Time paused_time ABSL_GUARDED_BY(mu);
  absl::Time resumed_time ABSL_GUARDED_BY(mu);
  uint64_t batches ABSL_GUARDED_BY(mu) = 0;
  uint64_t pages ABSL_GUARDED_BY(mu) = 0;
  uint64_t payload_bytes ABSL_GUARDED_BY(mu) = 0;
};

namespace {

using Incoming = IncomingMigrations::Incoming;

// Moves `inc` to ABORTED unless RESUMED; returns the state it ends in.
// Waits for in-flight batch decodes (each bounded by one batch) before
// freeing the memory they write to.
ReceiverState Abort(Incoming& inc, absl::Time now, v1::MigrationFailure failure,
                    const std::string& message) {
  std::unique_ptr<vmm::Vm> vm;
  {
    absl::MutexLock lock(&inc.mu);
    if (inc.state == ReceiverState::kResumed ||
        inc.state == ReceiverState::kAborted) {
      return inc.state;
    }
    inc.state = ReceiverState::kAborted;
    inc.failure = failure;
    inc.message = message;
    inc.terminal_time = now;
    inc.mu.Await(absl::Condition(
        +[](Incoming* i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(i->mu) {
          return i->applying == 0;
        },
        &inc));
    // In kVerifying the Switchover handler holds the VM and frees it.
    vm = std::move(inc.vm);
    inc.decoders.clear();
  }
  vm.reset();  // never ran: its vCPUs are parked
  return ReceiverState::kAborted;
}

}  // namespace

// ---------------------------------------------------------------------------
// Transfer: one reactor per stream.

class IncomingMigrations::TransferReactor
    : public grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferAck> {
 public:
  explicit TransferReactor(IncomingMigrations* registry) : registry_(registry) {
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // the sender half-closed (or the call died)
      Close(grpc::Status::OK);
      return;
    }
    grpc::Status status = inc_ == nullptr ? HandleOpen() : HandleBatch();
    if (!status.ok()) {
      Close(status);
      return;
    }
    StartRead(&request_);
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      if (!finished_) {
        finished_ = true;
        Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "ack write failed"));
      }
      return;
    }
    Flush();
  }

  void OnDone() override {
    if (inc_ != nullptr) {
      absl::MutexLock lock(&inc_->mu);
      if (index_ < inc_->stream_open.size()) inc_->stream_open[index_] = false;
    }
    delete this;
  }

 private:
  grpc::Status HandleOpen() {
    if (!request_.has_open()) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "the first Transfer message must be StreamOpen");
    }
    const v1::StreamOpen& open = request_.open();
    std::shared_ptr<Incoming> inc = registry_->Find(open.migration_id());
    if (inc == nullptr) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "no incoming migration " + open.migration_id());
    }
    std::string violation;
    {
      absl::MutexLock lock(&inc->mu);
      if (inc->session.empty() ||
          !ConstantTimeEquals(inc->session, open.session_id())) {
        return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                            "StreamOpen: wrong session id; call Hello first");
      }
      if (!Receiving(inc->state)) {
        return grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            absl::StrCat("migration ", inc->id, " is ",
                         ReceiverStateName(inc->state), ": ", inc->message));
      }
      if (open.stream_index() >= inc->stream_count) {
        violation = absl::StrCat("stream_index ", open.stream_index(),
                                 " but Hello announced ", inc->stream_count,
                                 " streams");
      } else if (inc->stream_open[open.stream_index()]) {
        violation = absl::StrCat("stream ", open.stream_index(),
                                 " is already open");
      } else if (open.resume_after_sequence() !=
                 inc->applied[open.stream_index()]) {
        violation = absl::StrCat(
            "stream ", open.stream_index(), " resumes after sequence ",
            open.resume_after_sequence(), " but the receiver applied ",
            inc->applied[open.stream_index()]);
      } else {
        index_ = open.stream_index();
        inc->stream_open[index_] = true;
        inc->token_spent = true;
        inc->last_activity = registry_->options_.clock();
        count_ = inc->stream_count;
        next_ack_.set_stream_index(index_);
        next_ack_.set_applied_sequence(inc->applied[index_]);
        next_ack_.set_applied_pages(inc->applied_pages[index_]);
      }
    }
    if (!violation.empty()) {
      Abort(*inc, registry_->options_.clock(),
            v1::MIGRATION_FAILURE_TRANSPORT, violation);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, violation);
    }
    inc_ = std::move(inc);
    return grpc::Status::OK;
  }

  grpc::Status HandleBatch() {
    Incoming& inc = *inc_;
    const absl::Time now = registry_->options_.clock();
    if (!request_.has_batch()) {
      const std::string m = "Transfer: a second StreamOpen on one stream";
      Abort(inc, now, v1::MIGRATION_FAILURE_TRANSPORT, m);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, m);
    }
    const v1::PageBatch& batch = request_.batch();
    codec::PageBatchDecoder* decoder = nullptr;
    std::string violation;
    {
      absl::MutexLock lock(&inc.mu);
      if (!Receiving(inc.state)) {
        return grpc::Status(
            grpc::StatusCode::FAILED_PRECONDITION,
            absl::StrCat("migration ", inc.id, " is ",
                         ReceiverStateName(inc.state), ": ", inc.message));
      }
      if (batch.sequence() != inc.applied[index_] + 1) {
        violation = absl::StrCat("stream ", index_, ": batch sequence ",
                                 batch.sequence(), ", expected ",
                                 inc.applied[index_] + 1);
      } else {
        ++inc.applying;
        decoder = inc.decoders[index_].get();
      }
    }
    if (!violation.empty()) {
      Abort(inc, now, v1::MIGRATION_FAILURE_TRANSPORT, violation);
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, violation);
    }
    absl::StatusOr<uint64_t> pages = [&]() -> absl::StatusOr<uint64_t> {
      absl::Status applied = decoder->Apply(batch);
      if (!applied.ok()) return applied;
      uint64_t n = 0;
      for (const v1::PageRun& r : batch.runs()) {
        n += r.page_count();
        const uint64_t gfn = r.gpa() >> mmu::kPageShift;
        for (uint64_t g = gfn; g < gfn + r.page_count(); ++g) {
          if ((g >> 6) < inc.written.size()) inc.written[g >> 6] |= uint64_t{1} << (g & 63);
        }
      }
      return n;
    }();
    {
      absl::MutexLock lock(&inc.mu);
      --inc.applying;
      if (pages.ok()) {
        inc.applied[index_] = batch.sequence();
        inc.applied_pages[index_] += *pages;
        inc.batches += 1;
        inc.pages += *pages;
        inc.payload_bytes += batch.uncompressed_size_bytes();
        inc.last_activity = registry_->options_.clock();
        if (inc.state == ReceiverState::kConnected) {
          inc.state = ReceiverState::kReceiving;
        }
      }
    }
    if (!pages.ok()) {
      Abort(inc, now,
            pages.status().code() == absl::StatusCode::kDataLoss
                ? v1::MIGRATION_FAILURE_VERIFICATION
                : v1::MIGRATION_FAILURE_TRANSPORT,
            pages.status().ToString());
      return ToGrpc(pages.status());
    }
    absl::MutexLock lock(&mu_);
    next_ack_.set_applied_sequence(batch.sequence());
    next_ack_.set_applied_pages(next_ack_.applied_pages() + *pages);
    ack_dirty_ = true;
    Flush();
    return grpc::Status::OK;
  }

  // One write in flight: the newest cumulative ack goes out when the
  // previous write completes (acks coalesce under load).
  void Flush() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (writing_ || finished_) return;
    if (ack_dirty_ && (!finish_ || finish_->ok())) {
      ack_ = next_ack_;
      ack_dirty_ = false;
      writing_ = true;
      StartWrite(&ack_);
      return;
    }
    if (finish_) {
      finished_ = true;
      Finish(*finish_);
    }
  }

  void Close(grpc::Status status) {
    absl::MutexLock lock(&mu_);
    if (!finish_) finish_ = std::move(status);
    Flush();
  }

  IncomingMigrations* const registry_;
  std::shared_ptr<Incoming> inc_;  // after a valid StreamOpen
  uint32_t index_ = 0;
  uint32_t count_ = 0;
  v1::TransferRequest request_;  // the one read in flight

  absl::Mutex mu_;
  v1::TransferAck ack_ ABSL_GUARDED_BY(mu_);  // the one write in flight
  v1::TransferAck next_ack_ ABSL_GUARDED_BY(mu_);
  bool ack_dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  std::optional<grpc::Status> finish_ ABSL_GUARDED_BY(mu_);
};

// ---------------------------------------------------------------------------
// Unary RPCs run on the sync server's threads: Switchover restores a VM
// (milliseconds) and may wait for in-flight decodes, which a callback must
// not do.

class IncomingMigrations::Service
    : public v1::MigrationService::WithCallbackMethod_Transfer<
          v1::MigrationService::Service> {
 public:
  explicit Service(IncomingMigrations* registry) : registry_(registry) {}

  grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferAck>* Transfer(
      grpc::CallbackServerContext*) override {
    return new TransferReactor(registry_);
  }

  grpc::Status Hello(grpc::ServerContext*, const v1::HelloRequest* req,
                     v1::HelloResponse* resp) override;
  grpc::Status Switchover(grpc::ServerContext*, const v1::SwitchoverRequest* req,
                          v1::SwitchoverResponse* resp) override;
  grpc::Status Abort(grpc::ServerContext*, const v1::AbortRequest* req,
                     v1::AbortResponse* resp) override;

 private:
  // Verifies and restores; returns the VM or why not. Runs outside mu.
  absl::StatusOr<std::unique_ptr<vmm::Vm>> VerifyAndRestore(
      Incoming& inc, const v1::SwitchoverRequest& req,
      std::unique_ptr<vmm::Vm> vm, v1::MemoryDigest* ours, bool* verified);

  IncomingMigrations* const registry_;
};

grpc::Status IncomingMigrations::Service::Hello(grpc::ServerContext*,
                                                const v1::HelloRequest* req,
                                                v1::HelloResponse* resp) {
  if (req->magic() != static_cast<uint32_t>(v1::WIRE_CONSTANT_MAGIC)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrFormat("Hello magic 0x%08x is not FERY "
                                        "(0x%08x): wrong port?",
                                        req->magic(),
                                        static_cast<uint32_t>(v1::WIRE_CONSTANT_MAGIC)));
  }
  std::shared_ptr<Incoming> inc = registry_->Find(req->migration_id());
  if (inc == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "no incoming migration " + req->migration_id() +
                            " (never prepared, or expired)");
  }
  const absl::Time now = registry_->options_.clock();
  std::string refusal;  // refuses and aborts (the caller holds the token)
  grpc::StatusCode code = grpc::StatusCode::FAILED_PRECONDITION;
  {
    absl::MutexLock lock(&inc->mu);
    if (!ConstantTimeEquals(inc->token, req->token()) || inc->token_spent) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "Hello: token is wrong or already spent");
    }
    if (inc->state == ReceiverState::kConnected) {  // a retried Hello
      resp->set_accepted_version(kProtocolVersion);
      resp->set_session_id(inc->session);
      for (uint64_t s : inc->applied) resp->add_applied_sequences(s);
      return grpc::Status::OK;
    }
    if (inc->state != ReceiverState::kPrepared) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("migration ", inc->id, " is ",
                                       ReceiverStateName(inc->state), " ",
                                       inc->message));
    }
    const uint32_t hi = std::min(req->protocol_version(), kProtocolVersion);
    const uint32_t lo = std::max(req->min_protocol_version(), kMinProtocolVersion);
    absl::Status layout = CompareLayouts(inc->layout, req->memory());
    if (req->min_protocol_version() > req->protocol_version() || hi < lo) {
      refusal = absl::StrCat("no common protocol version: sender speaks [",
                             req->min_protocol_version(), ", ",
                             req->protocol_version(), "], receiver [",
                             kMinProtocolVersion, ", ", kProtocolVersion, "]");
    } else if (!layout.ok()) {
      refusal = absl::StrCat("memory layout differs from the prepared one: ",
                             layout.message());
    } else if (req->stream_count() == 0 || req->stream_count() > kMaxStreams) {
      code = grpc::StatusCode::INVALID_ARGUMENT;
      refusal = absl::StrCat("stream_count ", req->stream_count(),
                             " outside 1..", kMaxStreams);
    } else {
      // The codec decodes all of these; AUTO is policy, never on the wire.
      for (int c : req->compressions()) {
        if (c != v1::COMPRESSION_NONE && c != v1::COMPRESSION_LZ4 &&
            c != v1::COMPRESSION_ZSTD) {
          code = grpc::StatusCode::INVALID_ARGUMENT;
          refusal = absl::StrCat("compression ",
                                 v1::Compression_IsValid(c)
                                     ? v1::Compression_Name(
                                           static_cast<v1::Compression>(c))
                                     : absl::StrCat(c),
                                 " cannot appear on the wire");
        }
      }
    }
    if (refusal.empty()) {
      inc->state = ReceiverState::kConnected;
      inc->session = registry_->options_.random_hex();
      inc->stream_count = req->stream_count();
      inc->applied.assign(inc->stream_count, 0);
      inc->applied_pages.assign(inc->stream_count, 0);
      inc->stream_open.assign(inc->stream_count, false);
      inc->decoders.clear();
      codec::DecoderOptions dopts;
      dopts.route.count = inc->stream_count;
      dopts.allow_xor_delta = req->xor_delta();
      dopts.allow_lz4 = false;
      dopts.allow_zstd = false;
      for (int c : req->compressions()) {
        if (c == v1::COMPRESSION_LZ4) dopts.allow_lz4 = true;
        if (c == v1::COMPRESSION_ZSTD) dopts.allow_zstd = true;
      }
      for (uint32_t i = 0; i < inc->stream_count; ++i) {
        dopts.route.index = i;
        inc->decoders.push_back(std::make_unique<codec::PageBatchDecoder>(
            &inc->vm->memory(), dopts));
      }
      inc->last_activity = now;
      resp->set_accepted_version(hi);
      resp->set_session_id(inc->session);
      for (uint64_t s : inc->applied) resp->add_applied_sequences(s);
      return grpc::Status::OK;
    }
  }
  migration::Abort(*inc, now, v1::MIGRATION_FAILURE_HANDSHAKE, refusal);
  return grpc::Status(code, refusal);
}

absl::StatusOr<std::unique_ptr<vmm::Vm>>
IncomingMigrations::Service::VerifyAndRestore(
    Incoming& inc, const v1::SwitchoverRequest& req,
    std::unique_ptr<vmm::Vm> vm, v1::MemoryDigest* ours, bool* verified) {
  const v1::VmState& state = req.state();
  if (state.spec().memory_bytes() != inc.spec.memory_bytes() ||
      state.spec().vcpu_count() != inc.spec.vcpu_count()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "VmState is for ", state.spec().memory_bytes(), " bytes / ",
        state.spec().vcpu_count(), " vCPUs but the prepared spec says ",
        inc.spec.memory_bytes(), " / ", inc.spec.vcpu_count()));
  }
  RETURN_IF_ERROR(CompareLayouts(inc.layout, state.memory()));
  const v1::MemoryDigest& theirs = req.digest();
  *verified = false;
  if (theirs.coverage() == v1::MEMORY_VERIFICATION_FULL ||
      theirs.coverage() == v1::MEMORY_VERIFICATION_SAMPLED) {
    if (theirs.algorithm() != v1::DIGEST_ALGORITHM_CRC32C_OF_PAGES) {
      return absl::FailedPreconditionError(
          absl::StrCat("digest algorithm ",
                       v1::DigestAlgorithm_Name(theirs.algorithm()),
                       " is not supported"));
    }
    const absl::Time t0 = absl::Now();
    const std::vector<uint64_t>& written = inc.written;
    *ours = ComputeDigest(vm->memory(), theirs.coverage(), theirs.sample_seed(),
                          theirs.sample_pages(), [&written](uint64_t gfn) {
                            if (gfn < (kShellWrites >> mmu::kPageShift)) return false;
                            return (gfn >> 6) < written.size() &&
                                   !(written[gfn >> 6] >> (gfn & 63) & 1);
                          });
    if (std::getenv("FERRY_MIGRATION_TRACE") != nullptr) {
      std::fprintf(stderr, "incoming %s: digest %.2f ms\n",
                   inc.id.c_str(), absl::ToDoubleMilliseconds(absl::Now() - t0));
    }
    RETURN_IF_ERROR(CompareDigests(theirs, *ours));
    *verified = true;
  }
  // ARMED: loaded, vCPUs parked (the shell was created start_paused).
  RETURN_IF_ERROR(vm->LoadState(state));
  return vm;
}

grpc::Status IncomingMigrations::Service::Switchover(
    grpc::ServerContext*, const v1::SwitchoverRequest* req,
    v1::SwitchoverResponse* resp) {
  std::shared_ptr<Incoming> inc = registry_->Find(req->migration_id());
  if (inc == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "no incoming migration " + req->migration_id());
  }
  std::unique_ptr<vmm::Vm> shell;
  std::string violation;
  {
    absl::MutexLock lock(&inc->mu);
    if (inc->session.empty() ||
        !ConstantTimeEquals(inc->session, req->session_id())) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "Switchover: wrong session id");
    }
    // The source sends Switchover as soon as its last batches are written,
    // without waiting for their acks (one round trip less of downtime):
    // wait here until every stream has applied its final sequence. A
    // concurrent (retried) Switchover finishes first; then answer as it did.
    struct Wait {
      Incoming* inc;
      const v1::SwitchoverRequest* req;
    } wait{inc.get(), req};
    const bool arrived = inc->mu.AwaitWithTimeout(
        absl::Condition(
            +[](Wait* w) ABSL_EXCLUSIVE_LOCKS_REQUIRED(w->inc->mu) {
              Incoming& i = *w->inc;
              if (i.state == ReceiverState::kVerifying) return false;
              if (!Receiving(i.state)) return true;
              if (w->req->final_sequences_size() !=
                  static_cast<int>(i.stream_count)) {
                return true;  // refused below
              }
              for (uint32_t k = 0; k < i.stream_count; ++k) {
                if (i.applied[k] < w->req->final_sequences(k)) return false;
              }
              return true;
            },
            &wait),
        registry_->options_.switchover_wait);
    if (!arrived && inc->state == ReceiverState::kVerifying) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "Switchover: another Switchover is still verifying");
    }
    if (!Receiving(inc->state)) {
      resp->set_state(HandoffOf(inc->state));
      resp->set_failure(inc->failure);
      resp->set_message(inc->message);
      *resp->mutable_digest() = inc->digest;
      if (inc->state == ReceiverState::kResumed) {
        ToProto(inc->resumed_time, resp->mutable_resumed_time());
      }
      if (resp->state() == v1::HANDOFF_STATE_UNSPECIFIED) {
        return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                            absl::StrCat("migration is ",
                                         ReceiverStateName(inc->state)));
      }
      return grpc::Status::OK;
    }
    inc->state = ReceiverState::kVerifying;  // no new batches from here on
    inc->mu.Await(absl::Condition(
        +[](Incoming* i) ABSL_EXCLUSIVE_LOCKS_REQUIRED(i->mu) {
          return i->applying == 0;
        },
        inc.get()));
    if (req->final_sequences_size() != static_cast<int>(inc->stream_count)) {
      violation = absl::StrCat("Switchover lists ", req->final_sequences_size(),
                               " streams, Hello announced ", inc->stream_count);
    }
    for (uint32_t i = 0; violation.empty() && i < inc->stream_count; ++i) {
      if (req->final_sequences(i) != inc->applied[i]) {
        violation = absl::StrCat("stream ", i, ": sender's last batch is ",
                                 req->final_sequences(i), " but ",
                                 inc->applied[i], " were applied");
      }
    }
    shell = std::move(inc->vm);
    inc->decoders.clear();
    inc->paused_time = FromProto(req->paused_time());
  }
  v1::MemoryDigest ours;
  bool verified = false;
  const absl::Time t0 = absl::Now();
  absl::StatusOr<std::unique_ptr<vmm::Vm>> vm =
      violation.empty()
          ? VerifyAndRestore(*inc, *req, std::move(shell), &ours, &verified)
          : absl::FailedPreconditionError(violation);
  if (std::getenv("FERRY_MIGRATION_TRACE") != nullptr) {
    std::fprintf(stderr, "incoming %s: verify+restore %.2f ms\n",
                 req->migration_id().c_str(),
                 absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  shell.reset();
  const absl::Time now = registry_->options_.clock();
  std::unique_ptr<vmm::Vm> discard;
  bool direct = false;
  {
    absl::MutexLock lock(&inc->mu);
    inc->digest = ours;
    *resp->mutable_digest() = ours;
    if (inc->state != ReceiverState::kVerifying) {
      // Cancelled while we verified: the abort stands.
      if (vm.ok()) discard = std::move(*vm);
    } else if (!vm.ok()) {
      inc->state = ReceiverState::kAborted;
      inc->failure = vm.status().code() == absl::StatusCode::kDataLoss ||
                             vm.status().code() ==
                                 absl::StatusCode::kFailedPrecondition
                         ? v1::MIGRATION_FAILURE_VERIFICATION
                         : v1::MIGRATION_FAILURE_DESTINATION_ERROR;
      inc->message = vm.status().ToString();
      inc->terminal_time = now;
    } else {
      inc->state = ReceiverState::kArmed;
      inc->vm = std::move(*vm);
      inc->memory_verified = verified;
      direct = inc->policy.handoff() == v1::HANDOFF_MODE_DIRECT;
    }
    resp->set_state(HandoffOf(inc->state));
    resp->set_failure(inc->failure);
    resp->set_message(inc->message);
  }
  discard.reset();
  if (direct) {
    absl::StatusOr<FinishResult> fin = registry_->Finish(req->migration_id());
    if (fin.ok()) {
      resp->set_state(fin->handoff);
      ToProto(fin->resumed_time, resp->mutable_resumed_time());
    }
    // else: Cancel won the race after ARMED; answer what stands.
    absl::MutexLock lock(&inc->mu);
    resp->set_state(HandoffOf(inc->state));
  }
  return grpc::Status::OK;
}

grpc::Status IncomingMigrations::Service::Abort(grpc::ServerContext*,
                                                const v1::AbortRequest* req,
                                                v1::AbortResponse* resp) {
  std::shared_ptr<Incoming> inc = registry_->Find(req->migration_id());
  if (inc == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        "no incoming migration " + req->migration_id());
  }
  {
    absl::MutexLock lock(&inc->mu);
    const bool by_session = !req->session_id().empty() && !inc->session.empty() &&
                            ConstantTimeEquals(inc->session, req->session_id());
    const bool by_token = !req->token().empty() &&
                          ConstantTimeEquals(inc->token, req->token());
    if (!by_session && !by_token) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          "Abort: neither the session id nor the token match");
    }
  }
  ReceiverState s =
      migration::Abort(*inc, registry_->options_.clock(),
                       v1::MIGRATION_FAILURE_CANCELLED,
                       "aborted by the source: " + req->reason());
  resp->set_state(HandoffOf(s));
  return grpc::Status::OK;
}

// ---------------------------------------------------------------------------
// Registry

IncomingMigrations::IncomingMigrations(IncomingOptions options)
    : options_(std::move(options)) {
  TuneMallocForDataPlane();  // normally already applied before main()
  if (!options_.random_hex) options_.random_hex = DefaultRandomHex;
  endpoint_ = options_.endpoint;
  service_ = std::make_unique<Service>(this);
  reaper_ = std::thread([this] { ReapLoop(); });
}

IncomingMigrations::~IncomingMigrations() {
  stop_.Notify();
  reaper_.join();
  std::map<std::string, std::shared_ptr<Incoming>> all;
  {
    absl::MutexLock lock(&mu_);
    all.swap(migrations_);
  }
  for (auto& [id, inc] : all) {
    migration::Abort(*inc, options_.clock(), v1::MIGRATION_FAILURE_INTERRUPTED,
                     "the destination agent is shutting down");
  }
}

void IncomingMigrations::set_endpoint(std::string endpoint) {
  absl::MutexLock lock(&mu_);
  endpoint_ = std::move(endpoint);
}

grpc::Service* IncomingMigrations::service() { return service_.get(); }

void IncomingMigrations::ConfigureServer(grpc::ServerBuilder& builder) {
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 1 << 20);
  builder.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
  builder.AddChannelArgument(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
  builder.AddChannelArgument(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
}

std::shared_ptr<IncomingMigrations::Incoming> IncomingMigrations::Find(
    const std::string& id) const {
  absl::MutexLock lock(&mu_);
  auto it = migrations_.find(id);
  return it == migrations_.end() ? nullptr : it->second;
}

absl::StatusOr<PreparedIncoming> IncomingMigrations::Prepare(
    const std::string& migration_id, const v1::VmSpec& spec,
    const v1::MigrationPolicy& policy, absl::Duration ttl) {
  if (migration_id.empty()) {
    return absl::InvalidArgumentError("Prepare: migration_id is empty");
  }
  if (options_.backend == nullptr || !options_.adopt) {
    return absl::FailedPreconditionError(
        "IncomingMigrations needs a backend and an adopt callback");
  }
  if (std::shared_ptr<Incoming> old = Find(migration_id)) {
    absl::MutexLock lock(&old->mu);
    if (old->state != ReceiverState::kPrepared) {
      return absl::AlreadyExistsError(
          absl::StrCat("migration ", migration_id, " exists and is ",
                       ReceiverStateName(old->state)));
    }
    return PreparedIncoming{old->endpoint, old->token, old->expire_time,
                            old->layout};
  }
  RETURN_IF_ERROR(options_.backend->Probe());
  ASSIGN_OR_RETURN(uint32_t max_vcpus, options_.backend->MaxVcpus());
  RETURN_IF_ERROR(vmm::ResolveGuestConfig(spec, max_vcpus, 1).status());
  ASSIGN_OR_RETURN(mmu::GuestMemoryLayout layout,
                   mmu::DefaultLayout(spec.memory_bytes()));
  layout.populate = true;  // KVM-FACTS: copying into unpopulated RAM is 17x slower
  layout.transparent_hugepages = true;
  layout.name = "ferry-incoming-" + migration_id;
  ASSIGN_OR_RETURN(std::unique_ptr<mmu::GuestMemory> memory,
                   mmu::GuestMemory::Create(layout));
  // The VM shell now, not at Switchover: machine and vCPU threads exist
  // (parked) before the source pauses.
  vmm::VmOptions vm_options = options_.vm_options;
  vm_options.start_paused = true;
  ASSIGN_OR_RETURN(std::unique_ptr<vmm::Vm> shell,
                   vmm::Vm::CreateIncoming(spec, std::move(memory),
                                           *options_.backend, vm_options));

  auto inc = std::make_shared<Incoming>();
  inc->id = migration_id;
  inc->spec = spec;
  inc->policy = policy;
  inc->layout = LayoutOf(shell->memory());
  uint64_t end_gfn = 0;
  for (const mmu::Memslot& s : shell->memory().slots()) {
    end_gfn = std::max(end_gfn, (s.gpa + s.size) >> mmu::kPageShift);
  }
  inc->written.assign((end_gfn + 63) / 64, 0);
  inc->token = options_.random_hex();
  const absl::Time now = options_.clock();
  inc->expire_time = now + (ttl > absl::ZeroDuration() ? ttl : options_.default_ttl);
  {
    absl::MutexLock lock(&inc->mu);
    inc->vm = std::move(shell);
    inc->last_activity = now;
  }
  absl::MutexLock lock(&mu_);
  inc->endpoint = endpoint_;
  auto [it, inserted] = migrations_.emplace(migration_id, inc);
  if (!inserted) {  // a concurrent Prepare won; ours is freed
    return absl::AlreadyExistsError(
        absl::StrCat("migration ", migration_id, " was prepared concurrently"));
  }
  return PreparedIncoming{inc->endpoint, inc->token, inc->expire_time,
                          inc->layout};
}

absl::StatusOr<FinishResult> IncomingMigrations::Finish(
    const std::string& migration_id) {
  std::shared_ptr<Incoming> inc = Find(migration_id);
  if (inc == nullptr) {
    return absl::NotFoundError("no incoming migration " + migration_id);
  }
  std::unique_ptr<vmm::Vm> vm;
  FinishResult result;
  {
    absl::MutexLock lock(&inc->mu);
    if (inc->state != ReceiverState::kArmed &&
        inc->state != ReceiverState::kResumed) {
      return absl::FailedPreconditionError(absl::StrCat(
          "Finish: migration ", migration_id, " is ",
          ReceiverStateName(inc->state),
          inc->message.empty() ? "" : ": " + inc->message));
    }
    if (inc->state == ReceiverState::kArmed) {  // the commit point
      inc->state = ReceiverState::kResumed;
      inc->resumed_time = options_.clock();
      inc->terminal_time = inc->resumed_time;
      vm = std::move(inc->vm);
    }
    result.handoff = v1::HANDOFF_STATE_RESUMED;
    result.resumed_time = inc->resumed_time;
    result.downtime = inc->resumed_time - inc->paused_time;
  }
  if (vm != nullptr) {
    absl::Status resumed = vm->Resume();
    options_.adopt(migration_id, std::move(vm));
    if (!resumed.ok()) return resumed;  // the VM failed; the owner has it
  }
  return result;
}

absl::StatusOr<v1::HandoffState> IncomingMigrations::Cancel(
    const std::string& migration_id, const std::string& reason) {
  std::shared_ptr<Incoming> inc = Find(migration_id);
  if (inc == nullptr) {
    return absl::NotFoundError("no incoming migration " + migration_id);
  }
  ReceiverState s = migration::Abort(*inc, options_.clock(),
                                     v1::MIGRATION_FAILURE_CANCELLED,
                                     "cancelled: " + reason);
  if (s == ReceiverState::kResumed) {
    return absl::FailedPreconditionError(absl::StrCat(
        "migration ", migration_id, " already RESUMED here; it cannot be "
        "cancelled"));
  }
  return v1::HANDOFF_STATE_ABORTED;
}

absl::StatusOr<IncomingInfo> IncomingMigrations::Get(
    const std::string& migration_id) const {
  std::shared_ptr<Incoming> inc = Find(migration_id);
  if (inc == nullptr) {
    return absl::NotFoundError("no incoming migration " + migration_id);
  }
  absl::MutexLock lock(&inc->mu);
  IncomingInfo info;
  info.migration_id = migration_id;
  info.state = inc->state;
  info.handoff = HandoffOf(inc->state);
  info.failure = inc->failure;
  info.message = inc->message;
  info.batches = inc->batches;
  info.pages_applied = inc->pages;
  info.payload_bytes = inc->payload_bytes;
  info.holds_memory = inc->vm != nullptr ||
                      inc->state == ReceiverState::kVerifying;
  return info;
}

int IncomingMigrations::live_count() const {
  std::vector<std::shared_ptr<Incoming>> all;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, inc] : migrations_) all.push_back(inc);
  }
  int n = 0;
  for (const auto& inc : all) {
    absl::MutexLock lock(&inc->mu);
    if (inc->vm != nullptr || inc->state == ReceiverState::kVerifying) {
      ++n;
    }
  }
  return n;
}

void IncomingMigrations::ReapLoop() {
  while (!stop_.WaitForNotificationWithTimeout(options_.reap_interval)) {
    std::vector<std::shared_ptr<Incoming>> all;
    {
      absl::MutexLock lock(&mu_);
      for (const auto& [id, inc] : migrations_) all.push_back(inc);
    }
    const absl::Time now = options_.clock();
    std::vector<std::string> forget;
    for (const auto& inc : all) {
      v1::MigrationFailure why = v1::MIGRATION_FAILURE_UNSPECIFIED;
      std::string message;
      {
        absl::MutexLock lock(&inc->mu);
        if (inc->state == ReceiverState::kPrepared && now >= inc->expire_time) {
          why = v1::MIGRATION_FAILURE_INTERRUPTED;
          message = "prepared migration expired: no Hello within its TTL";
        } else if (Receiving(inc->state) &&
                   now - inc->last_activity >= options_.idle_timeout) {
          why = v1::MIGRATION_FAILURE_TRANSPORT;
          message = absl::StrCat("no data from the source for ",
                                 absl::FormatDuration(now - inc->last_activity));
        } else if ((inc->state == ReceiverState::kAborted ||
                    inc->state == ReceiverState::kResumed) &&
                   now - inc->terminal_time >= options_.terminal_retention) {
          forget.push_back(inc->id);
        }
      }
      if (why != v1::MIGRATION_FAILURE_UNSPECIFIED) {
        migration::Abort(*inc, now, why, message);
      }
    }
    if (!forget.empty()) {
      absl::MutexLock lock(&mu_);
      for (const auto& id : forget) migrations_.erase(id);
    }
  }
}

}  // namespace ferry::migration
