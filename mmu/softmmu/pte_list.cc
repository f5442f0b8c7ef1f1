#include "mmu/softmmu/pte_list.h"

#include <cassert>

namespace ferry::mmu::softmmu {

PteList& PteList::operator=(PteList&& other) noexcept {
  if (this != &other) {
    Clear();
    head_ = other.head_;
    other.head_ = 0;
  }
  return *this;
}

void PteList::Add(uint64_t* sptep) {
  assert((reinterpret_cast<uintptr_t>(sptep) & 1) == 0);
  if (head_ == 0) {
    head_ = reinterpret_cast<uintptr_t>(sptep);
    return;
  }
  if ((head_ & 1) == 0) {
    auto* d = new PteListDesc;
    d->sptes[0] = reinterpret_cast<uint64_t*>(head_);
    d->sptes[1] = sptep;
    d->count = 2;
    set_desc(d);
    return;
  }
  PteListDesc* head = desc();
  if (head->count == PteListDesc::kExt) {
    auto* d = new PteListDesc;  // new partial block goes in front
    d->more = head;
    set_desc(d);
    head = d;
  }
  head->sptes[head->count++] = sptep;
}

bool PteList::Remove(uint64_t* sptep) {
  if (head_ == 0) return false;
  if ((head_ & 1) == 0) {
    if (reinterpret_cast<uint64_t*>(head_) != sptep) return false;
    head_ = 0;
    return true;
  }
  PteListDesc* head = desc();
  for (PteListDesc* d = head; d != nullptr; d = d->more) {
    for (uint32_t i = 0; i < d->count; ++i) {
      if (d->sptes[i] != sptep) continue;
      // Fill the hole with the head block's last entry: only the head
      // block ever shrinks, so the others stay full.
      d->sptes[i] = head->sptes[--head->count];
      head->sptes[head->count] = nullptr;
      if (head->count == 0) {
        set_desc(head->more);
        delete head;
      }
      // Fold a lone remaining entry back into the single-pointer form.
      PteListDesc* h = desc();
      if (h != nullptr && h->more == nullptr && h->count == 1) {
        uint64_t* only = h->sptes[0];
        delete h;
        head_ = reinterpret_cast<uintptr_t>(only);
      }
      return true;
    }
  }
  return false;
}

bool PteList::Contains(const uint64_t* sptep) const {
  bool found = false;
  ForEach([&](uint64_t* p) { found = found || p == sptep; });
  return found;
}

size_t PteList::Count() const {
  if (head_ == 0) return 0;
  if ((head_ & 1) == 0) return 1;
  size_t n = 0;
  for (const PteListDesc* d = desc(); d != nullptr; d = d->more) n += d->count;
  return n;
}

uint64_t* PteList::First() const {
  if (head_ == 0) return nullptr;
  if ((head_ & 1) == 0) return reinterpret_cast<uint64_t*>(head_);
  return desc()->sptes[0];
}

void PteList::Clear() {
  if ((head_ & 1) != 0) {
    PteListDesc* d = desc();
    while (d != nullptr) {
      PteListDesc* next = d->more;
      delete d;
      d = next;
    }
  }
  head_ = 0;
}

size_t PteList::NumDescs() const {
  if ((head_ & 1) == 0) return 0;
  size_t n = 0;
  for (const PteListDesc* d = desc(); d != nullptr; d = d->more) ++n;
  return n;
}

}  // namespace ferry::mmu::softmmu
