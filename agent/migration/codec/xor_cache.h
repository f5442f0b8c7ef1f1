// The sender's cache of the last copy of each page it sent, for XOR deltas
// (like QEMU's XBZRLE cache). One per Transfer stream, owned by that
// stream's PageBatchEncoder; not thread-safe.
//
// Keyed by gfn. The byte budget covers page data plus per-entry bookkeeping
// (kEntryOverheadBytes, an estimate of the slot record and hash-map entry);
// capacity = budget / (4096 + kEntryOverheadBytes) pages. Page storage grows
// in 1 MiB chunks as entries arrive, so an idle cache costs nothing.
//
// Eviction is CLOCK (second chance): Lookup sets a page's reference bit, the
// hand clears bits until it finds an unreferenced slot. O(1) amortised,
// no list splicing on every hit.
#ifndef FERRY_AGENT_MIGRATION_CODEC_XOR_CACHE_H_
#define FERRY_AGENT_MIGRATION_CODEC_XOR_CACHE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace ferry::migration::codec {

class XorCache {
 public:
  static constexpr uint64_t kEntryOverheadBytes = 48;

  explicit XorCache(uint64_t budget_bytes);
  XorCache(const XorCache&) = delete;
  XorCache& operator=(const XorCache&) = delete;

  // The cached copy of `gfn` (4096 bytes, valid until the next Put/Erase/
  // Clear), or nullptr. Marks the entry recently used.
  const uint8_t* Lookup(uint64_t gfn);
  // Stores a copy of `page` (4096 bytes) as gfn's content, replacing any
  // older copy, evicting another entry if full. No-op when capacity is 0.
  void Put(uint64_t gfn, const uint8_t* page);
  void Erase(uint64_t gfn);
  void Clear();

  uint64_t size() const { return index_.size(); }
  uint64_t capacity() const { return capacity_; }
  uint64_t evictions() const { return evictions_; }
  // Bytes actually allocated for page storage.
  uint64_t allocated_bytes() const;

 private:
  static constexpr uint32_t kPagesPerChunk = 256;
  static constexpr uint64_t kFreeSlot = ~uint64_t{0};

  uint8_t* SlotData(uint32_t slot) const;
  uint32_t AllocateSlot();  // evicts when needed

  uint64_t capacity_ = 0;
  uint64_t evictions_ = 0;
  absl::flat_hash_map<uint64_t, uint32_t> index_;  // gfn -> slot
  std::vector<uint64_t> slot_gfn_;                 // kFreeSlot when free
  std::vector<uint8_t> referenced_;
  std::vector<uint32_t> free_slots_;
  std::vector<std::unique_ptr<uint8_t[]>> chunks_;
  uint32_t hand_ = 0;
};

}  // namespace ferry::migration::codec

#endif  // FERRY_AGENT_MIGRATION_CODEC_XOR_CACHE_H_
