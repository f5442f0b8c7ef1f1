// The guest payload image (built from entry.S, guest_main.c and workload.c by
// //agent/guest:payload_bin) embedded as bytes. The VMM copies it to
// kGuestLoadGpa in zeroed guest memory and starts every vCPU at
// kGuestEntryGpa; see abi.h for the registers and page tables it expects.
#ifndef FERRY_AGENT_GUEST_PAYLOAD_H_
#define FERRY_AGENT_GUEST_PAYLOAD_H_

#include <cstddef>
#include <cstdint>

#include "agent/guest/abi.h"

namespace ferry::guest {

extern const unsigned char kGuestPayload[];
extern const size_t kGuestPayloadSize;

inline constexpr uint64_t kGuestLoadGpa = FERRY_GUEST_LOAD_GPA;
inline constexpr uint64_t kGuestEntryGpa = FERRY_GUEST_ENTRY_GPA;
inline constexpr uint64_t kGuestPayloadMax = FERRY_GUEST_PAYLOAD_MAX;

}  // namespace ferry::guest

#endif  // FERRY_AGENT_GUEST_PAYLOAD_H_
