// create vm, delete vm, cordon/uncordon, cancel migration.
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "cli/app_internal.h"
#include "common/status_macros.h"
#include "cli/output.h"
#include "cli/units.h"

namespace ferry::cli {
namespace {

absl::Status ParseLabels(const std::vector<std::string>& args,
                         google::protobuf::Map<std::string, std::string>* out) {
  for (const std::string& arg : args) {
    for (absl::string_view kv : absl::StrSplit(arg, ',', absl::SkipEmpty())) {
      size_t eq = kv.find('=');
      if (eq == absl::string_view::npos || eq == 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            "invalid label \"", kv, "\": expected KEY=VALUE, e.g. -l tier=web"));
      }
      (*out)[std::string(kv.substr(0, eq))] = std::string(kv.substr(eq + 1));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<double> ParseFraction(const std::string& flag,
                                     const std::string& v, bool allow_zero) {
  double d;
  if (!absl::SimpleAtod(v, &d) || d < 0 || d > 1 || (!allow_zero && d == 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid --", flag, " \"", v, "\": expected a number in ",
        allow_zero ? "[0, 1]" : "(0, 1]"));
  }
  return d;
}

absl::StatusOr<v1::VmSpec> BuildSpec(const Invocation& inv,
                                     const std::string& name) {
  const ParsedArgs& a = inv.args;
  v1::VmSpec spec;
  spec.set_name(name);
  if (!a.Has("memory")) {
    return absl::InvalidArgumentError("--memory is required, e.g. --memory 1GiB");
  }
  ASSIGN_OR_RETURN(uint64_t memory, ParseBytes(a.Get("memory")));
  if (memory == 0 || memory % 4096 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--memory ", a.Get("memory"),
        " must be a positive multiple of the 4KiB page size"));
  }
  spec.set_memory_bytes(memory);
  uint32_t vcpus = 1;
  if (a.Has("vcpus") &&
      (!absl::SimpleAtoi(a.Get("vcpus"), &vcpus) || vcpus == 0 || vcpus > 256)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "invalid --vcpus \"", a.Get("vcpus"), "\": expected 1 to 256"));
  }
  spec.set_vcpu_count(vcpus);
  std::string backend = absl::AsciiStrToLower(a.Get("backend", "auto"));
  if (backend == "kvm") spec.set_backend(v1::VM_BACKEND_KVM);
  else if (backend == "soft") spec.set_backend(v1::VM_BACKEND_SOFT);
  else if (backend == "auto") spec.set_backend(v1::VM_BACKEND_AUTO);
  else return absl::InvalidArgumentError(absl::StrCat(
      "invalid --backend \"", backend, "\": use kvm, soft or auto"));
  RETURN_IF_ERROR(ParseLabels(a.GetAll("selector"), spec.mutable_labels()));

  bool any_workload = a.Has("workload") || a.Has("dirty-rate") ||
                      a.Has("working-set") || a.Has("hot-fraction") ||
                      a.Has("hot-probability") || a.Has("seed");
  if (!any_workload) return spec;
  v1::Workload* w = spec.mutable_workload();
  std::string kind = absl::AsciiStrToLower(a.Get("workload", "uniform"));
  if (kind == "idle") w->set_kind(v1::WORKLOAD_KIND_IDLE);
  else if (kind == "uniform") w->set_kind(v1::WORKLOAD_KIND_UNIFORM);
  else if (kind == "hotcold") w->set_kind(v1::WORKLOAD_KIND_HOTCOLD);
  else if (kind == "sequential") w->set_kind(v1::WORKLOAD_KIND_SEQUENTIAL);
  else return absl::InvalidArgumentError(absl::StrCat(
      "invalid --workload \"", kind,
      "\": use idle, uniform, hotcold or sequential"));
  if (a.Has("dirty-rate")) {
    ASSIGN_OR_RETURN(uint64_t rate, ParseRate(a.Get("dirty-rate")));
    w->set_dirty_rate_bytes_per_s(rate);
  }
  if (a.Has("working-set")) {
    ASSIGN_OR_RETURN(uint64_t ws, ParseBytes(a.Get("working-set")));
    if (ws > memory) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--working-set ", a.Get("working-set"), " exceeds --memory ",
          a.Get("memory")));
    }
    w->set_working_set_bytes(ws);
  }
  if (a.Has("hot-fraction") || a.Has("hot-probability")) {
    if (w->kind() != v1::WORKLOAD_KIND_HOTCOLD) {
      return absl::InvalidArgumentError(
          "--hot-fraction and --hot-probability need --workload hotcold");
    }
  }
  if (w->kind() == v1::WORKLOAD_KIND_HOTCOLD) {
    ASSIGN_OR_RETURN(double hf, ParseFraction("hot-fraction",
                                              a.Get("hot-fraction", "0.1"), false));
    ASSIGN_OR_RETURN(double hp, ParseFraction("hot-probability",
                                              a.Get("hot-probability", "0.9"), true));
    w->set_hot_fraction(hf);
    w->set_hot_probability(hp);
  }
  if (a.Has("seed")) {
    uint64_t seed;
    if (!absl::SimpleAtoi(a.Get("seed"), &seed)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "invalid --seed \"", a.Get("seed"), "\": expected an unsigned integer"));
    }
    w->set_seed(seed);
  }
  return spec;
}

