// Lints the ferry protos through their generated descriptors (the rules in
// STYLE.md and the conventions block of vm.proto), checks that the services
// have the methods the design names, and that the wire messages round-trip.

#include <cctype>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/util/json_util.h>
#include <google/protobuf/util/message_differencer.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>

#include "gtest/gtest.h"
#include "proto/agent.grpc.pb.h"
#include "proto/agent.pb.h"
#include "proto/controller.grpc.pb.h"
#include "proto/controller.pb.h"
#include "proto/migration.grpc.pb.h"
#include "proto/migration.pb.h"
#include "proto/vm.pb.h"

namespace ferry::v1 {
namespace {

using ::google::protobuf::Descriptor;
using ::google::protobuf::EnumDescriptor;
using ::google::protobuf::FieldDescriptor;
using ::google::protobuf::FileDescriptor;
using ::google::protobuf::MethodDescriptor;
using ::google::protobuf::ServiceDescriptor;
using ::google::protobuf::util::MessageDifferencer;

std::vector<const FileDescriptor*> FerryFiles() {
  return {VmSpec::descriptor()->file(), PageBatch::descriptor()->file(),
          AgentMigration::descriptor()->file(), Migration::descriptor()->file()};
}

// "VmStateVersion" -> "VM_STATE_VERSION"; "HTTPCode" -> "HTTP_CODE".
std::string UpperSnake(const std::string& camel) {
  std::string out;
  for (size_t i = 0; i < camel.size(); ++i) {
    const char c = camel[i];
    if (i > 0 && std::isupper(static_cast<unsigned char>(c))) {
      const char prev = camel[i - 1];
      const bool next_lower =
          i + 1 < camel.size() &&
          std::islower(static_cast<unsigned char>(camel[i + 1]));
      if (std::islower(static_cast<unsigned char>(prev)) ||
          std::isdigit(static_cast<unsigned char>(prev)) ||
          (std::isupper(static_cast<unsigned char>(prev)) && next_lower)) {
        out += '_';
      }
    }
    out += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

TEST(UpperSnakeTest, Converts) {
  EXPECT_EQ(UpperSnake("VmStateVersion"), "VM_STATE_VERSION");
  EXPECT_EQ(UpperSnake("MigrationPhase"), "MIGRATION_PHASE");
  EXPECT_EQ(UpperSnake("HTTPCode"), "HTTP_CODE");
  EXPECT_EQ(UpperSnake("Crc32C"), "CRC32_C");
}

void CollectEnums(const Descriptor* m, std::vector<const EnumDescriptor*>* out) {
  for (int i = 0; i < m->enum_type_count(); ++i) out->push_back(m->enum_type(i));
  for (int i = 0; i < m->nested_type_count(); ++i) {
    CollectEnums(m->nested_type(i), out);
  }
}

std::vector<const EnumDescriptor*> AllEnums() {
  std::vector<const EnumDescriptor*> enums;
  for (const FileDescriptor* f : FerryFiles()) {
    for (int i = 0; i < f->enum_type_count(); ++i) {
      enums.push_back(f->enum_type(i));
    }
    for (int i = 0; i < f->message_type_count(); ++i) {
      CollectEnums(f->message_type(i), &enums);
    }
  }
  return enums;
}

void CollectMessages(const Descriptor* m, std::vector<const Descriptor*>* out) {
  if (m->options().map_entry()) return;  // Generated for map<,>.
  out->push_back(m);
  for (int i = 0; i < m->nested_type_count(); ++i) {
    CollectMessages(m->nested_type(i), out);
  }
}

std::vector<const Descriptor*> AllMessages() {
  std::vector<const Descriptor*> messages;
  for (const FileDescriptor* f : FerryFiles()) {
    for (int i = 0; i < f->message_type_count(); ++i) {
      CollectMessages(f->message_type(i), &messages);
    }
  }
  return messages;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

TEST(ProtoLintTest, FilesArePackageFerryV1Proto3) {
  const std::vector<const FileDescriptor*> files = FerryFiles();
  ASSERT_EQ(files.size(), 4u);
  for (const FileDescriptor* f : files) {
    EXPECT_EQ(f->package(), "ferry.v1") << f->name();
    EXPECT_EQ(f->syntax(), FileDescriptor::SYNTAX_PROTO3) << f->name();
  }
  EXPECT_EQ(files[0]->name(), "proto/vm.proto");
  EXPECT_EQ(files[1]->name(), "proto/migration.proto");
  EXPECT_EQ(files[2]->name(), "proto/agent.proto");
  EXPECT_EQ(files[3]->name(), "proto/controller.proto");
}

TEST(ProtoLintTest, EnumZeroIsUnspecified) {
  const std::vector<const EnumDescriptor*> enums = AllEnums();
  ASSERT_GT(enums.size(), 10u);
  for (const EnumDescriptor* e : enums) {
    const std::string want = UpperSnake(e->name()) + "_UNSPECIFIED";
    const auto* zero = e->FindValueByNumber(0);
    ASSERT_NE(zero, nullptr) << e->full_name() << " has no value 0";
    EXPECT_EQ(zero->name(), want) << e->full_name();
    EXPECT_EQ(e->value(0)->number(), 0)
        << e->full_name() << ": list the UNSPECIFIED value first";
  }
}

TEST(ProtoLintTest, EnumValuesArePrefixed) {
  for (const EnumDescriptor* e : AllEnums()) {
    const std::string prefix = UpperSnake(e->name()) + "_";
    for (int i = 0; i < e->value_count(); ++i) {
      EXPECT_EQ(e->value(i)->name().rfind(prefix, 0), 0u)
          << e->value(i)->full_name() << " lacks prefix " << prefix;
    }
  }
}

// Sizes, rates, counts and addresses are unsigned fixed-width integers;
// a signed or floating size is how -1 or 1.5 pages reach the wire.
TEST(ProtoLintTest, SizesAndAddressesAreUnsignedIntegers) {
  int checked = 0;
  for (const Descriptor* m : AllMessages()) {
    for (int i = 0; i < m->field_count(); ++i) {
      const FieldDescriptor* f = m->field(i);
      const std::string& n = f->name();
      const bool is_quantity = EndsWith(n, "_bytes") ||
                               EndsWith(n, "_per_s") ||
                               EndsWith(n, "_pages") || n == "gpa" ||
                               EndsWith(n, "_gpa") || n == "page_count";
      if (!is_quantity) continue;
      ++checked;
      const auto t = f->cpp_type();
      EXPECT_TRUE(t == FieldDescriptor::CPPTYPE_UINT64 ||
                  t == FieldDescriptor::CPPTYPE_UINT32)
          << f->full_name() << " is " << f->type_name();
      if (n == "gpa" || EndsWith(n, "_gpa") || EndsWith(n, "_per_s")) {
        EXPECT_EQ(t, FieldDescriptor::CPPTYPE_UINT64) << f->full_name();
      }
    }
  }
  EXPECT_GT(checked, 30);
}

// Messages that are persisted or open a wire session carry a version.
TEST(ProtoLintTest, VersionedMessagesCarryAVersion) {
  EXPECT_NE(VmState::descriptor()->FindFieldByName("version"), nullptr);
  EXPECT_NE(HelloRequest::descriptor()->FindFieldByName("protocol_version"),
            nullptr);
  EXPECT_NE(HelloRequest::descriptor()->FindFieldByName("magic"), nullptr);
  EXPECT_NE(HelloResponse::descriptor()->FindFieldByName("accepted_version"),
            nullptr);
  EXPECT_NE(DeviceState::descriptor()->FindFieldByName("version"), nullptr);
  for (const Descriptor* d :
       {Vm::descriptor(), Host::descriptor(), Migration::descriptor()}) {
    EXPECT_NE(d->FindFieldByName("resource_version"), nullptr)
        << d->full_name();
  }
}

TEST(ProtoLintTest, WireConstants) {
  EXPECT_EQ(WIRE_CONSTANT_MAGIC, 0x46455259);  // "FERY"
  EXPECT_EQ(WIRE_CONSTANT_MAX_BATCH_PAYLOAD_BYTES, 1 << 20);
  EXPECT_EQ(WIRE_CONSTANT_STREAM_STRIPE_BYTES, 2 << 20);
  EXPECT_GT(WIRE_CONSTANT_MAX_RUNS_PER_BATCH, 256);  // >= 1 run per page.
}

struct MethodSpec {
  const char* name;
  bool client_streaming;
  bool server_streaming;
};

void ExpectMethods(const ServiceDescriptor* service,
                   const std::vector<MethodSpec>& want) {
  ASSERT_NE(service, nullptr);
  for (const MethodSpec& spec : want) {
    const MethodDescriptor* m = service->FindMethodByName(spec.name);
    ASSERT_NE(m, nullptr) << service->name() << "." << spec.name << " missing";
    EXPECT_EQ(m->client_streaming(), spec.client_streaming)
        << service->name() << "." << spec.name;
    EXPECT_EQ(m->server_streaming(), spec.server_streaming)
        << service->name() << "." << spec.name;
  }
  // Nothing undocumented either: every method is in the table.
  EXPECT_EQ(service->method_count(), static_cast<int>(want.size()))
      << service->name() << " has methods the table does not list";
}

TEST(ProtoLintTest, AgentServiceMethods) {
  ExpectMethods(AgentMigration::descriptor()->file()->FindServiceByName(
                    "AgentService"),
                {
                    {"CreateVm", false, false},
                    {"GetVm", false, false},
                    {"ListVms", false, false},
                    {"PauseVm", false, false},
                    {"ResumeVm", false, false},
                    {"DeleteVm", false, false},
                    {"GetVmStats", false, false},
                    {"GetHostInfo", false, false},
                    {"PrepareIncoming", false, false},
                    {"StartOutgoing", false, false},
                    {"WatchMigration", false, true},
                    {"CancelMigration", false, false},
                    {"FinishIncoming", false, false},
                    {"ConfirmOutgoing", false, false},
                    {"GetMigration", false, false},
                    {"ListMigrations", false, false},
                });
}

TEST(ProtoLintTest, MigrationServiceMethods) {
  ExpectMethods(
      PageBatch::descriptor()->file()->FindServiceByName("MigrationService"),
      {
          {"Hello", false, false},
          {"Transfer", true, true},
          {"Switchover", false, false},
          {"Abort", false, false},
      });
}

TEST(ProtoLintTest, ControllerServiceMethods) {
  ExpectMethods(
      Migration::descriptor()->file()->FindServiceByName("ControllerService"),
      {
          {"RegisterHost", false, false},
          {"Heartbeat", false, false},
          {"ListHosts", false, false},
          {"GetHost", false, false},
          {"CordonHost", false, false},
          {"UncordonHost", false, false},
          {"DrainHost", false, true},
          {"CreateVm", false, false},
          {"GetVm", false, false},
          {"ListVms", false, false},
          {"DeleteVm", false, false},
          {"CreateMigration", false, false},
          {"GetMigration", false, false},
          {"ListMigrations", false, false},
          {"WatchMigration", false, true},
          {"CancelMigration", false, false},
          {"ListEvents", false, false},
      });
}

TEST(ProtoLintTest, VmHasNoService) {
  EXPECT_EQ(VmSpec::descriptor()->file()->service_count(), 0);
}

template <typename M>
M RoundTrip(const M& in) {
  std::string wire;
  EXPECT_TRUE(in.SerializeToString(&wire));
  M out;
  EXPECT_TRUE(out.ParseFromString(wire));
  return out;
}

TEST(RoundTripTest, PageBatch) {
  PageBatch batch;
  batch.set_round(3);
  batch.set_sequence(42);
  batch.set_compression(COMPRESSION_NONE);
  PageRun* raw = batch.add_runs();
  raw->set_gpa(0x100000);
  raw->set_page_count(2);
  raw->set_encoding(PAGE_ENCODING_RAW);
  raw->set_payload_bytes(2 * 4096);
  PageRun* zero = batch.add_runs();
  zero->set_gpa(0xfffff000000);  // Above 4 GiB: gpa must not truncate.
  zero->set_page_count(512);
  zero->set_encoding(PAGE_ENCODING_ZERO);
  std::string payload(2 * 4096, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i);
  batch.set_payload(payload);
  batch.set_uncompressed_size_bytes(payload.size());
  batch.set_payload_crc32c(0xdeadbeef);

  const PageBatch out = RoundTrip(batch);
  EXPECT_TRUE(MessageDifferencer::Equals(batch, out));
  EXPECT_EQ(out.runs(1).gpa(), 0xfffff000000u);
  EXPECT_EQ(out.payload(), payload);

  // A full batch stays well under gRPC's 4 MiB default message limit.
  PageBatch full;
  full.set_sequence(UINT64_MAX);
  full.set_payload(std::string(WIRE_CONSTANT_MAX_BATCH_PAYLOAD_BYTES, 'x'));
  for (int i = 0; i < WIRE_CONSTANT_MAX_RUNS_PER_BATCH; ++i) {
    PageRun* r = full.add_runs();
    r->set_gpa(UINT64_MAX & ~0xfffull);
    r->set_page_count(UINT32_MAX);
    r->set_encoding(PAGE_ENCODING_XOR_DELTA);
    r->set_payload_bytes(UINT32_MAX);
  }
  EXPECT_LT(full.ByteSizeLong(), 1.25 * (1 << 20));
}

VmState SampleKvmState() {
  VmState state;
  state.set_version(VM_STATE_VERSION_1);
  VmSpec* spec = state.mutable_spec();
  spec->set_name("vm-a");
  spec->set_memory_bytes(uint64_t{8} << 30);
  spec->set_vcpu_count(2);
  spec->set_backend(VM_BACKEND_KVM);
  (*spec->mutable_labels())["tier"] = "web";
  Workload* w = spec->mutable_workload();
  w->set_kind(WORKLOAD_KIND_MIXED);
  w->set_seed(7);
  VcpuWorkload* o = w->add_vcpu_overrides();
  o->set_vcpu_index(1);
  o->mutable_workload()->set_kind(WORKLOAD_KIND_HOTCOLD);
  o->mutable_workload()->set_hot_fraction(0.1);
  o->mutable_workload()->set_hot_probability(0.9);

  MemoryLayout* mem = state.mutable_memory();
  mem->set_page_size_bytes(4096);
  Memslot* slot = mem->add_memslots();
  slot->set_slot_id(0);
  slot->set_gpa(0);
  slot->set_size_bytes(uint64_t{8} << 30);

  for (uint32_t i = 0; i < 2; ++i) {
    VcpuState* v = state.mutable_kvm()->add_vcpus();
    v->set_vcpu_index(i);
    v->mutable_regs()->set_rip(0x400000 + i);
    v->mutable_regs()->set_rflags(0x202);
    Sregs* s = v->mutable_sregs();
    s->mutable_cs()->set_selector(0x1b);
    s->mutable_cs()->set_dpl(3);
    s->mutable_cs()->set_l(true);
    s->mutable_cs()->set_present(true);
    s->mutable_gdt()->set_base(0x1000);
    s->mutable_gdt()->set_limit(0xffff);
    s->set_cr0(0x80050033);
    s->set_cr3(0x2000);
    s->set_efer(0xd01);
    s->set_apic_base(0xfee00900);
    v->set_xsave(std::string(4096, '\x5a'));
    v->set_lapic(std::string(1024, '\x01'));
    v->set_fpu(std::string(416, '\0'));
    XcrEntry* xcr = v->add_xcrs();
    xcr->set_xcr(0);
    xcr->set_value(0x7);
    MsrEntry* msr = v->add_msrs();
    msr->set_index(0xc0000082);  // LSTAR
    msr->set_value(0xffffffff81000000);
    v->mutable_events()->set_nmi_pending(true);
    v->set_mp_state(0);
    v->mutable_debug_regs()->add_db(0);
    v->mutable_debug_regs()->set_dr7(0x400);
    v->set_tsc_khz(2'400'000);
  }
  state.mutable_clock()->set_clock_ns(123456789);
  state.mutable_irqchip()->set_ioapic(std::string(200, '\x02'));
  DeviceState* dev = state.add_devices();
  dev->set_id("serial0");
  dev->set_version(1);
  dev->set_data("\x01\x02");
  state.mutable_guest()->set_stamp(99);
  state.mutable_saved_time()->set_seconds(1700000000);
  return state;
}

TEST(RoundTripTest, SwitchoverWithKvmVmState) {
  SwitchoverRequest req;
  req.set_migration_id("m-1");
  req.set_session_id("00ff");
  req.add_final_sequences(10);
  req.add_final_sequences(11);
  *req.mutable_state() = SampleKvmState();
  MemoryDigest* d = req.mutable_digest();
  d->set_coverage(MEMORY_VERIFICATION_FULL);
  d->set_algorithm(DIGEST_ALGORITHM_CRC32C_OF_PAGES);
  MemslotDigest* md = d->add_memslots();
  md->set_slot_id(0);
  md->set_digest(0xcafef00d);
  md->set_pages(2 << 20);

  const SwitchoverRequest out = RoundTrip(req);
  EXPECT_TRUE(MessageDifferencer::Equals(req, out));
  ASSERT_EQ(out.state().vcpus_case(), VmState::kKvm);
  ASSERT_EQ(out.state().kvm().vcpus_size(), 2);
  EXPECT_EQ(out.state().kvm().vcpus(1).regs().rip(), 0x400001u);
  EXPECT_EQ(out.state().kvm().vcpus(0).xsave().size(), 4096u);
  EXPECT_EQ(out.state().spec().labels().at("tier"), "web");
}

TEST(RoundTripTest, SoftVmState) {
  VmState state;
  state.set_version(VM_STATE_VERSION_1);
  SoftVcpuState* v = state.mutable_soft()->add_vcpus();
  v->set_position(12345);
  for (uint64_t w : {uint64_t{1}, uint64_t{2}, uint64_t{3}, UINT64_MAX}) v->add_rng_state(w);
  const VmState out = RoundTrip(state);
  EXPECT_TRUE(MessageDifferencer::Equals(state, out));
  EXPECT_EQ(out.vcpus_case(), VmState::kSoft);
}

// The REST API is the JSON mapping of these messages.
TEST(RoundTripTest, MigrationJsonMapping) {
  Migration m;
  m.set_id("m-1");
  m.set_phase(MIGRATION_PHASE_TRANSFERRING);
  m.mutable_policy()->mutable_max_downtime()->set_nanos(300'000'000);
  m.mutable_policy()->set_max_bandwidth_bytes_per_s(0);  // Set, and zero.
  m.mutable_policy()->set_compression(COMPRESSION_AUTO);
  m.mutable_progress()->set_remaining_bytes(uint64_t{5} << 30);
  std::string json;
  ASSERT_TRUE(google::protobuf::util::MessageToJsonString(m, &json).ok());
  EXPECT_NE(json.find("\"maxDowntime\":\"0.300s\""), std::string::npos)
      << json;
  EXPECT_NE(json.find("MIGRATION_PHASE_TRANSFERRING"), std::string::npos);
  Migration back;
  ASSERT_TRUE(google::protobuf::util::JsonStringToMessage(json, &back).ok());
  EXPECT_TRUE(MessageDifferencer::Equals(m, back));
  // proto3 optional keeps "set to 0" apart from "not set" for overrides.
  EXPECT_TRUE(back.policy().has_max_bandwidth_bytes_per_s());
  EXPECT_FALSE(back.policy().has_max_rounds());
}

// Proves the gRPC codegen links; nothing is dialled (channels are lazy).
TEST(GrpcStubTest, StubsConstruct) {
  auto channel =
      grpc::CreateChannel("localhost:1", grpc::InsecureChannelCredentials());
  std::unique_ptr<MigrationService::Stub> migration =
      MigrationService::NewStub(channel);
  std::unique_ptr<AgentService::Stub> agent = AgentService::NewStub(channel);
  std::unique_ptr<ControllerService::Stub> controller =
      ControllerService::NewStub(channel);
  EXPECT_NE(migration, nullptr);
  EXPECT_NE(agent, nullptr);
  EXPECT_NE(controller, nullptr);
}

}  // namespace
}  // namespace ferry::v1
