#include "controller/store/store.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"

namespace ferry::controller {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string FreshDir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string dir = std::string(tmp ? tmp : "/tmp") + "/" +
                    info->test_suite_name() + "." + info->name();
  std::filesystem::remove_all(dir);
  return dir;
}

v1::Host MakeHost(const std::string& name) {
  v1::Host h;
  h.set_name(name);
  h.mutable_info()->set_name(name);
  h.set_readiness(v1::HOST_READINESS_READY);
  return h;
}

v1::Vm MakeVm(const std::string& name, const std::string& host = "h1") {
  v1::Vm vm;
  vm.mutable_spec()->set_name(name);
  vm.mutable_spec()->set_memory_bytes(1 << 30);
  vm.mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
  vm.mutable_status()->set_host(host);
  return vm;
}

v1::Event MakeEvent(v1::ObjectKind kind, const std::string& name,
                    const std::string& reason) {
  v1::Event e;
  e.set_object_kind(kind);
  e.set_object_name(name);
  e.set_reason(reason);
  e.set_severity(v1::EVENT_SEVERITY_INFO);
  return e;
}

// Opens the store's RocksDB directly, to damage it as a disk or tool would.
std::unique_ptr<rocksdb::DB> RawOpen(
    const std::string& dir, std::vector<rocksdb::ColumnFamilyHandle*>* h) {
  rocksdb::DBOptions opts;
  opts.create_if_missing = true;
  opts.create_missing_column_families = true;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const char* name : kCfNames) cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
  rocksdb::DB* db = nullptr;
  EXPECT_TRUE(rocksdb::DB::Open(opts, dir, cfs, h, &db).ok());
  return std::unique_ptr<rocksdb::DB>(db);
}

