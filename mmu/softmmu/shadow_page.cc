#include "mmu/softmmu/shadow_page.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace ferry::mmu::softmmu {

void SptDeleter::operator()(uint64_t* p) const { std::free(p); }

ShadowPage::ShadowPage(uint64_t gfn_in, PageRole role_in)
    : gfn(gfn_in), role(role_in) {
  void* mem = std::aligned_alloc(4096, kSptEntries * sizeof(uint64_t));
  if (mem == nullptr) throw std::bad_alloc();
  std::memset(mem, 0, kSptEntries * sizeof(uint64_t));
  spt.reset(static_cast<uint64_t*>(mem));
  if (!role.direct()) gfns = std::make_unique<uint64_t[]>(kSptEntries);
}

size_t ShadowPage::BytesFor(bool direct) {
  size_t bytes = sizeof(ShadowPage) + kSptEntries * sizeof(uint64_t);
  if (!direct) bytes += kSptEntries * sizeof(uint64_t);
  return bytes;
}

}  // namespace ferry::mmu::softmmu
