// `get` (with --watch) and `top`.
#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/app_internal.h"
#include "cli/output.h"
#include "cli/units.h"

namespace ferry::cli {
namespace {

// One fetch of what `get` shows, in a form --watch can diff.
struct Snapshot {
  std::string full;  // The whole output as printed the first time.
  std::vector<std::string> header;  // Table formats.
  struct Object {
    std::string name;
    std::string signature;
    std::vector<std::string> row;  // Table formats.
    std::string text;              // json/yaml: what to print on a change.
  };
  std::vector<Object> objects;
};

bool IsTable(OutputFormat f) {
  return f == OutputFormat::kTable || f == OutputFormat::kWide;
}

// Cells that change by themselves (AGE, HEARTBEAT) stay out of the
// signature, or --watch would reprint every object every poll.
std::string Signature(std::vector<std::string> row, size_t age_col,
                      bool drop_last) {
  if (drop_last && !row.empty()) row.pop_back();
  if (age_col < row.size()) row.erase(row.begin() + age_col);
  return absl::StrJoin(row, "\x1f");
}

template <typename T, typename RowFn, typename HeaderFn, typename FormatFn>
Snapshot MakeSnapshot(const std::vector<T>& items, OutputFormat f, bool single,
                      absl::Time now, RowFn row, HeaderFn header,
                      FormatFn format, bool host_kind) {
  Snapshot s;
  s.full = format(items, f, single, now);
  s.header = header(f == OutputFormat::kWide);
  for (const T& item : items) {
    Snapshot::Object o;
    std::vector<std::string> wide_row = row(item, true, now);
    o.name = wide_row[0];
    o.signature = Signature(wide_row, 5 + (host_kind ? 0 : 1), host_kind);
    if (IsTable(f)) {
      o.row = row(item, f == OutputFormat::kWide, now);
    } else {
      o.text = format(std::vector<T>{item}, f, true, now);
      if (f == OutputFormat::kYaml) o.text = "---\n" + o.text;
    }
    s.objects.push_back(std::move(o));
  }
  return s;
}

grpc::Status Fetch(Invocation& inv, Client& c, const std::string& resource,
                   const std::string& name, OutputFormat f, Snapshot* snap) {
  absl::Time now = inv.env.now();
  std::string selector = inv.args.Get("selector");
  std::string host = inv.args.Get("host");
  bool single = !name.empty();
  if (resource == "hosts") {
    std::vector<v1::Host> items;
    if (single) {
      v1::GetHostRequest req;
      req.set_name(name);
      items.emplace_back();
      auto ctx = c.UnaryContext();
      grpc::Status s = c.stub().GetHost(ctx.get(), req, &items.back());
      if (!s.ok()) return s;
    } else {
      grpc::Status s = ListAllHosts(c, selector, &items);
      if (!s.ok()) return s;
    }
    *snap = MakeSnapshot(items, f, single, now, HostRow, HostHeader, FormatHosts,
                         true);
  } else if (resource == "vms") {
    std::vector<v1::Vm> items;
    if (single) {
      v1::GetVmRequest req;
      req.set_name(name);
      items.emplace_back();
      auto ctx = c.UnaryContext();
      grpc::Status s = c.stub().GetVm(ctx.get(), req, &items.back());
      if (!s.ok()) return s;
    } else {
      grpc::Status s = ListAllVms(c, selector, host, &items);
      if (!s.ok()) return s;
    }
    *snap = MakeSnapshot(items, f, single, now, VmRow, VmHeader, FormatVms, false);
  } else {
    std::vector<v1::Migration> items;
    if (single) {
      v1::GetMigrationRequest req;
      req.set_id(name);
      items.emplace_back();
      auto ctx = c.UnaryContext();
      grpc::Status s = c.stub().GetMigration(ctx.get(), req, &items.back());
      if (!s.ok()) return s;
    } else {
      grpc::Status s = ListAllMigrations(c, host, "", &items);
      if (!s.ok()) return s;
    }
    *snap = MakeSnapshot(items, f, single, now, MigrationRow,
                         MigrationHeader, FormatMigrations, false);
  }
  return grpc::Status::OK;
}

// --watch of one migration: the server pushes every change.
int WatchOneMigration(Invocation& inv, Client& c, const std::string& id,
                      OutputFormat f) {
  auto ctx = c.StreamContext();
  CancelOnInterrupt cancel(inv, ctx.get());
  v1::WatchMigrationRequest req;
  req.set_id(id);
  auto reader = c.stub().WatchMigration(ctx.get(), req);
  v1::Migration m;
  std::string last_sig;
  bool first = true;
  std::vector<size_t> widths;
  while (reader->Read(&m)) {
    absl::Time now = inv.env.now();
    bool wide = f == OutputFormat::kWide;
    std::string sig = Signature(MigrationRow(m, true, now), 6, false);
    if (!first && sig == last_sig) continue;
    last_sig = sig;
    if (f == OutputFormat::kTable || f == OutputFormat::kWide) {
      std::vector<std::vector<std::string>> rows;
      if (first) rows.push_back(MigrationHeader(wide));
      rows.push_back(MigrationRow(m, wide, now));
      inv.out() << RenderTable(rows, &widths);
    } else {
      if (f == OutputFormat::kYaml && !first) inv.out() << "---\n";
      inv.out() << FormatMigrations({m}, f, true, now);
    }
    inv.out().flush();
    first = false;
  }
  grpc::Status s = reader->Finish();
  if (inv.Interrupted()) return kExitOk;
  if (!s.ok()) return c.Fail(inv, s);
  return kExitOk;
}

}  // namespace

int CmdGet(Invocation& inv) {
  if (inv.words.empty()) {
    return UsageError(inv, "specify a resource type: hosts, vms or migrations");
  }
  std::string resource = CanonicalResource(inv.words[0]);
  if (resource.empty()) {
    return UsageError(inv, absl::StrCat("unknown resource type \"",
                                        inv.words[0],
                                        "\": use hosts, vms or migrations"));
  }
  if (inv.words.size() > 2) {
    return UsageError(inv, "get takes one resource type and at most one name");
  }
  std::string name = inv.words.size() == 2 ? inv.words[1] : "";
  auto format = ParseOutputFormat(inv.args.Get("output"));
  if (!format.ok()) return UsageError(inv, format.status());
  if (inv.args.Has("selector") && resource == "migrations") {
    return UsageError(inv, "migrations have no labels; filter with --host");
  }
  if (inv.args.Has("host") && resource == "hosts") {
    return UsageError(inv, "--host filters vms and migrations, not hosts");
  }
  if (!name.empty() && (inv.args.Has("selector") || inv.args.Has("host"))) {
    return UsageError(inv, "a NAME cannot be combined with -l or --host");
  }
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  bool watch = inv.args.Get("watch") == "true";
  if (watch && resource == "migrations" && !name.empty()) {
    return WatchOneMigration(inv, c, name, *format);
  }
  std::map<std::string, std::string> last;  // name -> signature
  std::vector<size_t> widths;
  bool first = true;
  for (;;) {
    Snapshot snap;
    grpc::Status s = Fetch(inv, c, resource, name, *format, &snap);
    if (!s.ok()) {
      if (watch && inv.Interrupted()) return kExitOk;
      return c.Fail(inv, s);
    }
    if (first && snap.objects.empty() && IsTable(*format)) {
      inv.err() << "No " << resource << " found.\n";
    }
    if (first && !(watch && IsTable(*format))) {
      inv.out() << snap.full;
    } else {
      std::vector<std::vector<std::string>> rows;
      if (first) rows.push_back(snap.header);
      for (const Snapshot::Object& o : snap.objects) {
        auto it = last.find(o.name);
        if (!first && it != last.end() && it->second == o.signature) continue;
        if (IsTable(*format)) {
          rows.push_back(o.row);
        } else {
          inv.out() << o.text;
        }
      }
      if (first && rows.size() == 1) rows.clear();  // Nothing yet.
      if (!rows.empty()) inv.out() << RenderTable(rows, &widths);
    }
    inv.out().flush();
    first = false;
    last.clear();
    for (const Snapshot::Object& o : snap.objects) last[o.name] = o.signature;
    if (!watch) return kExitOk;
    if (!SleepUnlessInterrupted(inv, inv.env.poll_interval)) return kExitOk;
  }
}

int CmdTop(Invocation& inv) {
  if (inv.words.size() != 1) {
    return UsageError(inv, "usage: ferryctl top vms|hosts");
  }
  std::string resource = CanonicalResource(inv.words[0]);
  if (resource != "vms" && resource != "hosts") {
    return UsageError(inv, absl::StrCat("top shows vms or hosts, not \"",
                                        inv.words[0], "\""));
  }
  std::string sort_by = inv.args.Get(
      "sort-by", resource == "vms" ? "dirty-rate" : "memory");
  bool ok_key = resource == "vms"
                    ? (sort_by == "dirty-rate" || sort_by == "memory" ||
                       sort_by == "name")
                    : (sort_by == "memory" || sort_by == "cpu" ||
                       sort_by == "name" || sort_by == "dirty-rate");
  if (!ok_key) {
    return UsageError(inv, absl::StrCat("cannot sort ", resource, " by \"",
                                        sort_by, "\""));
  }
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  std::vector<v1::Vm> vms;
  grpc::Status s = ListAllVms(c, resource == "vms" ? inv.args.Get("selector") : "",
                              inv.args.Get("host"), &vms);
  if (!s.ok()) return c.Fail(inv, s);
  std::vector<std::vector<std::string>> rows;
  if (resource == "vms") {
    std::stable_sort(vms.begin(), vms.end(), [&](const v1::Vm& a, const v1::Vm& b) {
      if (sort_by == "memory" && a.spec().memory_bytes() != b.spec().memory_bytes()) {
        return a.spec().memory_bytes() > b.spec().memory_bytes();
      }
      if (sort_by == "dirty-rate" &&
          a.status().dirty_rate_bytes_per_s() != b.status().dirty_rate_bytes_per_s()) {
        return a.status().dirty_rate_bytes_per_s() > b.status().dirty_rate_bytes_per_s();
      }
      return a.spec().name() < b.spec().name();
    });
    rows.push_back({"NAME", "HOST", "DIRTY-RATE", "MEMORY", "VCPUS", "PHASE"});
    for (const v1::Vm& vm : vms) {
      rows.push_back({vm.spec().name(),
                      vm.status().host().empty() ? "-" : vm.status().host(),
                      FormatRate(vm.status().dirty_rate_bytes_per_s()),
                      FormatBytes(vm.spec().memory_bytes()),
                      absl::StrCat(vm.spec().vcpu_count()),
                      VmPhaseName(vm.status().phase())});
    }
  } else {
    std::vector<v1::Host> hosts;
    s = ListAllHosts(c, inv.args.Get("selector"), &hosts);
    if (!s.ok()) return c.Fail(inv, s);
    std::map<std::string, uint64_t> dirty;
    for (const v1::Vm& vm : vms) {
      dirty[vm.status().host()] += vm.status().dirty_rate_bytes_per_s();
    }
    auto pct = [](uint64_t used, uint64_t cap) {
      return cap == 0 ? 0 : static_cast<int>(used * 100 / cap);
    };
    auto key = [&](const v1::Host& h) -> uint64_t {
      const auto& i = h.info();
      if (sort_by == "memory") return pct(i.allocated().memory_bytes(), i.capacity().memory_bytes());
      if (sort_by == "cpu") return pct(i.allocated().vcpus(), i.capacity().vcpus());
      if (sort_by == "dirty-rate") return dirty[h.name()];
      return 0;
    };
    std::stable_sort(hosts.begin(), hosts.end(),
                     [&](const v1::Host& a, const v1::Host& b) {
                       if (key(a) != key(b)) return key(a) > key(b);
                       return a.name() < b.name();
                     });
    rows.push_back({"NAME", "CPU", "CPU%", "MEMORY", "MEMORY%", "VMS",
                    "DIRTY-RATE"});
    for (const v1::Host& h : hosts) {
      const auto& i = h.info();
      rows.push_back(
          {h.name(),
           absl::StrCat(i.allocated().vcpus(), "/", i.capacity().vcpus()),
           absl::StrCat(pct(i.allocated().vcpus(), i.capacity().vcpus()), "%"),
           absl::StrCat(FormatBytes(i.allocated().memory_bytes()), "/",
                        FormatBytes(i.capacity().memory_bytes())),
           absl::StrCat(pct(i.allocated().memory_bytes(),
                            i.capacity().memory_bytes()), "%"),
           absl::StrCat(i.allocated().vms()), FormatRate(dirty[h.name()])});
    }
  }
  if (rows.size() == 1) {
    inv.err() << "No " << resource << " found.\n";
    return kExitOk;
  }
  inv.out() << RenderTable(rows);
  return kExitOk;
}

}  // namespace ferry::cli