// Checks `words` is exactly {kind, NAME} with kind an alias of `resource`.
bool TakeKindAndName(Invocation& inv, const std::string& resource,
                     const char* usage, std::string* name, int* code) {
  if (inv.words.size() != 2 || CanonicalResource(inv.words[0]) != resource) {
    *code = UsageError(inv, absl::StrCat("usage: ", usage));
    return false;
  }
  *name = inv.words[1];
  return true;
}

}  // namespace

int CmdCreate(Invocation& inv) {
  std::string name;
  int code;
  if (!TakeKindAndName(inv, "vms", "ferryctl create vm NAME --memory SIZE [flags]",
                       &name, &code)) {
    return code;
  }
  auto spec = BuildSpec(inv, name);
  if (!spec.ok()) return UsageError(inv, spec.status());
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  v1::CreateVmRequest req;
  *req.mutable_spec() = *spec;
  req.set_host(inv.args.Get("host"));
  req.set_request_id(RandomRequestId());
  v1::Vm vm;
  auto ctx = c.UnaryContext();
  grpc::Status s = c.stub().CreateVm(ctx.get(), req, &vm);
  if (!s.ok()) return c.Fail(inv, s);
  inv.out() << "vm/" << vm.spec().name() << " created";
  if (!vm.status().host().empty()) inv.out() << " on " << vm.status().host();
  inv.out() << "\n";
  return kExitOk;
}

int CmdDelete(Invocation& inv) {
  std::string name;
  int code;
  if (!TakeKindAndName(inv, "vms", "ferryctl delete vm NAME", &name, &code)) {
    return code;
  }
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  v1::DeleteVmRequest req;
  req.set_name(name);
  v1::DeleteVmResponse resp;
  auto ctx = c.UnaryContext();
  grpc::Status s = c.stub().DeleteVm(ctx.get(), req, &resp);
  if (!s.ok()) return c.Fail(inv, s);
  inv.out() << "vm/" << name << " deleted\n";
  return kExitOk;
}

int CmdCordon(Invocation& inv, bool cordon) {
  if (inv.words.size() != 1) {
    return UsageError(inv, absl::StrCat("usage: ferryctl ", inv.command, " HOST"));
  }
  if (!cordon && inv.args.Has("reason")) {
    return UsageError(inv, "unknown flag --reason for \"uncordon\"");
  }
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  v1::Host h;
  auto ctx = c.UnaryContext();
  grpc::Status s;
  if (cordon) {
    v1::CordonHostRequest req;
    req.set_name(inv.words[0]);
    req.set_reason(inv.args.Get("reason"));
    s = c.stub().CordonHost(ctx.get(), req, &h);
  } else {
    v1::UncordonHostRequest req;
    req.set_name(inv.words[0]);
    s = c.stub().UncordonHost(ctx.get(), req, &h);
  }
  if (!s.ok()) return c.Fail(inv, s);
  inv.out() << "host/" << inv.words[0] << (cordon ? " cordoned\n" : " uncordoned\n");
  return kExitOk;
}

int CmdCancel(Invocation& inv) {
  std::string id;
  int code;
  if (!TakeKindAndName(inv, "migrations", "ferryctl cancel migration ID [--reason TEXT]",
                       &id, &code)) {
    return code;
  }
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  v1::CancelMigrationRequest req;
  req.set_id(id);
  req.set_reason(inv.args.Get("reason"));
  v1::Migration m;
  auto ctx = c.UnaryContext();
  grpc::Status s = c.stub().CancelMigration(ctx.get(), req, &m);
  if (!s.ok()) return c.Fail(inv, s);
  if (IsTerminal(m.phase())) {
    inv.out() << "migration/" << id << " already " << PhaseName(m.phase()) << "\n";
  } else {
    inv.out() << "migration/" << id << " cancel requested (phase "
              << PhaseName(m.phase()) << ")\n";
  }
  return kExitOk;
}

}  // namespace ferry::cli
