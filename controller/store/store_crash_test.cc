// Crash safety: a child process commits transitions and dies with _exit()
// (no destructor, no flush, no close). Everything Commit() acknowledged must
// be there when the store is reopened, because each commit fsyncs the WAL.
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "absl/strings/str_cat.h"
#include "controller/store/store.h"
#include "gtest/gtest.h"

namespace ferry::controller {
namespace {

constexpr int kTransitions = 50;

std::string Dir() {
  const char* tmp = std::getenv("TEST_TMPDIR");
  return std::string(tmp ? tmp : "/tmp") + "/store_crash_test";
}

// Runs in the child: every commit is acknowledged, then the process dies
// without closing RocksDB. Exit code 0 only if every commit succeeded.
void CommitThenDie(const std::string& dir) {
  auto store = Store::Open(dir);
  if (!store.ok()) _exit(2);
  v1::Migration m;
  m.set_id("m1");
  m.set_phase(v1::MIGRATION_PHASE_PENDING);
  auto created = (*store)->Create(m);
  if (!created.ok()) _exit(3);
  m = *created;
  for (int i = 0; i < kTransitions; ++i) {
    WriteTxn txn;
    m.mutable_progress()->set_round(i + 1);
    txn.Update(m);
    v1::Event e;
    e.set_object_kind(v1::OBJECT_KIND_MIGRATION);
    e.set_object_name("m1");
    e.set_reason("MigrationProgress");
    txn.AppendEvent(e);
    auto r = (*store)->Commit(txn);
    if (!r.ok()) _exit(4);
    m.set_resource_version(r->revision);
  }
  store->release();  // Leak it: no Close(), no flush.
  _exit(0);
}

TEST(StoreCrashTest, AcknowledgedCommitsSurviveProcessDeath) {
  // "threadsafe": the child re-executes this binary, so it starts with no
  // RocksDB threads or locks inherited from the parent.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string dir = Dir();
  std::filesystem::remove_all(dir);
  EXPECT_EXIT(CommitThenDie(dir), ::testing::ExitedWithCode(0), "");

  auto store = Store::Open(dir);
  ASSERT_TRUE(store.ok()) << store.status();
  auto m = (*store)->Get<v1::Migration>("m1");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->progress().round(), static_cast<uint32_t>(kTransitions));
  EXPECT_EQ((*store)->last_event_sequence(), static_cast<uint64_t>(kTransitions));
  EXPECT_EQ(m->resource_version(), (*store)->revision());
  // The log continues without reusing a sequence.
  WriteTxn txn;
  txn.AppendEvent(v1::Event());
  auto r = (*store)->Commit(txn);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->event_sequences[0], static_cast<uint64_t>(kTransitions + 1));
}

}  // namespace
}  // namespace ferry::controller
