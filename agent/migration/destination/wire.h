// Wire helpers both migration ends share (agent/migration/source depends on
// this target): the page-to-stream mapping, memory holes, layouts and the
// memory digest of Switchover. Page batches are encoded and decoded by
// agent/migration/codec (one encoder / decoder per Transfer stream);
// CRC-32C is codec/crc32c.h.
#ifndef FERRY_AGENT_MIGRATION_DESTINATION_WIRE_H_
#define FERRY_AGENT_MIGRATION_DESTINATION_WIRE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mmu/guest_memory.h"
#include "proto/migration.pb.h"

namespace ferry::migration {

inline constexpr uint64_t kStripeBytes =
    v1::WIRE_CONSTANT_STREAM_STRIPE_BYTES;
inline constexpr uint32_t kMaxBatchPayloadBytes =
    v1::WIRE_CONSTANT_MAX_BATCH_PAYLOAD_BYTES;
inline constexpr uint32_t kMaxRunsPerBatch = v1::WIRE_CONSTANT_MAX_RUNS_PER_BATCH;
inline constexpr uint32_t kMaxStreams = 16;

// migration.proto "Ordering": a page always travels on this stream.
inline uint32_t StreamForGpa(uint64_t gpa, uint32_t stream_count) {
  return static_cast<uint32_t>((gpa / kStripeBytes) % stream_count);
}

// Pages [first, result) of `slot` starting at `page` that are holes in the
// memfd (never written, so zero) — found with lseek(SEEK_DATA) instead of
// reading them, which would fault in (and allocate) untouched guest RAM.
// Returns `page` itself when that page is backed. Racy by nature: use it
// only where a later write is caught by dirty tracking or the VM is paused.
uint64_t HoleEnd(const mmu::GuestMemory& memory, const mmu::Memslot& slot,
                 uint64_t page);
// The other half: the end of the backed extent that holds `page`
// (lseek(SEEK_HOLE)), at least page + 1 and at most slot.npages(). With
// HoleEnd it splits a range into exact data and hole extents.
uint64_t DataEnd(const mmu::GuestMemory& memory, const mmu::Memslot& slot,
                 uint64_t page);

// The layout as the wire describes it (VmState.memory, Hello.memory).
v1::MemoryLayout LayoutOf(const mmu::GuestMemory& memory);
// OK if `got` describes exactly `want`; otherwise FAILED_PRECONDITION
// naming the first difference.
absl::Status CompareLayouts(const v1::MemoryLayout& want,
                            const v1::MemoryLayout& got);

// DIGEST_ALGORITHM_CRC32C_OF_PAGES over `memory`. FULL: every page.
// SAMPLED: `sample_pages` pages chosen from all of memory by `seed` (the
// same choice on both sides). NONE: an empty digest. Read racily; call it
// with the vCPUs paused. `known_zero(gfn)` true: the caller knows the page
// is zero (e.g. never written since it was populated with zeros), so it is
// not read — reading cold memory costs far more than hashing.
v1::MemoryDigest ComputeDigest(const mmu::GuestMemory& memory,
                               v1::MemoryVerification coverage, uint64_t seed,
                               uint32_t sample_pages,
                               const std::function<bool(uint64_t gfn)>& known_zero = nullptr);
// OK if equal; DATA_LOSS naming the first memslot that differs.
absl::Status CompareDigests(const v1::MemoryDigest& want,
                            const v1::MemoryDigest& got);

}  // namespace ferry::migration

#endif  // FERRY_AGENT_MIGRATION_DESTINATION_WIRE_H_
