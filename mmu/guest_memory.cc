#include "mmu/guest_memory.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; absent from older libc headers.
#endif
#ifndef MFD_CLOEXEC
#define MFD_CLOEXEC 0x0001U
#endif

namespace ferry::mmu {
namespace {

constexpr uint64_t kHugeAlign = uint64_t{2} << 20;  // x86 2 MiB page
constexpr uint64_t kGuard = kHugeAlign;

uint64_t RoundUp(uint64_t v, uint64_t align) {
  return (v + align - 1) / align * align;
}

absl::Status ErrnoStatus(int err, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(err),
                      absl::StrCat(what, ": ", strerror(err)));
}

std::string SlotName(const MemslotSpec& s) {
  return absl::StrFormat("slot %u [gpa 0x%x, +0x%x)", s.slot, s.gpa, s.size);
}

// Writes one byte per page; only used when MADV_POPULATE_WRITE is missing.
void TouchEachPage(uint8_t* base, uint64_t size) {
  for (uint64_t off = 0; off < size; off += kPageSize) {
    // SAFETY: [base, base + size) is a fresh, writable MAP_SHARED mapping of
    // a new memfd, so every byte is zero and nothing else uses it yet; the
    // volatile store forces the fault without changing the contents.
    *reinterpret_cast<volatile uint8_t*>(base + off) = 0;
  }
}

}  // namespace

absl::StatusOr<GuestMemoryLayout> DefaultLayout(uint64_t ram_bytes,
                                                uint64_t max_slot_bytes) {
  if (ram_bytes == 0 || ram_bytes % kPageSize != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "guest RAM size %u must be a non-zero multiple of %u bytes", ram_bytes,
        kPageSize));
  }
  if (max_slot_bytes == 0 || max_slot_bytes % kPageSize != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "max slot size %u must be a non-zero multiple of %u bytes",
        max_slot_bytes, kPageSize));
  }
  GuestMemoryLayout layout;
  uint32_t id = 0;
  for (uint64_t gpa = 0; gpa < ram_bytes; gpa += max_slot_bytes) {
    layout.slots.push_back(
        MemslotSpec{id++, gpa, std::min(max_slot_bytes, ram_bytes - gpa)});
  }
  return layout;
}

