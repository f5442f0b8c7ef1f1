// The ABI header compiles as C++ with its static asserts, and its layout
// regions and stamp encoding behave as documented.
#include "agent/guest/abi.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "gtest/gtest.h"

namespace {

// Mirrors of the C static asserts, so a C++-only consumer breaks the build too.
static_assert(sizeof(ferry_guest_params) <= FERRY_GUEST_PAGE_SIZE, "params page");
static_assert(sizeof(ferry_guest_status) == FERRY_GUEST_PAGE_SIZE, "status page");
static_assert(offsetof(ferry_guest_status, private_state) ==
                  FERRY_GUEST_STATUS_PRIVATE_OFFSET,
              "private state");

TEST(Abi, FixedRegionsAreOrderedAlignedAndDisjoint) {
  // [start, end) of every fixed region in abi.h's memory map, in gpa order.
  const std::vector<std::pair<uint64_t, uint64_t>> regions = {
      {FERRY_GUEST_GDT_GPA, FERRY_GUEST_GDT_GPA + FERRY_GUEST_PAGE_SIZE},
      {FERRY_GUEST_IDT_GPA, FERRY_GUEST_IDT_GPA + FERRY_GUEST_PAGE_SIZE},
      {FERRY_GUEST_PARAMS_GPA, FERRY_GUEST_PARAMS_GPA + FERRY_GUEST_PAGE_SIZE},
      {FERRY_GUEST_PAGE_TABLES_GPA, FERRY_GUEST_PAGE_TABLES_END},
      {FERRY_GUEST_LOAD_GPA, FERRY_GUEST_LOAD_GPA + FERRY_GUEST_PAYLOAD_MAX},
      {FERRY_GUEST_STATUS_GPA, FERRY_GUEST_STATUS_GPA_OF(FERRY_GUEST_MAX_VCPUS)},
      {FERRY_GUEST_STACKS_GPA, FERRY_GUEST_STACK_TOP_OF(FERRY_GUEST_MAX_VCPUS - 1)},
      {FERRY_GUEST_STAMP_TABLE_GPA,
       FERRY_GUEST_STAMP_TABLE_GPA + 8 * FERRY_GUEST_STAMP_TABLE_MAX_PAGES},
      {FERRY_GUEST_WS_GPA, FERRY_GUEST_WS_GPA + FERRY_GUEST_PAGE_SIZE},
  };
  for (size_t i = 0; i < regions.size(); i++) {
    EXPECT_EQ(regions[i].first % FERRY_GUEST_PAGE_SIZE, 0u) << "region " << i;
    EXPECT_LT(regions[i].first, regions[i].second) << "region " << i;
    if (i > 0) {
      EXPECT_LE(regions[i - 1].second, regions[i].first) << "region " << i;
    }
  }
  EXPECT_GE(FERRY_GUEST_PAGE_TABLES_GPA, FERRY_GUEST_PARAMS_GPA + FERRY_GUEST_PAGE_SIZE);
  EXPECT_EQ(FERRY_GUEST_ENTRY_GPA, FERRY_GUEST_LOAD_GPA);
}

TEST(Abi, StacksAreSixteenByteAlignedPerVcpu) {
  for (uint64_t v = 0; v < FERRY_GUEST_MAX_VCPUS; v++) {
    EXPECT_EQ(FERRY_GUEST_STACK_TOP_OF(v) % 16, 0u);
    EXPECT_EQ(FERRY_GUEST_STACK_TOP_OF(v) - FERRY_GUEST_STACK_SIZE,
              FERRY_GUEST_STACKS_GPA + v * FERRY_GUEST_STACK_SIZE);
  }
}

TEST(Abi, StampRoundTripsAndIsNeverZero) {
  const uint64_t s = ferry_stamp_make(0x123456, 63, 0xfffffffe);
  EXPECT_EQ(ferry_stamp_seq(s), 0x123456u);
  EXPECT_EQ(ferry_stamp_vcpu(s), 63u);
  EXPECT_EQ(ferry_stamp_page(s), 0xfffffffeu);
  EXPECT_NE(ferry_stamp_make(0, 0, 0), 0u);
  // The sequence wraps at 2^23 instead of spilling into the marker bit.
  EXPECT_EQ(ferry_stamp_make(FERRY_STAMP_SEQ_MASK + 1, 1, 2),
            ferry_stamp_make(0, 1, 2));
  EXPECT_NE(ferry_stamp_make(1, 0, 5), ferry_stamp_make(1, 1, 5));
  EXPECT_NE(ferry_stamp_make(1, 0, 5), ferry_stamp_make(1, 0, 6));
}

TEST(Abi, EntryConventionConstants) {
  EXPECT_EQ(FERRY_GUEST_USER_CS & 3, 3) << "CPL3 code selector";
  EXPECT_EQ(FERRY_GUEST_USER_DS & 3, 3);
  EXPECT_EQ((FERRY_GUEST_ENTRY_RFLAGS >> 12) & 3, 3) << "IOPL 3 for the event port";
  EXPECT_EQ(FERRY_GUEST_ENTRY_RFLAGS & 0x200, 0) << "interrupts stay off: no IDT";
}

TEST(Abi, ParamsInitPlacesTheStampTable) {
  ferry_guest_params p;
  ferry_guest_params_init(&p, ferry_guest_min_mem_size(1024), 2, FERRY_WL_UNIFORM, 1024);
  EXPECT_EQ(p.magic, FERRY_GUEST_PARAMS_MAGIC);
  EXPECT_EQ(p.version, static_cast<uint64_t>(FERRY_GUEST_ABI_VERSION));
  EXPECT_EQ(p.stamp_table_gpa, static_cast<uint64_t>(FERRY_GUEST_STAMP_TABLE_GPA));
  EXPECT_EQ(p.mem_size, FERRY_GUEST_WS_GPA + 1024 * FERRY_GUEST_PAGE_SIZE);
  EXPECT_EQ(p.vcpu_kind[FERRY_GUEST_MAX_VCPUS - 1], 0u);
  // Past 4 GiB of working set the table moves behind it.
  const uint64_t big = FERRY_GUEST_STAMP_TABLE_MAX_PAGES + 1;
  EXPECT_EQ(ferry_guest_stamp_table_gpa_for(big), FERRY_GUEST_WS_GPA + big * FERRY_GUEST_PAGE_SIZE);
  EXPECT_EQ(ferry_guest_min_mem_size(big),
            FERRY_GUEST_WS_GPA + big * FERRY_GUEST_PAGE_SIZE + 0x800000ull + FERRY_GUEST_PAGE_SIZE);
}

}  // namespace