void RawClose(std::unique_ptr<rocksdb::DB> db,
              std::vector<rocksdb::ColumnFamilyHandle*>* h) {
  for (auto* handle : *h) db->DestroyColumnFamilyHandle(handle);
  h->clear();
}

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir();
    Reopen();
  }
  void Reopen() {
    store_.reset();
    StoreOptions opts;
    opts.clock = [] { return absl::FromUnixSeconds(1700000000); };
    auto s = Store::Open(dir_, opts);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  std::string dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, CrudWithCompareAndSwap) {
  EXPECT_EQ(store_->Get<v1::Host>("h1").status().code(),
            absl::StatusCode::kNotFound);
  auto h1 = store_->Create(MakeHost("h1"));
  ASSERT_TRUE(h1.ok()) << h1.status();
  EXPECT_EQ(h1->resource_version(), 1u);
  EXPECT_EQ(store_->Create(MakeHost("h1")).status().code(),
            absl::StatusCode::kAlreadyExists);

  v1::Host edit = *h1;
  edit.set_cordoned(true);
  auto h1b = store_->Update(edit);
  ASSERT_TRUE(h1b.ok()) << h1b.status();
  EXPECT_GT(h1b->resource_version(), h1->resource_version());
  EXPECT_TRUE(store_->Get<v1::Host>("h1")->cordoned());

  // A writer holding the old version loses.
  absl::Status stale = store_->Update(*h1).status();
  EXPECT_EQ(stale.code(), absl::StatusCode::kAborted);
  EXPECT_THAT(std::string(stale.message()), HasSubstr("host 'h1'"));
  v1::Host unversioned = MakeHost("h1");
  EXPECT_EQ(store_->Update(unversioned).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::Host ghost = MakeHost("ghost");
  ghost.set_resource_version(1);
  EXPECT_EQ(store_->Update(ghost).status().code(), absl::StatusCode::kNotFound);

  EXPECT_EQ(store_->Delete<v1::Host>("h1", h1->resource_version()).code(),
            absl::StatusCode::kAborted);
  EXPECT_TRUE(store_->Delete<v1::Host>("h1", h1b->resource_version()).ok());
  EXPECT_EQ(store_->Delete<v1::Host>("h1").code(), absl::StatusCode::kNotFound);

  // Re-created: a version from the old incarnation never matches again.
  auto again = store_->Create(MakeHost("h1"));
  ASSERT_TRUE(again.ok());
  EXPECT_GT(again->resource_version(), h1b->resource_version());
  EXPECT_EQ(store_->Update(*h1b).status().code(), absl::StatusCode::kAborted);
}

TEST_F(StoreTest, ListPagesInStableOrderWithFilters) {
  for (int i = 0; i < 25; ++i) {
    v1::Vm vm = MakeVm(absl::StrCat("vm-", 100 + i), i % 2 ? "h1" : "h2");
    (*vm.mutable_spec()->mutable_labels())["tier"] = i % 5 ? "web" : "db";
    ASSERT_TRUE(store_->Create(vm).ok());
  }
  ASSERT_TRUE(store_->Create(MakeVm("other")).ok());

  ListOptions<v1::Vm> opts;
  opts.prefix = "vm-";
  opts.page_size = 10;
  std::vector<std::string> names;
  int pages = 0;
  do {
    auto page = store_->List(opts);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& vm : page->items) names.push_back(vm.spec().name());
    opts.page_token = page->next_page_token;
    ++pages;
  } while (!opts.page_token.empty());
  EXPECT_EQ(pages, 3);
  ASSERT_EQ(names.size(), 25u);
  EXPECT_TRUE(std::is_sorted(names.begin(), names.end()));

  ListOptions<v1::Vm> sel;
  sel.label_selector = "tier=db";
  sel.filter = [](const v1::Vm& vm) { return vm.status().host() == "h2"; };
  auto db_on_h2 = store_->List(sel);
  ASSERT_TRUE(db_on_h2.ok());
  std::vector<std::string> got;
  for (const auto& vm : db_on_h2->items) got.push_back(vm.spec().name());
  EXPECT_THAT(got, ElementsAre("vm-100", "vm-110", "vm-120"));
  EXPECT_TRUE(db_on_h2->next_page_token.empty());

  // Exactly page_size matches: no token, so no empty trailing page.
  sel.page_size = 3;
  EXPECT_TRUE(store_->List(sel)->next_page_token.empty());

  ListOptions<v1::Vm> bad;
  bad.page_size = -1;
  EXPECT_EQ(store_->List(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.page_size = 0;
  bad.page_token = "garbage!";
  EXPECT_EQ(store_->List(bad).status().code(), absl::StatusCode::kInvalidArgument);
  bad.page_token.clear();
  bad.label_selector = "tier in (web";
  EXPECT_EQ(store_->List(bad).status().code(), absl::StatusCode::kInvalidArgument);
  // A token from a List of VMs is refused by a List of hosts.
  ListOptions<v1::Host> hosts;
  ListOptions<v1::Vm> one;
  one.page_size = 1;
  hosts.page_token = store_->List(one)->next_page_token;
  ASSERT_FALSE(hosts.page_token.empty());
  EXPECT_EQ(store_->List(hosts).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, TransitionIsAtomic) {
  auto vm = store_->Create(MakeVm("vm1"));
  v1::Migration m;
  m.set_id("m1");
  m.set_vm_name("vm1");
  m.set_phase(v1::MIGRATION_PHASE_PENDING);
  auto mig = store_->Create(m);
  ASSERT_TRUE(vm.ok() && mig.ok());
  const uint64_t events_before = store_->last_event_sequence();

  // The VM changed under us: the whole transition is refused.
  v1::Vm vm_edit = *vm;
  vm_edit.mutable_status()->set_migration_id("m1");
  ASSERT_TRUE(store_->Update(vm_edit).ok());
  WriteTxn txn;
  v1::Migration m2 = *mig;
  m2.set_phase(v1::MIGRATION_PHASE_PREPARING);
  txn.Update(m2);
  txn.Update(*vm);  // stale
  txn.AppendEvent(MakeEvent(v1::OBJECT_KIND_MIGRATION, "m1", "MigrationPhaseChanged"));
  EXPECT_EQ(store_->Commit(txn).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(store_->Get<v1::Migration>("m1")->phase(), v1::MIGRATION_PHASE_PENDING);
  EXPECT_EQ(store_->last_event_sequence(), events_before);

  WriteTxn ok;
  ok.Update(m2);
  v1::Vm fresh = *store_->Get<v1::Vm>("vm1");
  fresh.mutable_status()->set_phase(v1::VM_PHASE_RUNNING);
  ok.Update(fresh);
  ok.AppendEvent(MakeEvent(v1::OBJECT_KIND_MIGRATION, "m1", "MigrationPhaseChanged"));
  auto r = store_->Commit(ok);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(store_->Get<v1::Migration>("m1")->resource_version(), r->revision);
  EXPECT_EQ(store_->Get<v1::Vm>("vm1")->resource_version(), r->revision);
  EXPECT_THAT(r->event_sequences, ElementsAre(events_before + 1));

  WriteTxn twice;
  twice.Update(m2);
  twice.Delete<v1::Migration>("m1");
  EXPECT_EQ(store_->Commit(twice).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Commit(WriteTxn()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreTest, EventLogSurvivesReopenAndFilters) {
  for (int i = 0; i < 6; ++i) {
    WriteTxn txn;
    auto e = MakeEvent(i % 2 ? v1::OBJECT_KIND_VM : v1::OBJECT_KIND_HOST,
                       i % 3 ? "a" : "b", "Something");
    if (i == 5) e.set_severity(v1::EVENT_SEVERITY_ERROR);
    txn.AppendEvent(e);
    ASSERT_TRUE(store_->Commit(txn).ok());
  }
  const uint64_t revision = store_->revision();
  Reopen();
  EXPECT_EQ(store_->last_event_sequence(), 6u);
  EXPECT_EQ(store_->revision(), revision);
  WriteTxn more;
  more.AppendEvent(MakeEvent(v1::OBJECT_KIND_VM, "a", "AfterRestart"));
  EXPECT_THAT(store_->Commit(more)->event_sequences, ElementsAre(7u));

  auto all = store_->ListEvents({});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->events.size(), 7u);
  for (size_t i = 0; i < all->events.size(); ++i) {
    EXPECT_EQ(all->events[i].sequence(), i + 1);
    EXPECT_EQ(all->events[i].time().seconds(), 1700000000);
  }
  EventQuery q;
  q.after_sequence = 2;
  q.limit = 2;
  auto page = store_->ListEvents(q);
  EXPECT_EQ(page->events.size(), 2u);
  EXPECT_EQ(page->events[0].sequence(), 3u);
  EXPECT_TRUE(page->more);
  EXPECT_EQ(page->last_scanned_sequence, 4u);

  EventQuery vm_a;
  vm_a.object_kind = v1::OBJECT_KIND_VM;
  vm_a.object_name = "a";
  std::vector<uint64_t> seqs;
  for (const auto& e : store_->ListEvents(vm_a)->events) seqs.push_back(e.sequence());
  EXPECT_THAT(seqs, ElementsAre(2u, 6u, 7u));
  EventQuery errors;
  errors.min_severity = v1::EVENT_SEVERITY_WARNING;
  EXPECT_EQ(store_->ListEvents(errors)->events.size(), 1u);
}

TEST_F(StoreTest, WatchHooks) {
  std::vector<uint64_t> seen;
  const int64_t id = store_->AddListener([&](const CommitInfo& info) {
    for (const auto& e : info.events) seen.push_back(e.sequence());
  });
  auto ev = MakeEvent(v1::OBJECT_KIND_HOST, "h1", "HostRegistered");
  ASSERT_TRUE(store_->Create(MakeHost("h1"), &ev).ok());
  store_->RemoveListener(id);
  ASSERT_TRUE(store_->Create(MakeHost("h2"), &ev).ok());
  EXPECT_THAT(seen, ElementsAre(1u));

  const uint64_t rev = store_->revision();
  EXPECT_EQ(store_->WaitForRevision(rev, absl::Milliseconds(10)), rev);
  std::thread writer([&] { ASSERT_TRUE(store_->Create(MakeHost("h3")).ok()); });
  EXPECT_GT(store_->WaitForRevision(rev, absl::Seconds(30)), rev);
  writer.join();
}

TEST_F(StoreTest, SecondOpenIsRefused) {
  auto second = Store::Open(dir_);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(second.status().message()), HasSubstr("already open"));
}

TEST_F(StoreTest, SchemaMismatchIsClear) {
  store_.reset();
  std::vector<rocksdb::ColumnFamilyHandle*> h;
  auto db = RawOpen(dir_, &h);
  ASSERT_TRUE(db->Put({}, h[static_cast<int>(Cf::kMeta)], kMetaSchemaVersion,
                      EncodeFixed32(2)).ok());
  RawClose(std::move(db), &h);
  auto s = Store::Open(dir_);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()),
              HasSubstr("schema version 2; this controller reads version 1"));
}

TEST_F(StoreTest, UnknownColumnFamilyIsRefused) {
  store_.reset();
  rocksdb::DBOptions opts;
  std::vector<rocksdb::ColumnFamilyDescriptor> cfs;
  for (const char* name : kCfNames) cfs.emplace_back(name, rocksdb::ColumnFamilyOptions());
  std::vector<rocksdb::ColumnFamilyHandle*> h;
  rocksdb::DB* raw = nullptr;
  ASSERT_TRUE(rocksdb::DB::Open(opts, dir_, cfs, &h, &raw).ok());
  std::unique_ptr<rocksdb::DB> db(raw);
  rocksdb::ColumnFamilyHandle* extra = nullptr;
  ASSERT_TRUE(db->CreateColumnFamily({}, "quotas", &extra).ok());
  h.push_back(extra);
  RawClose(std::move(db), &h);
  auto s = Store::Open(dir_);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.status().message()), HasSubstr("'quotas'"));
}

