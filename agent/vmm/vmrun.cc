// vmrun: runs one guest for a while and reports what it did.
//
//   bazel run //agent:vmrun -- --memory=1GiB --vcpus=2 --workload=uniform \
//       --dirty-rate=200MB/s --seconds=5 [--backend=kvm|soft|auto] \
//       [--kvm-device=/dev/kvm]
//
// Prints progress once a second and a final `summary` line with
// selfcheck_errors=N and the dirty rate measured by the dirty tracker.
// Exit status 0 only if the guest and the host check found no error.
//
// Flag names may use dashes: they are rewritten to absl's underscores.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "agent/vmm/kvm/kvm_backend.h"
#include "agent/vmm/soft/soft_backend.h"
#include "agent/vmm/soft/softmmu_port.h"
#include "agent/vmm/vm.h"
#include "mmu/dirty_rate.h"
#include "mmu/dirty_set.h"

ABSL_FLAG(std::string, memory, "256MiB", "guest RAM (B, KiB/MiB/GiB, KB/MB/GB)");
ABSL_FLAG(uint32_t, vcpus, 2, "vCPUs");
ABSL_FLAG(std::string, workload, "uniform",
          "idle | uniform | hotcold | sequential | mixed");
ABSL_FLAG(std::string, working_set, "0", "bytes the guest writes; 0 = all");
ABSL_FLAG(std::string, dirty_rate, "100MB/s", "guest write rate; 0 = flat out");
ABSL_FLAG(double, seconds, 5, "how long to run");
ABSL_FLAG(std::string, backend, "auto", "kvm | soft | auto");
ABSL_FLAG(std::string, kvm_device, "/dev/kvm", "KVM device path");
ABSL_FLAG(uint64_t, seed, 0, "workload seed; 0 = random (printed)");

