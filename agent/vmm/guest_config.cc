#include "agent/vmm/guest_config.h"

#include <cmath>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace ferry::vmm {
namespace {

constexpr uint64_t kPage = FERRY_GUEST_PAGE_SIZE;
// Below this the payload has no room for a working set at all.
constexpr uint64_t kMinMemoryBytes = FERRY_GUEST_WS_GPA + kPage;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("VmSpec.", field, ": ", what));
}

absl::Status CheckMemory(uint64_t bytes) {
  if (bytes == 0) {
    return Invalid("memory_bytes",
                   absl::StrCat("is 0; give the guest at least ",
                                kMinMemoryBytes, " bytes (16 MiB + 4 KiB)"));
  }
  if (bytes % kPage != 0) {
    return Invalid("memory_bytes",
                   absl::StrCat(bytes, " is not a multiple of the ", kPage,
                                "-byte page; round it to whole pages"));
  }
  if (bytes < kMinMemoryBytes) {
    return Invalid("memory_bytes",
                   absl::StrCat(bytes, " is too small for the guest layout "
                                "(fixed area up to 16 MiB, then the working "
                                "set); use at least ", kMinMemoryBytes));
  }
  return absl::OkStatus();
}

absl::Status CheckVcpus(uint32_t count, uint32_t max_vcpus) {
  if (count == 0) return Invalid("vcpu_count", "is 0; set 1 or more");
  if (count > max_vcpus) {
    return Invalid("vcpu_count",
                   absl::StrCat(count, " exceeds this backend's limit of ",
                                max_vcpus, "; lower it"));
  }
  return absl::OkStatus();
}

absl::Status CheckBackend(const v1::VmSpec& spec) {
  if (spec.backend() < 0 || spec.backend() > v1::VM_BACKEND_AUTO) {
    return Invalid("backend", absl::StrCat("unknown value ", spec.backend(),
                                           "; use KVM, SOFT or AUTO"));
  }
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> ResolveWorkingSet(const v1::Workload& w,
                                           uint64_t memory_bytes) {
  const uint64_t max_pages = MaxWorkingSetPages(memory_bytes);
  if (w.working_set_bytes() == 0) return max_pages;
  if (w.working_set_bytes() % kPage != 0) {
    return Invalid("workload.working_set_bytes",
                   absl::StrCat(w.working_set_bytes(), " is not a multiple of ",
                                kPage, "; round it to whole pages"));
  }
  const uint64_t pages = w.working_set_bytes() / kPage;
  if (pages > max_pages) {
    return Invalid("workload.working_set_bytes",
                   absl::StrCat(w.working_set_bytes(), " does not fit in ",
                                memory_bytes, " bytes of memory (at most ",
                                max_pages * kPage, "); raise memory_bytes, "
                                "lower the working set, or pass 0 for all"));
  }
  return pages;
}

absl::StatusOr<uint64_t> Permille(absl::string_view field, double value,
                                  uint64_t default_permille, bool allow_zero) {
  if (value == 0 && !allow_zero) return default_permille;
  if (!(value >= 0 && value <= 1)) {
    return Invalid(field, absl::StrCat(value, " is outside [0, 1]"));
  }
  return static_cast<uint64_t>(std::llround(value * 1000));
}

absl::Status ResolveMixed(const v1::Workload& w, uint32_t vcpus,
                          GuestConfig* config) {
  // vm.proto: vCPUs without an override are IDLE.
  config->vcpu_kind.assign(vcpus, FERRY_WL_IDLE);
  for (const v1::VcpuWorkload& o : w.vcpu_overrides()) {
    const std::string field =
        absl::StrCat("workload.vcpu_overrides[vcpu ", o.vcpu_index(), "]");
    if (o.vcpu_index() >= vcpus) {
      return Invalid(field, absl::StrCat("vCPU index is >= vcpu_count ", vcpus));
    }
    const uint64_t kind = WorkloadKindToAbi(o.workload().kind());
    if (kind == FERRY_WL_UNSPECIFIED || kind == FERRY_WL_MIXED) {
      return Invalid(field, "kind must be IDLE, UNIFORM, HOTCOLD or SEQUENTIAL");
    }
    if (o.workload().working_set_bytes() != 0 ||
        o.workload().dirty_rate_bytes_per_s() != 0) {
      // The ABI (abi.h) has one working set and one rate per VM.
      return Invalid(field, "per-vCPU working_set_bytes and "
                            "dirty_rate_bytes_per_s are not supported by the "
                            "guest ABI yet; set them on the top-level workload");
    }
    config->vcpu_kind[o.vcpu_index()] = kind;
  }
  return absl::OkStatus();
}

absl::Status ResolveWorkload(const v1::Workload& w, GuestConfig* config) {
  config->kind = WorkloadKindToAbi(w.kind());
  if (config->kind == FERRY_WL_UNSPECIFIED) {
    return Invalid("workload.kind",
                   absl::StrCat("unknown or unset workload ", w.kind(),
                                "; use IDLE, UNIFORM, HOTCOLD, SEQUENTIAL or "
                                "MIXED"));
  }
  if (config->kind != FERRY_WL_MIXED && w.vcpu_overrides_size() != 0) {
    return Invalid("workload.vcpu_overrides", "only allowed with kind MIXED");
  }
  ASSIGN_OR_RETURN(config->ws_pages,
                   ResolveWorkingSet(w, config->memory_bytes));
  // One write dirties one page; round up so a small non-zero rate is not 0
  // (which would mean "unthrottled").
  config->dirty_pages_per_sec = (w.dirty_rate_bytes_per_s() + kPage - 1) / kPage;
  ASSIGN_OR_RETURN(config->hot_fraction_permille,
                   Permille("workload.hot_fraction", w.hot_fraction(), 100,
                            /*allow_zero=*/false));
  ASSIGN_OR_RETURN(config->hot_probability_permille,
                   Permille("workload.hot_probability", w.hot_probability(),
                            900, /*allow_zero=*/false));
  if (config->kind == FERRY_WL_MIXED) {
    RETURN_IF_ERROR(ResolveMixed(w, config->vcpu_count, config));
  }
  switch (w.page_fill()) {
    case v1::PAGE_FILL_UNSPECIFIED:
    case v1::PAGE_FILL_STAMP:
      config->fill_words = 0;
      break;
    case v1::PAGE_FILL_RANDOM:
      config->fill_words = FERRY_FILL_WORDS_MAX;
      break;
    default:
      return Invalid("workload.page_fill",
                     absl::StrCat("unknown value ", w.page_fill(),
                                  "; use PAGE_FILL_STAMP or PAGE_FILL_RANDOM"));
  }
  return absl::OkStatus();
}

}  // namespace

