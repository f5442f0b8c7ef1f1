#include "mmu/softmmu/reference_model.h"

#include <cstring>

namespace ferry::mmu::softmmu {

ReferenceModel::ReferenceModel(const std::vector<Memslot>& slots)
    : slots_(slots) {
  for (const Memslot& m : slots_) {
    mem_[m.slot].assign(m.hva, m.hva + m.size);
    logging_[m.slot] = false;
  }
}

uint8_t* ReferenceModel::Ptr(uint64_t gpa) {
  for (const Memslot& m : slots_) {
    if (m.Contains(gpa)) return mem_[m.slot].data() + (gpa - m.gpa);
  }
  return nullptr;
}

void ReferenceModel::Written(uint64_t gpa) {
  for (const Memslot& m : slots_) {
    if (m.Contains(gpa) && logging_[m.slot]) {
      dirty_[m.slot].insert((gpa - m.gpa) / kPageSize);
    }
  }
}

uint64_t ReferenceModel::Load(uint64_t gpa, int size) {
  uint64_t v = 0;
  std::memcpy(&v, Ptr(gpa), size);
  return v;
}

void ReferenceModel::Store(uint64_t gpa, uint64_t v, int size) {
  std::memcpy(Ptr(gpa), &v, size);
  Written(gpa);
}

AccessResult ReferenceModel::Access(const Cpu& cpu, uint64_t gva,
                                    uint8_t* buf, size_t len, bool write) {
  uint64_t gpa = gva;
  if (cpu.mode != PagingMode::kDirect) {
    const bool long_mode = cpu.mode == PagingMode::kLongMode;
    const int size = long_mode ? 8 : 4;
    const int bits = long_mode ? 9 : 10;
    const int top = long_mode ? 4 : 2;
    const uint64_t frame = long_mode ? 0x000FFFFFFFFFF000ull : 0xFFFFF000ull;
    if (!long_mode) gva &= 0xFFFFFFFFull;
    const uint32_t wu = (write ? 2u : 0u) | (cpu.user ? 4u : 0u);
    uint64_t table = cpu.cr3 & frame;
    uint64_t pte_at[5] = {};
    bool can_write = true, can_user = true;
    int leaf = 0;
    for (int level = top; level >= 1; --level) {
      const uint64_t idx = (gva >> (12 + bits * (level - 1))) &
                           ((uint64_t{1} << bits) - 1);
      const uint64_t at = table + idx * size;
      if (Ptr(at) == nullptr) return {AccessStatus::kUnmappedGpa, 0, at};
      const uint64_t e = Load(at, size);
      pte_at[level] = at;
      if (!(e & 1)) return {AccessStatus::kPageFault, wu, gva};
      can_write = can_write && (e & 2);
      can_user = can_user && (e & 4);
      if (level == 1) {
        gpa = (e & frame) | (gva & 0xFFF);
        leaf = 1;
        break;
      }
      if (e & 0x80) {
        if (level != 2) return {AccessStatus::kPageFault, wu | 9, gva};
        leaf = 2;
        if (long_mode) {
          if (e & 0x1FE000) return {AccessStatus::kPageFault, wu | 9, gva};
          gpa = (e & 0x000FFFFFFFE00000ull) | (gva & 0x1FFFFF);
        } else {
          gpa = (e & 0xFFC00000ull) | (gva & 0x3FFFFF);
        }
        break;
      }
      table = e & frame;
    }
    if ((write && !can_write) || (cpu.user && !can_user)) {
      return {AccessStatus::kPageFault, wu | 1, gva};
    }
    for (int level = top; level >= leaf; --level) {
      uint64_t e = Load(pte_at[level], size);
      uint64_t want = 0x20 | (write && level == leaf ? 0x40 : 0);
      if ((e & want) != want) Store(pte_at[level], e | want, size);
    }
  }
  uint8_t* p = Ptr(gpa);
  if (p == nullptr) return {AccessStatus::kUnmappedGpa, 0, gpa};
  if (write) {
    std::memcpy(p, buf, len);
    Written(gpa);
  } else {
    std::memcpy(buf, p, len);
  }
  return {};
}

bool ReferenceModel::WriteGpa(uint64_t gpa, const uint8_t* src, size_t len) {
  for (size_t i = 0; i < len; ++i) {
    if (Ptr(gpa + i) == nullptr) return false;
  }
  for (size_t i = 0; i < len; ++i) {
    *Ptr(gpa + i) = src[i];
    Written(gpa + i);
  }
  return true;
}

void ReferenceModel::EnableLog(uint32_t slot) {
  logging_[slot] = true;
  dirty_[slot].clear();
}

void ReferenceModel::DisableLog(uint32_t slot) { logging_[slot] = false; }

std::vector<uint64_t> ReferenceModel::GetLog(uint32_t slot, bool clear) {
  std::vector<uint64_t> out(dirty_[slot].begin(), dirty_[slot].end());
  if (clear) dirty_[slot].clear();
  return out;
}

void ReferenceModel::ClearLog(uint32_t slot, uint64_t first, uint64_t n) {
  auto& d = dirty_[slot];
  d.erase(d.lower_bound(first), d.lower_bound(first + n));
}

}  // namespace ferry::mmu::softmmu