TEST_F(StoreTest, CorruptValueIsDataLossNamingTheKey) {
  ASSERT_TRUE(store_->Create(MakeVm("vm-1")).ok());
  ASSERT_TRUE(store_->Create(MakeVm("vm-7")).ok());
  store_.reset();
  {
    std::vector<rocksdb::ColumnFamilyHandle*> h;
    auto db = RawOpen(dir_, &h);
    ASSERT_TRUE(db->Put({}, h[static_cast<int>(Cf::kVms)], "vm-7",
                        "\x01\x02not an envelope").ok());
    RawClose(std::move(db), &h);
  }
  Reopen();
  auto got = store_->Get<v1::Vm>("vm-7");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("'vm-7'"));
  EXPECT_TRUE(store_->Get<v1::Vm>("vm-1").ok());
  auto list = store_->List(ListOptions<v1::Vm>());
  EXPECT_EQ(list.status().code(), absl::StatusCode::kDataLoss);
  v1::Vm update = MakeVm("vm-7");
  update.set_resource_version(2);
  EXPECT_EQ(store_->Update(update).status().code(), absl::StatusCode::kDataLoss);
  // The repair path: an unconditional delete still works.
  EXPECT_TRUE(store_->Delete<v1::Vm>("vm-7").ok());
  EXPECT_TRUE(store_->List(ListOptions<v1::Vm>()).ok());
}

