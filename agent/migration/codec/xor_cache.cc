#include "agent/migration/codec/xor_cache.h"

#include <cstring>

#include "agent/migration/codec/xor_delta.h"

namespace ferry::migration::codec {

XorCache::XorCache(uint64_t budget_bytes)
    : capacity_(budget_bytes / (kPageBytes + kEntryOverheadBytes)) {
  // Slots are uint32_t indices.
  if (capacity_ > 0xFFFFFFF0u) capacity_ = 0xFFFFFFF0u;
}

uint8_t* XorCache::SlotData(uint32_t slot) const {
  return chunks_[slot / kPagesPerChunk].get() +
         uint64_t{slot % kPagesPerChunk} * kPageBytes;
}

uint64_t XorCache::allocated_bytes() const {
  return uint64_t{chunks_.size()} * kPagesPerChunk * kPageBytes;
}

uint32_t XorCache::AllocateSlot() {
  if (!free_slots_.empty()) {
    const uint32_t s = free_slots_.back();
    free_slots_.pop_back();
    return s;
  }
  if (slot_gfn_.size() < capacity_) {
    const uint32_t s = static_cast<uint32_t>(slot_gfn_.size());
    if (s % kPagesPerChunk == 0) {
      chunks_.emplace_back(new uint8_t[uint64_t{kPagesPerChunk} * kPageBytes]);
    }
    slot_gfn_.push_back(kFreeSlot);
    referenced_.push_back(0);
    return s;
  }
  // Full: CLOCK. Every slot is in use (no free slots), so this terminates
  // within two sweeps.
  const uint32_t n = static_cast<uint32_t>(slot_gfn_.size());
  while (true) {
    const uint32_t s = hand_;
    hand_ = (hand_ + 1) % n;
    if (referenced_[s]) {
      referenced_[s] = 0;
      continue;
    }
    index_.erase(slot_gfn_[s]);
    slot_gfn_[s] = kFreeSlot;
    ++evictions_;
    return s;
  }
}

const uint8_t* XorCache::Lookup(uint64_t gfn) {
  auto it = index_.find(gfn);
  if (it == index_.end()) return nullptr;
  referenced_[it->second] = 1;
  return SlotData(it->second);
}

void XorCache::Put(uint64_t gfn, const uint8_t* page) {
  if (capacity_ == 0) return;
  auto it = index_.find(gfn);
  uint32_t slot;
  if (it != index_.end()) {
    slot = it->second;
  } else {
    slot = AllocateSlot();
    slot_gfn_[slot] = gfn;
    // New entries start unreferenced: a page sent once and never again is
    // the first to go.
    referenced_[slot] = 0;
    index_.emplace(gfn, slot);
  }
  std::memcpy(SlotData(slot), page, kPageBytes);
}

void XorCache::Erase(uint64_t gfn) {
  auto it = index_.find(gfn);
  if (it == index_.end()) return;
  const uint32_t slot = it->second;
  index_.erase(it);
  slot_gfn_[slot] = kFreeSlot;
  referenced_[slot] = 0;
  free_slots_.push_back(slot);
}

void XorCache::Clear() {
  index_.clear();
  free_slots_.clear();
  for (uint32_t s = 0; s < slot_gfn_.size(); ++s) {
    slot_gfn_[s] = kFreeSlot;
    referenced_[s] = 0;
    free_slots_.push_back(s);
  }
}

}  // namespace ferry::migration::codec
