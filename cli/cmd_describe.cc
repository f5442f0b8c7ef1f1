// `describe`: the multi-section human view of one host, VM or migration.
#include <algorithm>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cli/app_internal.h"
#include "cli/describe.h"
#include "cli/output.h"
#include "cli/units.h"

namespace ferry::cli {
namespace {

// Events are garnish: a failure to list them shows up in the section
// instead of failing the whole describe.
std::string EventsOrNote(Client& c, v1::ObjectKind kind,
                         const std::string& name, absl::Time now) {
  std::vector<v1::Event> events;
  grpc::Status s = ListAllEvents(c, kind, name, &events);
  if (!s.ok()) {
    return absl::StrCat("Events:\n  <unavailable: ", s.error_message(), ">\n");
  }
  return DescribeEvents(events, now);
}

}  // namespace

int CmdDescribe(Invocation& inv) {
  if (inv.words.size() != 2) {
    return UsageError(inv, "usage: ferryctl describe host|vm|migration NAME");
  }
  std::string resource = CanonicalResource(inv.words[0]);
  if (resource.empty()) {
    return UsageError(inv, absl::StrCat("unknown resource type \"",
                                        inv.words[0],
                                        "\": use host, vm or migration"));
  }
  const std::string& name = inv.words[1];
  auto client = Client::Connect(inv);
  if (!client.ok()) return UsageError(inv, client.status());
  Client& c = **client;
  absl::Time now = inv.env.now();
  if (resource == "hosts") {
    v1::GetHostRequest req;
    req.set_name(name);
    v1::Host h;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().GetHost(ctx.get(), req, &h);
    if (!s.ok()) return c.Fail(inv, s);
    std::vector<v1::Vm> vms;
    s = ListAllVms(c, "", name, &vms);
    if (!s.ok()) return c.Fail(inv, s);
    inv.out() << DescribeHost(h, vms, now)
              << EventsOrNote(c, v1::OBJECT_KIND_HOST, name, now);
  } else if (resource == "vms") {
    v1::GetVmRequest req;
    req.set_name(name);
    v1::Vm vm;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().GetVm(ctx.get(), req, &vm);
    if (!s.ok()) return c.Fail(inv, s);
    std::vector<v1::Migration> ms;
    s = ListAllMigrations(c, "", name, &ms);
    if (!s.ok()) return c.Fail(inv, s);
    inv.out() << DescribeVm(vm, ms, now)
              << EventsOrNote(c, v1::OBJECT_KIND_VM, name, now);
  } else {
    v1::GetMigrationRequest req;
    req.set_id(name);
    req.set_view(v1::MIGRATION_VIEW_FULL);
    v1::Migration m;
    auto ctx = c.UnaryContext();
    grpc::Status s = c.stub().GetMigration(ctx.get(), req, &m);
    if (!s.ok()) return c.Fail(inv, s);
    inv.out() << DescribeMigration(m, now)
              << EventsOrNote(c, v1::OBJECT_KIND_MIGRATION, name, now);
  }
  return kExitOk;
}

}  // namespace ferry::cli
