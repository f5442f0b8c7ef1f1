// Store and scheduler at cluster scale: 200 hosts, 5,000 VMs.
// Prints one JSON object per line:
//   {"bench":"store_get","n":5000,"p50_us":...,"p99_us":...,"max_us":...}
// Usage: bazel run -c opt //controller/store:store_bench -- [dir]
// (default dir: $TEST_TMPDIR or /tmp; the store is deleted afterwards).
// Sync-write numbers are an fsync on that directory's filesystem.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "controller/scheduler/drain.h"
#include "controller/scheduler/queue.h"
#include "controller/store/store.h"

namespace ferry::controller {
namespace {

constexpr int kHosts = 200;
constexpr int kVms = 5000;
constexpr int kQueued = 100;
constexpr uint64_t kGiB = 1ull << 30;

using Clock = std::chrono::steady_clock;

double Micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

void Report(const std::string& name, std::vector<double> us,
            const std::string& extra = "") {
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) {
    return us[std::min(us.size() - 1, static_cast<size_t>(p * us.size()))];
  };
  double sum = 0;
  for (double u : us) sum += u;
  std::printf(
      "{\"bench\":\"%s\",\"n\":%zu,\"p50_us\":%.1f,\"p99_us\":%.1f,"
      "\"max_us\":%.1f,\"mean_us\":%.1f%s}\n",
      name.c_str(), us.size(), pct(0.50), pct(0.99), us.back(), sum / us.size(),
      extra.c_str());
  std::fflush(stdout);
}

std::vector<double> Time(int n, const std::function<void(int)>& fn) {
  std::vector<double> us;
  us.reserve(n);
  for (int i = 0; i < n; ++i) {
    auto t0 = Clock::now();
    fn(i);
    us.push_back(Micros(Clock::now() - t0));
  }
  return us;
}

void Check(const absl::Status& s) {
  if (!s.ok()) {
    std::fprintf(stderr, "store_bench: %s\n", s.ToString().c_str());
    std::exit(1);
  }
}

std::string HostName(int i) { return absl::StrFormat("host-%03d", i); }
std::string VmName(int i) { return absl::StrFormat("vm-%05d", i); }

v1::Vm MakeVm(int i, std::mt19937_64& rng) {
  v1::Vm vm;
  vm.mutable_spec()->set_name(VmName(i));
  vm.mutable_spec()->set_memory_bytes((1 + rng() % 8) * kGiB);
  vm.mutable_spec()->set_vcpu_count(1 + rng() % 4);
  (*vm.mutable_spec()->mutable_labels())["tier"] = i % 3 ? "web" : "db";
  if (i % 10 == 0) {
    (*vm.mutable_spec()->mutable_labels())[scheduler::kAntiAffinityLabel] =
        absl::StrCat("g", i % 50);
  }
  vm.mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
  vm.mutable_status()->set_host(HostName(i % kHosts));
  vm.set_uid(absl::StrCat("uid-", i));
  return vm;
}

int Run(const std::string& base) {
  const std::string dir = absl::StrCat(base, "/ferry_store_bench.", getpid());
  std::filesystem::remove_all(dir);
  auto opened = Store::Open(dir);
  Check(opened.status());
  Store& store = **opened;
  std::mt19937_64 rng(42);

  // Load: 200 hosts of 256 GiB / 96 vCPUs, 5,000 VMs, 100 records per txn.
  auto t0 = Clock::now();
  for (int start = 0; start < kHosts + kVms; start += 100) {
    WriteTxn txn;
    for (int i = start; i < std::min(start + 100, kHosts + kVms); ++i) {
      if (i < kHosts) {
        v1::Host h;
        h.set_name(HostName(i));
        h.mutable_info()->set_name(HostName(i));
        h.mutable_info()->mutable_capacity()->set_memory_bytes(256 * kGiB);
        h.mutable_info()->mutable_capacity()->set_vcpus(96);
        (*h.mutable_info()->mutable_labels())["zone"] = absl::StrCat("z", i % 4);
        h.set_readiness(v1::HOST_READINESS_READY);
        txn.Create(h);
      } else {
        txn.Create(MakeVm(i - kHosts, rng));
      }
    }
    Check(store.Commit(txn).status());
  }
  std::printf("{\"bench\":\"store_load\",\"records\":%d,\"total_ms\":%.1f}\n",
              kHosts + kVms, Micros(Clock::now() - t0) / 1000);

  Report("store_get_vm", Time(kVms, [&](int) {
           Check(store.Get<v1::Vm>(VmName(rng() % kVms)).status());
         }));
  Report("store_list_vms_page100", Time(200, [&](int i) {
           ListOptions<v1::Vm> o;
           o.page_size = 100;
           // Half of them under a prefix (vm-000..vm-049: 100 VMs each).
           if (i % 2) o.prefix = absl::StrFormat("vm-%03d", rng() % 50);
           Check(store.List(o).status());
         }));
  Report("store_list_vms_on_host_fullscan", Time(50, [&](int) {
           const std::string host = HostName(rng() % kHosts);
           ListOptions<v1::Vm> o;
           o.page_size = kMaxPageSize;
           o.filter = [&](const v1::Vm& vm) { return vm.status().host() == host; };
           Check(store.List(o).status());
         }));
  Report("store_list_vms_selector_fullscan", Time(50, [&](int) {
           ListOptions<v1::Vm> o;
           o.page_size = kMaxPageSize;
           o.label_selector = "tier=db,anti-affinity";
           Check(store.List(o).status());
         }));
  Report("store_list_hosts_all", Time(100, [&](int) {
           ListOptions<v1::Host> o;
           o.page_size = kMaxPageSize;
           Check(store.List(o).status());
         }));

  // Synced writes: a CAS update, and a 3-record transition.
  Report("store_update_vm_sync", Time(300, [&](int i) {
           auto vm = store.Get<v1::Vm>(VmName(i));
           Check(vm.status());
           vm->mutable_status()->set_dirty_rate_bytes_per_s(i);
           Check(store.Update(*vm).status());
         }));
  for (int i = 0; i < kQueued; ++i) {
    v1::Migration m;
    m.set_id(absl::StrFormat("mig-%04d", i));
    m.set_vm_name(VmName(i * 7));
    m.set_source_host(HostName((i * 7) % kHosts));
    m.set_phase(v1::MIGRATION_PHASE_PENDING);
    m.mutable_create_time()->set_seconds(1000 + i / 4);
    Check(store.Create(m).status());
  }
  Report("store_transition_sync", Time(200, [&](int i) {
           auto m = store.Get<v1::Migration>(absl::StrFormat("mig-%04d", i % kQueued));
           auto vm = store.Get<v1::Vm>(m->vm_name());
           Check(vm.status());
           WriteTxn txn;
           m->mutable_progress()->set_round(i);
           vm->mutable_status()->set_migration_id(m->id());
           txn.Update(*m);
           txn.Update(*vm);
           v1::Event e;
           e.set_object_kind(v1::OBJECT_KIND_MIGRATION);
           e.set_object_name(m->id());
           e.set_reason("MigrationPhaseChanged");
           txn.AppendEvent(e);
           Check(store.Commit(txn).status());
         }));

  // Scheduler: snapshot from the store, then place the 100 queued.
  scheduler::ClusterSnapshot snap;
  Report("scheduler_snapshot_read", Time(10, [&](int) {
           snap = scheduler::ClusterSnapshot();
           std::string token;
           do {
             ListOptions<v1::Vm> o;
             o.page_size = kMaxPageSize;
             o.page_token = token;
             auto page = store.List(o);
             Check(page.status());
             for (auto& vm : page->items) snap.vms.push_back(std::move(vm));
             token = page->next_page_token;
           } while (!token.empty());
           ListOptions<v1::Host> ho;
           ho.page_size = kMaxPageSize;
           snap.hosts = std::move(store.List(ho)->items);
           ListOptions<v1::Migration> mo;
           mo.page_size = kMaxPageSize;
           snap.migrations = std::move(store.List(mo)->items);
         }));
  for (const char* mode : {"default_limits", "unlimited"}) {
    scheduler::Limits limits;
    if (std::string(mode) == "unlimited") limits = {0, 0, 0};
    size_t admitted = 0;
    auto us = Time(50, [&](int) {
      auto ds = scheduler::ScheduleMigrations(snap, limits);
      admitted = std::count_if(ds.begin(), ds.end(),
                               [](const auto& d) { return d.admitted; });
    });
    Report(absl::StrCat("scheduler_queue_100_over_200_hosts_", mode), us,
           absl::StrCat(",\"admitted\":", admitted));
  }
  Report("scheduler_drain_plan_25_vms", Time(50, [&](int i) {
           auto plan = scheduler::PlanDrain(snap, HostName(i % kHosts),
                                            scheduler::Limits());
           Check(plan.status());
         }));
  opened->reset();
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace
}  // namespace ferry::controller

int main(int argc, char** argv) {
  std::string base = argc > 1 ? argv[1] : "";
  if (base.empty()) {
    const char* tmp = std::getenv("TEST_TMPDIR");
    base = tmp ? tmp : "/tmp";
  }
  return ferry::controller::Run(base);
}
