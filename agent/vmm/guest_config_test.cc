#include "agent/vmm/guest_config.h"

#include <string>

#include "gtest/gtest.h"

namespace ferry::vmm {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

v1::VmSpec Good() {
  v1::VmSpec spec;
  spec.set_memory_bytes(64 * kMiB);
  spec.set_vcpu_count(2);
  spec.mutable_workload()->set_kind(v1::WORKLOAD_KIND_HOTCOLD);
  spec.mutable_workload()->set_dirty_rate_bytes_per_s(4096 * 1000 + 1);
  return spec;
}

TEST(GuestConfigTest, ResolvesDefaults) {
  auto c = ResolveGuestConfig(Good(), 8, 42);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->kind, uint64_t{FERRY_WL_HOTCOLD});
  EXPECT_EQ(c->ws_pages, (64 * kMiB - FERRY_GUEST_WS_GPA) / 4096);
  EXPECT_EQ(c->dirty_pages_per_sec, 1001u);  // rounded up
  EXPECT_EQ(c->seed, 43u);                   // fallback, made odd (non-zero)
  EXPECT_EQ(c->hot_fraction_permille, 100u);
  ferry_guest_params p = MakeGuestParams(*c, 1000);
  EXPECT_EQ(p.magic, FERRY_GUEST_PARAMS_MAGIC);
  EXPECT_EQ(p.tsc_hz, 1000u);
  EXPECT_EQ(p.nr_vcpus, 2u);
}

TEST(GuestConfigTest, MaxWorkingSetFitsWithOutOfLineTable) {
  for (uint64_t mem : {17 * kMiB, 4096 * kMiB, 8192 * kMiB + 4096}) {
    const uint64_t pages = MaxWorkingSetPages(mem);
    EXPECT_LE(ferry_guest_min_mem_size(pages), mem) << mem;
    EXPECT_GT(ferry_guest_min_mem_size(pages + 1), mem) << mem;
  }
  EXPECT_EQ(MaxWorkingSetPages(FERRY_GUEST_WS_GPA), 0u);
}

TEST(GuestConfigTest, MixedOverridesAndIdleDefault) {
  v1::VmSpec spec = Good();
  spec.mutable_workload()->set_kind(v1::WORKLOAD_KIND_MIXED);
  auto* o = spec.mutable_workload()->add_vcpu_overrides();
  o->set_vcpu_index(1);
  o->mutable_workload()->set_kind(v1::WORKLOAD_KIND_SEQUENTIAL);
  auto c = ResolveGuestConfig(spec, 8, 1);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->vcpu_kind[0], uint64_t{FERRY_WL_IDLE});
  EXPECT_EQ(c->vcpu_kind[1], uint64_t{FERRY_WL_SEQUENTIAL});
  o->mutable_workload()->set_working_set_bytes(4096);
  EXPECT_TRUE(absl::IsInvalidArgument(ResolveGuestConfig(spec, 8, 1).status()));
}

TEST(GuestConfigTest, ErrorsNameTheField) {
  struct Case {
    const char* field;
    void (*edit)(v1::VmSpec&);
  };
  const Case cases[] = {
      {"memory_bytes", [](v1::VmSpec& s) { s.set_memory_bytes(0); }},
      {"memory_bytes", [](v1::VmSpec& s) { s.set_memory_bytes(100); }},
      {"memory_bytes", [](v1::VmSpec& s) { s.set_memory_bytes(4 * kMiB); }},
      {"vcpu_count", [](v1::VmSpec& s) { s.set_vcpu_count(0); }},
      {"vcpu_count", [](v1::VmSpec& s) { s.set_vcpu_count(9); }},
      {"workload.kind",
       [](v1::VmSpec& s) {
         s.mutable_workload()->set_kind(v1::WORKLOAD_KIND_UNSPECIFIED);
       }},
      {"workload.working_set_bytes",
       [](v1::VmSpec& s) {
         s.mutable_workload()->set_working_set_bytes(64 * kMiB);
       }},
      {"workload.working_set_bytes",
       [](v1::VmSpec& s) { s.mutable_workload()->set_working_set_bytes(10); }},
      {"workload.hot_fraction",
       [](v1::VmSpec& s) { s.mutable_workload()->set_hot_fraction(1.5); }},
      {"workload.vcpu_overrides",
       [](v1::VmSpec& s) {
         s.mutable_workload()->add_vcpu_overrides()->set_vcpu_index(0);
       }},
  };
  for (const Case& c : cases) {
    v1::VmSpec spec = Good();
    c.edit(spec);
    auto r = ResolveGuestConfig(spec, 8, 1);
    ASSERT_FALSE(r.ok()) << c.field;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_NE(std::string(r.status().message()).find(c.field),
              std::string::npos)
        << r.status();
  }
}

}  // namespace
}  // namespace ferry::vmm
