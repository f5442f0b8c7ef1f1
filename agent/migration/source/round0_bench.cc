// round0_bench: where round-0 throughput (COMPRESSION_NONE, XOR off) goes.
// Prints one JSON object with
//   tcp_*      raw loopback TCP blast, 1 MiB writes, reader recv()s into a
//              1 MiB buffer (+ memcpy into prefaulted memory): the ceiling;
//   grpc_*     raw gRPC streaming blast of 1 MiB TransferRequests (the
//              payload in PageBatch.payload) between two threads, same
//              channel/server settings as the migration: what gRPC alone does;
//   migrate_*  a real migration of a filled soft VM (round 0 MB/s) over
//              1, 2, 4 streams.
// Usage: bazel run -c opt //agent/migration/source:round0_bench -- [MiB] [which]
//   which: all (default) | tcp | grpc | migrate
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/migration/destination/incoming.h"
#include "agent/migration/source/outgoing.h"
#include "agent/migration/testing/in_process_host.h"
#include "agent/vmm/soft/soft_backend.h"
#include "agent/vmm/soft/softmmu_port.h"
#include "agent/vmm/vm.h"
#include "grpcpp/grpcpp.h"

namespace ferry::migration {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

double Sec(absl::Time t0) { return absl::ToDoubleSeconds(absl::Now() - t0); }

// --- raw TCP ---------------------------------------------------------------
double TcpBlast(uint64_t total, bool copy_out) {
  int ls = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(ls, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  socklen_t len = sizeof(a);
  getsockname(ls, reinterpret_cast<sockaddr*>(&a), &len);
  listen(ls, 1);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  connect(c, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  int s = accept(ls, nullptr, nullptr);
  close(ls);
  uint8_t* dst = nullptr;
  if (copy_out) {
    dst = static_cast<uint8_t*>(mmap(nullptr, total, PROT_READ | PROT_WRITE,
                                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0));
  }
  std::vector<uint8_t> src(kMiB);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(rand());
  const absl::Time t0 = absl::Now();
  std::thread reader([&] {
    std::vector<uint8_t> buf(kMiB);
    uint64_t got = 0;
    while (got < total) {
      ssize_t n = copy_out ? recv(s, dst + got, std::min<uint64_t>(kMiB, total - got), 0)
                           : recv(s, buf.data(), kMiB, 0);
      if (n <= 0) break;
      got += n;
    }
  });
  for (uint64_t sent = 0; sent < total;) {
    ssize_t n = send(c, src.data() + (sent % kMiB), kMiB - (sent % kMiB), 0);
    if (n <= 0) break;
    sent += n;
  }
  reader.join();
  const double s_ = Sec(t0);
  close(c);
  close(s);
  if (dst) munmap(dst, total);
  return total / 1e6 / s_;
}

// --- raw gRPC ----------------------------------------------------------------
class SinkReactor : public grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferAck> {
 public:
  explicit SinkReactor(std::atomic<uint64_t>* bytes) : bytes_(bytes) { StartRead(&req_); }
  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status::OK);
      return;
    }
    *bytes_ += req_.batch().payload().size();
    StartRead(&req_);
  }
  void OnDone() override { delete this; }

 private:
  std::atomic<uint64_t>* bytes_;
  v1::TransferRequest req_;
};

class SinkService : public v1::MigrationService::WithCallbackMethod_Transfer<
                        v1::MigrationService::Service> {
 public:
  grpc::ServerBidiReactor<v1::TransferRequest, v1::TransferAck>* Transfer(
      grpc::CallbackServerContext*) override {
    return new SinkReactor(&bytes);
  }
  std::atomic<uint64_t> bytes{0};
};