uint64_t WorkloadKindToAbi(v1::WorkloadKind kind) {
  switch (kind) {
    case v1::WORKLOAD_KIND_IDLE:
      return FERRY_WL_IDLE;
    case v1::WORKLOAD_KIND_UNIFORM:
      return FERRY_WL_UNIFORM;
    case v1::WORKLOAD_KIND_HOTCOLD:
      return FERRY_WL_HOTCOLD;
    case v1::WORKLOAD_KIND_SEQUENTIAL:
      return FERRY_WL_SEQUENTIAL;
    case v1::WORKLOAD_KIND_MIXED:
      return FERRY_WL_MIXED;
    default:
      return FERRY_WL_UNSPECIFIED;
  }
}

uint64_t MaxWorkingSetPages(uint64_t memory_bytes) {
  if (memory_bytes <= FERRY_GUEST_WS_GPA) return 0;
  uint64_t pages = (memory_bytes - FERRY_GUEST_WS_GPA) / kPage;
  if (pages <= FERRY_GUEST_STAMP_TABLE_MAX_PAGES) return pages;
  // Out-of-line table: 8 bytes per page after the working set.
  pages = (memory_bytes - FERRY_GUEST_WS_GPA) / (kPage + 8);
  while (pages > 0 && ferry_guest_min_mem_size(pages) > memory_bytes) --pages;
  return pages;
}

absl::StatusOr<GuestConfig> ResolveGuestConfig(const v1::VmSpec& spec,
                                               uint32_t max_vcpus,
                                               uint64_t fallback_seed) {
  RETURN_IF_ERROR(CheckMemory(spec.memory_bytes()));
  RETURN_IF_ERROR(CheckVcpus(spec.vcpu_count(), max_vcpus));
  RETURN_IF_ERROR(CheckBackend(spec));
  GuestConfig config;
  config.memory_bytes = spec.memory_bytes();
  config.vcpu_count = spec.vcpu_count();
  RETURN_IF_ERROR(ResolveWorkload(spec.workload(), &config));
  config.seed = spec.workload().seed() != 0 ? spec.workload().seed()
                                            : (fallback_seed | 1);
  return config;
}

ferry_guest_params MakeGuestParams(const GuestConfig& config, uint64_t tsc_hz) {
  ferry_guest_params p;
  ferry_guest_params_init(&p, config.memory_bytes, config.vcpu_count,
                          config.kind, config.ws_pages);
  p.target_dirty_pages_per_sec = config.dirty_pages_per_sec;
  p.tsc_hz = tsc_hz;
  p.seed = config.seed;
  p.hot_fraction_permille = config.hot_fraction_permille;
  p.hot_probability_permille = config.hot_probability_permille;
  p.verify_interval_batches = config.verify_interval_batches;
  p.verify_chunk_pages = config.verify_chunk_pages;
  p.fill_words = config.fill_words;
  for (size_t i = 0; i < config.vcpu_kind.size() && i < FERRY_GUEST_MAX_VCPUS;
       ++i) {
    p.vcpu_kind[i] = config.vcpu_kind[i];
  }
  return p;
}

}  // namespace ferry::vmm