namespace ferry::vmm {
namespace {

bool ParseBytes(absl::string_view text, uint64_t* out) {
  std::string s = absl::AsciiStrToLower(text);
  absl::string_view v(s);
  if (absl::EndsWith(v, "/s")) v.remove_suffix(2);
  struct Unit {
    const char* suffix;
    uint64_t mult;
  };
  static const Unit kUnits[] = {{"kib", 1ull << 10}, {"mib", 1ull << 20},
                                {"gib", 1ull << 30}, {"kb", 1000},
                                {"mb", 1000000},     {"gb", 1000000000},
                                {"k", 1ull << 10},   {"m", 1ull << 20},
                                {"g", 1ull << 30},   {"b", 1}};
  uint64_t mult = 1;
  for (const Unit& u : kUnits) {
    if (absl::EndsWith(v, u.suffix)) {
      v.remove_suffix(strlen(u.suffix));
      mult = u.mult;
      break;
    }
  }
  double number;
  if (!absl::SimpleAtod(v, &number) || number < 0) return false;
  *out = static_cast<uint64_t>(number * static_cast<double>(mult));
  return true;
}

bool ParseWorkload(const std::string& name, v1::WorkloadKind* kind) {
  const std::string upper = "WORKLOAD_KIND_" + absl::AsciiStrToUpper(name);
  return v1::WorkloadKind_Parse(upper, kind) &&
         *kind != v1::WORKLOAD_KIND_UNSPECIFIED;
}

// absl flags are identifiers: --dirty-rate=x -> --dirty_rate=x.
std::vector<char*> UnderscoreFlags(int argc, char** argv,
                                   std::vector<std::string>* storage) {
  storage->assign(argv, argv + argc);
  std::vector<char*> out;
  for (std::string& a : *storage) {
    if (absl::StartsWith(a, "--")) {
      for (size_t i = 2; i < a.size() && a[i] != '='; ++i) {
        if (a[i] == '-') a[i] = '_';
      }
    }
    out.push_back(a.data());
  }
  return out;
}

std::unique_ptr<Backend> PickBackend(const std::string& which) {
  if (which == "soft") {
    return std::make_unique<SoftBackend>(SoftMmuPortFactory());
  }
  auto kvm = std::make_unique<KvmBackend>(absl::GetFlag(FLAGS_kvm_device));
  absl::Status probe = kvm->Probe();
  if (probe.ok()) return kvm;
  if (which == "kvm") {
    std::fprintf(stderr, "vmrun: KVM is unavailable: %s\n",
                 probe.ToString().c_str());
    return nullptr;
  }
  std::printf("vmrun: KVM is unavailable (%s); falling back to the soft "
              "backend\n", probe.ToString().c_str());
  return std::make_unique<SoftBackend>(SoftMmuPortFactory());
}

std::string Mbps(double bytes_per_s) {
  return absl::StrFormat("%.1fMB/s", bytes_per_s / 1e6);
}

int Run() {
  v1::VmSpec spec;
  spec.set_name("vmrun");
  uint64_t memory = 0, rate = 0, ws = 0;
  v1::WorkloadKind kind;
  if (!ParseBytes(absl::GetFlag(FLAGS_memory), &memory) ||
      !ParseBytes(absl::GetFlag(FLAGS_dirty_rate), &rate) ||
      !ParseBytes(absl::GetFlag(FLAGS_working_set), &ws) ||
      !ParseWorkload(absl::GetFlag(FLAGS_workload), &kind)) {
    std::fprintf(stderr, "vmrun: bad --memory, --dirty-rate, --working-set "
                         "or --workload value\n");
    return 2;
  }
  const std::string which = absl::GetFlag(FLAGS_backend);
  if (which != "kvm" && which != "soft" && which != "auto") {
    std::fprintf(stderr, "vmrun: --backend must be kvm, soft or auto\n");
    return 2;
  }
  spec.set_memory_bytes(memory);
  spec.set_vcpu_count(absl::GetFlag(FLAGS_vcpus));
  spec.mutable_workload()->set_kind(kind);
  spec.mutable_workload()->set_working_set_bytes(ws);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(rate);
  spec.mutable_workload()->set_seed(absl::GetFlag(FLAGS_seed));

  std::unique_ptr<Backend> backend = PickBackend(which);
  if (backend == nullptr) return 1;
  auto vm = Vm::Create(spec, *backend);
  if (!vm.ok()) {
    std::fprintf(stderr, "vmrun: %s\n", vm.status().ToString().c_str());
    return 1;
  }
  std::printf("vmrun: backend=%s memory=%llu vcpus=%u workload=%s seed=%llu "
              "tsc_hz=%llu\n",
              std::string(backend->name()).c_str(),
              static_cast<unsigned long long>(memory), spec.vcpu_count(),
              v1::WorkloadKind_Name(kind).c_str(),
              static_cast<unsigned long long>((*vm)->spec().workload().seed()),
              static_cast<unsigned long long>((*vm)->guest_tsc_hz()));
  int rc = 0;
  {
    auto tracker = (*vm)->CreateDirtyTracker(mmu::DirtyTrackingMode::kUnspecified);
    if (tracker.ok()) {
      absl::Status s = (*tracker)->Start((*vm)->memory().slots());
      if (!s.ok()) tracker = s;
    }
    if (!tracker.ok()) {
      std::printf("vmrun: no dirty tracker: %s\n",
                  tracker.status().ToString().c_str());
    }
    mmu::DirtyRateMeter meter(mmu::SystemMonotonicClock());
    meter.Restart();
    mmu::DirtySet set = mmu::DirtySet::ForSlots((*vm)->memory().slots());
    uint64_t tracked_pages = 0;
    const absl::Time start = absl::Now();
    const absl::Duration total = absl::Seconds(absl::GetFlag(FLAGS_seconds));
    for (int tick = 1; absl::Now() - start < total; ++tick) {
      absl::SleepFor(std::min(absl::Seconds(1), total - (absl::Now() - start)));
      std::string rate_text = "n/a";
      if (tracker.ok()) {
        set.ClearAll();
        auto c = (*tracker)->Collect(&set);
        if (c.ok()) {
          tracked_pages += c->pages;
          rate_text = Mbps(meter.Record(*c).bytes_per_sec);
        }
      }
      VmStats st = (*vm)->Stats();
      std::printf("t=%.1fs phase=%s iterations=%llu pages_written=%llu "
                  "selfcheck_errors=%llu dirty_rate=%s\n",
                  absl::ToDoubleSeconds(absl::Now() - start),
                  v1::VmPhase_Name(st.phase).c_str(),
                  static_cast<unsigned long long>(st.guest.iterations),
                  static_cast<unsigned long long>(st.guest.pages_written),
                  static_cast<unsigned long long>(st.guest.selfcheck_errors),
                  rate_text.c_str());
      std::fflush(stdout);
      if (st.phase == v1::VM_PHASE_FAILED) break;
    }
    const double elapsed = absl::ToDoubleSeconds(absl::Now() - start);
    absl::Status paused = (*vm)->Pause();
    auto check = (*vm)->CheckGuestMemory();
    VmStats st = (*vm)->Stats();
    const uint64_t mismatches = check.ok() ? check->mismatches : ~0ull;
    std::printf(
        "summary backend=%s phase=%s seconds=%.2f iterations=%llu "
        "pages_written=%llu selfcheck_errors=%llu host_check_mismatches=%llu "
        "dirty_rate=%s guest_write_rate=%s%s%s\n",
        st.backend.c_str(), v1::VmPhase_Name(st.phase).c_str(), elapsed,
        static_cast<unsigned long long>(st.guest.iterations),
        static_cast<unsigned long long>(st.guest.pages_written),
        static_cast<unsigned long long>(st.guest.selfcheck_errors),
        static_cast<unsigned long long>(mismatches),
        tracker.ok() ? Mbps(tracked_pages * 4096.0 / elapsed).c_str() : "n/a",
        Mbps(st.guest.pages_written * 4096.0 / elapsed).c_str(),
        st.message.empty() ? "" : " failure=", st.message.c_str());
    if (!paused.ok() || st.guest.selfcheck_errors != 0 || mismatches != 0 ||
        st.phase == v1::VM_PHASE_FAILED) {
      rc = 1;
    }
  }  // tracker before the VM
  return rc;
}

}  // namespace
}  // namespace ferry::vmm

int main(int argc, char** argv) {
  std::vector<std::string> storage;
  std::vector<char*> args = ferry::vmm::UnderscoreFlags(argc, argv, &storage);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  return ferry::vmm::Run();
}