double GrpcBlast(uint64_t total, int streams) {
  SinkService svc;
  grpc::ServerBuilder b;
  int port = 0;
  b.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  const bool defaults = getenv("FERRY_BENCH_GRPC_DEFAULTS") != nullptr;
  if (!defaults) IncomingMigrations::ConfigureServer(b);
  b.SetMaxReceiveMessageSize(8 << 20);
  b.RegisterService(&svc);
  grpc::ChannelArguments args;
  if (const char* c = getenv("FERRY_BENCH_READ_CHUNK")) {
    b.AddChannelArgument(GRPC_ARG_TCP_READ_CHUNK_SIZE, atoi(c));
    b.AddChannelArgument(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, atoi(c));
    b.AddChannelArgument(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, atoi(c));
  }
  auto server = b.BuildAndStart();
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetMaxSendMessageSize(8 << 20);
  if (!defaults) {
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 1);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 16 << 20);
    args.SetInt(GRPC_ARG_HTTP2_MAX_FRAME_SIZE, 1 << 20);
    args.SetInt(GRPC_ARG_HTTP2_WRITE_BUFFER_SIZE, 8 << 20);
    args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
    args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
    args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
  }
  if (const char* c = getenv("FERRY_BENCH_READ_CHUNK")) {
    args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, atoi(c));
    args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, atoi(c));
    args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, atoi(c));
  }
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto ch = grpc::CreateCustomChannel(absl::StrCat("127.0.0.1:", port),
                                      grpc::InsecureChannelCredentials(), args);
  auto stub = v1::MigrationService::NewStub(ch);
  const absl::Time t0 = absl::Now();
  std::vector<std::thread> ts;
  for (int i = 0; i < streams; ++i) {
    ts.emplace_back([&] {
      grpc::ClientContext ctx;
      auto st = stub->Transfer(&ctx);
      v1::TransferRequest r;
      std::string* p = r.mutable_batch()->mutable_payload();
      p->resize(kMiB);
      for (size_t j = 0; j < kMiB; ++j) (*p)[j] = static_cast<char>(rand());
      for (uint64_t k = 0; k < total / kMiB / streams; ++k) {
        if (!st->Write(r)) break;
      }
      st->WritesDone();
      st->Finish();
    });
  }
  for (auto& t : ts) t.join();
  const double s = Sec(t0);
  const double mbps = svc.bytes.load() / 1e6 / s;
  server->Shutdown(absl::ToChronoTime(absl::Now()));
  return mbps;
}

// --- migration ---------------------------------------------------------------
// One agent (testing/in_process_host.h); a failed Create ends the bench.
class Host : public testing::InProcessHost {
 public:
  Host() : InProcessHost("bench-host") {}
  vmm::Vm* Create(const v1::VmSpec& spec) {
    absl::StatusOr<vmm::Vm*> vm = InProcessHost::Create(spec);
    if (!vm.ok()) {
      std::fprintf(stderr, "create: %s\n", vm.status().ToString().c_str());
      std::exit(1);
    }
    return *vm;
  }
};

struct Round0Result {
  bool ok = false;
  double r0_mbps = 0, r0_ms = 0, r0_mib = 0, total_ms = 0;
  double cpus = 0;  // process CPU time / wall time over the whole migration
  std::string message;
};

Round0Result MigrateOnce(Host& from, Host& to, uint32_t streams, int n) {
  Round0Result res;
  v1::MigrationPolicy p;
  p.mutable_max_downtime()->set_nanos(300 * 1000 * 1000);
  p.set_streams(streams);
  p.set_max_rounds(30);
  p.mutable_progress_timeout()->set_seconds(10);
  p.set_verify_memory(v1::MEMORY_VERIFICATION_SAMPLED);
  p.set_verify_sample_pages(1024);
  p.set_compression(v1::COMPRESSION_NONE);
  p.set_xor_delta(false);
  vmm::Vm* src = from.Get("big");
  const std::string id = absl::StrCat("bench-", n);
  auto prep = to.incoming().Prepare(id, src->spec(), p);
  if (!prep.ok()) {
    res.message = prep.status().ToString();
    return res;
  }
  struct R0 {
    absl::Mutex mu;
    double t0 = 0, t1 = 0;
    uint64_t w0 = 0, w1 = 0;
  };
  auto r0 = std::make_shared<R0>();
  OutgoingOptions oo;
  oo.migration_id = id;
  oo.endpoint = prep->endpoint;
  oo.token = prep->token;
  oo.policy = p;
  oo.release = [&from](vmm::Vm* v) { from.Release(v); };
  oo.progress_interval = absl::Milliseconds(10);
  auto cpu_s = [] {
    rusage u{};
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec +
           (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
  };
  const double cpu0 = cpu_s();
  const absl::Time wall0 = absl::Now();
  auto m = OutgoingMigration::Start(src, std::move(oo));
  if (!m.ok()) {
    res.message = m.status().ToString();
    return res;
  }
  (*m)->Watch([r0](const v1::MigrationProgress& s) {
    absl::MutexLock lock(&r0->mu);
    const double t = s.elapsed().seconds() + s.elapsed().nanos() / 1e9;
    if (s.phase() == v1::MIGRATION_PHASE_TRANSFERRING && r0->t0 == 0) {
      r0->t0 = t;
      r0->w0 = s.wire_bytes();
    }
    if (s.round() >= 1 && r0->t1 == 0) {
      r0->t1 = t;
      r0->w1 = s.wire_bytes();
    }
  });
  while ((*m)->phase() != v1::MIGRATION_PHASE_FINISHING &&
         (*m)->phase() != v1::MIGRATION_PHASE_FAILED &&
         (*m)->phase() != v1::MIGRATION_PHASE_SUCCEEDED) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  if ((*m)->phase() == v1::MIGRATION_PHASE_FINISHING) {
    (void)to.incoming().Finish(id);
    (void)(*m)->Confirm(v1::CONFIRM_OUTCOME_HANDED_OFF);
  }
  v1::MigrationResult r = (*m)->Wait();
  res.cpus = (cpu_s() - cpu0) / Sec(wall0);
  res.ok = r.phase() == v1::MIGRATION_PHASE_SUCCEEDED;
  res.message = r.message();
  res.total_ms = r.total_time().seconds() * 1e3 + r.total_time().nanos() / 1e6;
  absl::MutexLock lock(&r0->mu);
  res.r0_ms = (r0->t1 - r0->t0) * 1e3;
  res.r0_mib = (r0->w1 - r0->w0) / 1048576.0;
  res.r0_mbps = (r0->w1 - r0->w0) / 1e6 / (r0->t1 - r0->t0);
  return res;
}

}  // namespace
}  // namespace ferry::migration

