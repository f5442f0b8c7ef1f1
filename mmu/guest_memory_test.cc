#include "mmu/guest_memory.h"

#include <sys/mman.h>

#include <cstring>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace ferry::mmu {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kMiB = uint64_t{1} << 20;

GuestMemoryLayout Layout(std::vector<MemslotSpec> slots) {
  GuestMemoryLayout l;
  l.slots = std::move(slots);
  return l;
}

TEST(GuestMemoryTest, RejectsBadLayouts) {
  struct Case {
    std::vector<MemslotSpec> slots;
    const char* why;
  } cases[] = {
      {{}, "no memslots"},
      {{{0, 0, 0}}, "size is 0"},
      {{{0, 0, 4097}}, "multiples"},
      {{{0, 0x800, 4096}}, "multiples"},
      {{{0, 0, 2 * kMiB}, {1, kMiB, 2 * kMiB}}, "overlaps"},
      {{{0, 4 * kMiB, kMiB}, {1, 0, 5 * kMiB}}, "overlaps"},  // unsorted input
      {{{0, 0, kMiB}, {0, 2 * kMiB, kMiB}}, "used twice"},
      {{{0, ~uint64_t{0} - 4095, 8192}}, "overflows"},
  };
  for (const Case& c : cases) {
    auto mem = GuestMemory::Create(Layout(c.slots));
    ASSERT_FALSE(mem.ok()) << c.why;
    EXPECT_EQ(mem.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(mem.status().message(), HasSubstr(c.why));
  }
}

TEST(GuestMemoryTest, DefaultLayoutSplitsIntoSlots) {
  auto l = DefaultLayout(10 * kMiB, 4 * kMiB);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_EQ(l->slots.size(), 3u);
  EXPECT_EQ(l->slots[2].gpa, 8 * kMiB);
  EXPECT_EQ(l->slots[2].size, 2 * kMiB);
  EXPECT_EQ(l->slots[2].slot, 2u);
  EXPECT_FALSE(DefaultLayout(0).ok());
  EXPECT_FALSE(DefaultLayout(kMiB + 1).ok());
  EXPECT_FALSE(DefaultLayout(kMiB, 100).ok());
}

TEST(GuestMemoryTest, LookupsAndBounds) {
  // Two slots with a hole between them, given out of order.
  auto mem = GuestMemory::Create(
      Layout({{5, 16 * kMiB, 1 * kMiB}, {3, 0, 2 * kMiB + 8192}}));
  ASSERT_TRUE(mem.ok()) << mem.status();
  GuestMemory& m = **mem;
  ASSERT_EQ(m.slots().size(), 2u);
  EXPECT_EQ(m.slots()[0].slot, 3u) << "sorted by gpa";
  EXPECT_EQ(m.total_bytes(), 3 * kMiB + 8192);
  EXPECT_EQ(m.total_pages(), (3 * kMiB + 8192) / 4096);
  for (const Memslot& s : m.slots()) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(s.hva) % (2 * kMiB), 0u);
    EXPECT_EQ(s.memfd_offset % (2 * kMiB), 0u);
  }
  int visited = 0;
  m.ForEachSlot([&](const Memslot&) { ++visited; });
  EXPECT_EQ(visited, 2);

  EXPECT_EQ(m.FindSlot(2 * kMiB + 8191)->slot, 3u);
  EXPECT_EQ(m.FindSlot(2 * kMiB + 8192).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.FindSlot(16 * kMiB)->slot, 5u);
  EXPECT_EQ(m.FindSlot(17 * kMiB).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.SlotById(5)->gpa, 16 * kMiB);
  EXPECT_FALSE(m.SlotById(4).ok());

  auto hva = m.GpaToHva(16 * kMiB + 4096, 4096);
  ASSERT_TRUE(hva.ok());
  EXPECT_EQ(*hva, m.slots()[1].hva + 4096);
  EXPECT_EQ(m.GpaToHva(17 * kMiB - 4096, 4097).status().code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(m.Range(17 * kMiB - 4096, 4096).ok());

  // Read/write through gpas; a range into the hole fails and writes nothing.
  std::vector<uint8_t> data(100, 0xab);
  ASSERT_TRUE(m.Write(0x1000, data).ok());
  std::vector<uint8_t> back(100);
  ASSERT_TRUE(m.Read(0x1000, absl::MakeSpan(back)).ok());
  EXPECT_EQ(back, data);
  const uint64_t end = 2 * kMiB + 8192;
  EXPECT_EQ(m.Write(end - 50, data).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(m.slots()[0].hva[end - 50], 0) << "failed write must change nothing";
}

TEST(GuestMemoryTest, MemfdSharesThePages) {
  GuestMemoryLayout l = Layout({{0, 0, kMiB}, {1, 4 * kMiB, kMiB}});
  l.populate = true;
  l.transparent_hugepages = true;  // only a hint; must not fail
  auto mem = GuestMemory::Create(l);
  ASSERT_TRUE(mem.ok()) << mem.status();
  GuestMemory& m = **mem;
  ASSERT_GE(m.memfd(), 0);
  const Memslot s = m.slots()[1];
  std::memcpy(s.hva + 8192, "ferry", 6);
  // SAFETY: a second, independent MAP_SHARED mapping of the same memfd
  // range, as another process would make; unmapped before the test ends.
  void* p = mmap(nullptr, s.size, PROT_READ, MAP_SHARED, m.memfd(),
                 static_cast<off_t>(s.memfd_offset));
  ASSERT_NE(p, MAP_FAILED);
  EXPECT_STREQ(static_cast<const char*>(p) + 8192, "ferry");
  munmap(p, s.size);
}

TEST(GuestMemoryDeathTest, GuardAfterSlotFaults) {
  auto mem = GuestMemory::Create(Layout({{0, 0, kMiB}, {1, kMiB, kMiB}}));
  ASSERT_TRUE(mem.ok());
  uint8_t* end = (*mem)->slots()[0].hva + kMiB;
  // An overrun off the end of slot 0 hits the PROT_NONE guard, not slot 1.
  EXPECT_DEATH(*reinterpret_cast<volatile uint8_t*>(end) = 1, "");
}

}  // namespace
}  // namespace ferry::mmu