// Aux records: durable across a reopen, listed by prefix, no revision bump,
// keys checked.
TEST(StoreAuxTest, PutGetListDeleteSurviveReopen) {
  const std::string dir = FreshDir();
  {
    auto store = Store::Open(dir);
    ASSERT_TRUE(store.ok()) << store.status();
    const uint64_t rev = (*store)->revision();
    ASSERT_TRUE((*store)->PutAux("request/vm/a", "1 2 x").ok());
    ASSERT_TRUE((*store)->PutAux("request/vm/b", "3 4 y").ok());
    ASSERT_TRUE((*store)->PutAux("drain/h1", "2").ok());
    EXPECT_EQ((*store)->revision(), rev);
    EXPECT_EQ((*store)->GetAux("").status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ((*store)->PutAux(std::string(600, 'k'), "v").code(),
              absl::StatusCode::kInvalidArgument);
  }
  auto store = Store::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ(*(*store)->GetAux("drain/h1"), "2");
  auto requests = (*store)->ListAux("request/");
  ASSERT_TRUE(requests.ok());
  ASSERT_EQ(requests->size(), 2u);
  EXPECT_EQ((*requests)[0].first, "request/vm/a");
  EXPECT_EQ((*requests)[1].second, "3 4 y");
  ASSERT_TRUE((*store)->DeleteAux("request/vm/a").ok());
  ASSERT_TRUE((*store)->DeleteAux("request/vm/absent").ok());
  EXPECT_TRUE(absl::IsNotFound((*store)->GetAux("request/vm/a").status()));
  EXPECT_EQ((*store)->ListAux("request/")->size(), 1u);
  // Not confused with the store's own meta keys.
  EXPECT_TRUE((*store)->ListAux("")->size() == 2u);
}

}  // namespace
}  // namespace ferry::controller
