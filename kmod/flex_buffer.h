// Heap storage for the kernel structs that end in a flexible array
// (kvm_msrs, kvm_msr_list, kvm_cpuid2): a header followed by N entries.
#ifndef FERRY_KMOD_FLEX_BUFFER_H_
#define FERRY_KMOD_FLEX_BUFFER_H_

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace ferry::kmod::internal {

template <typename Header, typename Entry>
class FlexBuffer {
 public:
  // The entries start right after the header, as in the C flexible array.
  static_assert(alignof(Header) <= alignof(uint64_t) &&
                    alignof(Entry) <= alignof(uint64_t),
                "storage is 8-byte aligned");
  static_assert(sizeof(Header) % alignof(Entry) == 0,
                "entries must start aligned right after the header");

  explicit FlexBuffer(size_t capacity)
      : storage_((sizeof(Header) + capacity * sizeof(Entry) + 7) / 8),
        capacity_(capacity) {
    // Zeroed by the vector; placement-new starts the objects' lifetimes.
    new (storage_.data()) Header{};
    for (size_t i = 0; i < capacity; ++i) new (&entries()[i]) Entry{};
  }

  Header* header() { return reinterpret_cast<Header*>(storage_.data()); }
  Entry* entries() {
    return reinterpret_cast<Entry*>(
        reinterpret_cast<uint8_t*>(storage_.data()) + sizeof(Header));
  }
  size_t capacity() const { return capacity_; }

 private:
  std::vector<uint64_t> storage_;
  size_t capacity_;
};

}  // namespace ferry::kmod::internal

#endif  // FERRY_KMOD_FLEX_BUFFER_H_