absl::Status ValidateLayout(const GuestMemoryLayout& layout) {
  if (layout.slots.empty()) {
    return absl::InvalidArgumentError("guest memory layout has no memslots");
  }
  absl::flat_hash_set<uint32_t> ids;
  for (const MemslotSpec& s : layout.slots) {
    if (s.size == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(SlotName(s), ": size is 0; give every slot memory"));
    }
    if (s.size % kPageSize != 0 || s.gpa % kPageSize != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "%s: gpa and size must be multiples of the %u-byte page", SlotName(s),
          kPageSize));
    }
    if (s.gpa + s.size < s.gpa) {
      return absl::InvalidArgumentError(
          absl::StrCat(SlotName(s), ": end overflows the guest address space"));
    }
    if (!ids.insert(s.slot).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(SlotName(s), ": slot id used twice"));
    }
  }
  std::vector<MemslotSpec> sorted = layout.slots;
  std::sort(sorted.begin(), sorted.end(),
            [](const MemslotSpec& a, const MemslotSpec& b) { return a.gpa < b.gpa; });
  for (size_t i = 1; i < sorted.size(); ++i) {
    const MemslotSpec& prev = sorted[i - 1];
    if (prev.gpa + prev.size > sorted[i].gpa) {
      return absl::InvalidArgumentError(absl::StrCat(
          SlotName(prev), " overlaps ", SlotName(sorted[i]),
          "; memslots must cover disjoint guest-physical ranges"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<GuestMemory>> GuestMemory::Create(
    const GuestMemoryLayout& layout) {
  RETURN_IF_ERROR(ValidateLayout(layout));
  std::unique_ptr<GuestMemory> mem(new GuestMemory());

  std::vector<MemslotSpec> specs = layout.slots;
  std::sort(specs.begin(), specs.end(),
            [](const MemslotSpec& a, const MemslotSpec& b) { return a.gpa < b.gpa; });
  uint64_t file_size = 0;
  uint64_t va_size = 0;
  for (const MemslotSpec& s : specs) {
    file_size = RoundUp(file_size, kHugeAlign) + s.size;
    va_size += RoundUp(s.size, kHugeAlign) + kGuard;
    mem->total_bytes_ += s.size;
  }

  mem->memfd_ = memfd_create(layout.name.c_str(), MFD_CLOEXEC);
  if (mem->memfd_ < 0) return ErrnoStatus(errno, "memfd_create(guest RAM)");
  if (ftruncate(mem->memfd_, static_cast<off_t>(file_size)) != 0) {
    return ErrnoStatus(errno, absl::StrCat("ftruncate(guest RAM memfd, ",
                                           file_size, ")"));
  }
  mem->memfd_size_ = file_size;

  // Reserve address space (PROT_NONE, no backing) with room to align.
  const uint64_t reserve = va_size + kHugeAlign;
  // SAFETY: an anonymous PROT_NONE mapping at a kernel-chosen address
  // overlaps nothing; it only reserves address space that we own and release
  // in the destructor.
  void* r = mmap(nullptr, reserve, PROT_NONE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (r == MAP_FAILED) {
    return ErrnoStatus(errno, absl::StrCat("mmap reserve ", reserve, " bytes"));
  }
  mem->reservation_ = static_cast<uint8_t*>(r);
  mem->reservation_size_ = reserve;

  // SAFETY: converting an address to an integer and back within the same
  // reservation; the aligned pointer stays inside [r, r + reserve).
  uint8_t* va = reinterpret_cast<uint8_t*>(
      RoundUp(reinterpret_cast<uintptr_t>(r), kHugeAlign));
  uint64_t file_off = 0;
  for (const MemslotSpec& s : specs) {
    file_off = RoundUp(file_off, kHugeAlign);
    // SAFETY: MAP_FIXED replaces only pages inside our own PROT_NONE
    // reservation (va + size ≤ aligned base + va_size ≤ r + reserve), never
    // someone else's mapping. MAP_SHARED of the memfd makes the pages the
    // same ones another process sees through the fd.
    void* p = mmap(va, s.size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
                   mem->memfd_, static_cast<off_t>(file_off));
    if (p == MAP_FAILED) {
      return ErrnoStatus(errno, absl::StrCat("mmap ", SlotName(s)));
    }
    if (layout.transparent_hugepages) {
      // SAFETY: madvise on a range we just mapped; MADV_HUGEPAGE changes no
      // contents. EINVAL means a kernel without THP: keep 4 KiB pages.
      mem->thp_advised_ = madvise(p, s.size, MADV_HUGEPAGE) == 0;
    }
    if (layout.populate) {
      // SAFETY: populating our own fresh mapping writes no data.
      if (madvise(p, s.size, MADV_POPULATE_WRITE) != 0) {
        if (errno != EINVAL) {
          return ErrnoStatus(errno, absl::StrCat("MADV_POPULATE_WRITE ",
                                                 SlotName(s)));
        }
        TouchEachPage(static_cast<uint8_t*>(p), s.size);  // pre-5.14 kernel
      }
    }
    mem->slots_.push_back(Memslot{s.slot, s.gpa, s.size,
                                  static_cast<uint8_t*>(p), file_off});
    va += RoundUp(s.size, kHugeAlign) + kGuard;
    file_off += s.size;
  }
  return mem;
}

GuestMemory::~GuestMemory() {
  // SAFETY: the slots are MAP_FIXED inside the reservation, so one munmap
  // releases them all; nothing may use an hva after the object dies.
  if (reservation_ != nullptr) munmap(reservation_, reservation_size_);
  if (memfd_ >= 0) close(memfd_);
}

void GuestMemory::ForEachSlot(
    absl::FunctionRef<void(const Memslot&)> fn) const {
  for (const Memslot& s : slots_) fn(s);
}

absl::StatusOr<Memslot> GuestMemory::FindSlot(uint64_t gpa) const {
  // Slots are sorted by gpa: the candidate is the last one starting ≤ gpa.
  auto it = std::upper_bound(
      slots_.begin(), slots_.end(), gpa,
      [](uint64_t g, const Memslot& s) { return g < s.gpa; });
  if (it != slots_.begin() && std::prev(it)->Contains(gpa)) return *std::prev(it);
  return absl::NotFoundError(
      absl::StrFormat("gpa 0x%x is not backed by any memslot", gpa));
}

absl::StatusOr<Memslot> GuestMemory::SlotById(uint32_t slot) const {
  for (const Memslot& s : slots_) {
    if (s.slot == slot) return s;
  }
  return absl::NotFoundError(absl::StrCat("no memslot with id ", slot));
}

absl::StatusOr<uint8_t*> GuestMemory::GpaToHva(uint64_t gpa,
                                               uint64_t len) const {
  ASSIGN_OR_RETURN(Memslot s, FindSlot(gpa));
  const uint64_t off = gpa - s.gpa;
  if (len > s.size - off) {
    return absl::OutOfRangeError(absl::StrFormat(
        "gpa range [0x%x, +0x%x) runs past the end of slot %u (ends at 0x%x)",
        gpa, len, s.slot, s.gpa + s.size));
  }
  return s.hva + off;
}

absl::StatusOr<absl::Span<uint8_t>> GuestMemory::Range(uint64_t gpa,
                                                       uint64_t len) const {
  ASSIGN_OR_RETURN(uint8_t * hva, GpaToHva(gpa, len));
  return absl::Span<uint8_t>(hva, len);
}

absl::Status GuestMemory::Read(uint64_t gpa, absl::Span<uint8_t> out) const {
  uint64_t done = 0;
  while (done < out.size()) {
    ASSIGN_OR_RETURN(Memslot s, FindSlot(gpa + done));
    const uint64_t off = gpa + done - s.gpa;
    const uint64_t n = std::min<uint64_t>(out.size() - done, s.size - off);
    // SAFETY: [hva + off, + n) lies inside slot s (n ≤ size - off). Guest
    // memory may change under us; a racy read only yields stale bytes.
    std::memcpy(out.data() + done, s.hva + off, n);
    done += n;
  }
  return absl::OkStatus();
}

absl::Status GuestMemory::Write(uint64_t gpa, absl::Span<const uint8_t> data) {
  // Check the whole range first so a failed write changes nothing.
  for (uint64_t done = 0; done < data.size();) {
    ASSIGN_OR_RETURN(Memslot s, FindSlot(gpa + done));
    done += std::min<uint64_t>(data.size() - done, s.size - (gpa + done - s.gpa));
  }
  uint64_t done = 0;
  while (done < data.size()) {
    ASSIGN_OR_RETURN(Memslot s, FindSlot(gpa + done));
    const uint64_t off = gpa + done - s.gpa;
    const uint64_t n = std::min<uint64_t>(data.size() - done, s.size - off);
    // SAFETY: [hva + off, + n) lies inside slot s, which is mapped writable.
    std::memcpy(s.hva + off, data.data() + done, n);
    done += n;
  }
  return absl::OkStatus();
}

}  // namespace ferry::mmu