int main(int argc, char** argv) {
  using namespace ferry::migration;
  const uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 512;
  const std::string which = argc > 2 ? argv[2] : "all";
  const std::string streams_arg = argc > 3 ? argv[3] : "1,2,4";
  const uint64_t total = mib * kMiB;
  std::string json = absl::StrCat("{\"mib\":", mib);
  if (which == "all" || which == "tcp") {
    absl::StrAppend(&json, ",\"tcp_1stream_MBps\":", static_cast<int>(TcpBlast(total, false)));
    absl::StrAppend(&json, ",\"tcp_1stream_into_memory_MBps\":",
                    static_cast<int>(TcpBlast(total, true)));
  }
  if (which == "all" || which == "grpc") {
    for (int s : {1, 2}) {
      absl::StrAppend(&json, ",\"grpc_", s, "stream_MBps\":",
                      static_cast<int>(GrpcBlast(total, s)));
    }
  }
  if (which == "all" || which == "migrate") {
    Host a, b;
    ferry::v1::VmSpec spec;
    spec.set_name("big");
    spec.set_memory_bytes(total);
    spec.set_vcpu_count(1);
    spec.set_backend(ferry::v1::VM_BACKEND_SOFT);
    spec.mutable_workload()->set_kind(ferry::v1::WORKLOAD_KIND_UNIFORM);
    spec.mutable_workload()->set_working_set_bytes(total - 16 * kMiB);
    spec.mutable_workload()->set_dirty_rate_bytes_per_s(8000 * kMiB);
    spec.mutable_workload()->set_seed(4242);
    ferry::vmm::Vm* vm = a.Create(spec);
    const absl::Time t0 = absl::Now();
    const uint64_t want = (total / 4096) * 3;  // ~95% of the pages touched
    while (vm->Stats().guest.pages_written < want && absl::Now() < t0 + absl::Seconds(60)) {
      absl::SleepFor(absl::Milliseconds(10));
    }
    absl::StrAppend(&json, ",\"fill_s\":", Sec(t0));
    (void)vm->SetThrottle(99);
    Host* from = &a;
    Host* to = &b;
    int n = 0;
    for (absl::string_view s : absl::StrSplit(streams_arg, ',')) {
      uint32_t streams = std::atoi(std::string(s).c_str());
      Round0Result r = MigrateOnce(*from, *to, streams, n++);
      absl::StrAppend(&json, ",\"migrate_", streams, "stream\":{\"ok\":", r.ok ? "true" : "false",
                      ",\"round0_MBps\":", static_cast<int>(r.r0_mbps),
                      ",\"round0_ms\":", static_cast<int>(r.r0_ms),
                      ",\"round0_MiB\":", static_cast<int>(r.r0_mib),
                      ",\"total_ms\":", static_cast<int>(r.total_ms),
                      ",\"cpus_busy\":", static_cast<int>(r.cpus * 100) / 100.0);
      if (!r.ok) absl::StrAppend(&json, ",\"message\":\"", r.message, "\"");
      absl::StrAppend(&json, "}");
      if (!r.ok) break;
      std::swap(from, to);
      ferry::vmm::Vm* moved = from->Get("big");
      if (moved == nullptr) break;
      (void)moved->SetThrottle(99);
    }
  }
  json += "}";
  std::printf("%s\n", json.c_str());
  return 0;
}
