#include "mmu/dirty_tracker.h"

namespace ferry::mmu {

absl::string_view DirtyTrackingModeName(DirtyTrackingMode mode) {
  switch (mode) {
    case DirtyTrackingMode::kUnspecified: return "unspecified";
    case DirtyTrackingMode::kBitmap: return "bitmap";
    case DirtyTrackingMode::kClearLog: return "clear-log";
    case DirtyTrackingMode::kRing: return "ring";
    case DirtyTrackingMode::kSoftMmu: return "softmmu";
    case DirtyTrackingMode::kFake: return "fake";
  }
  return "unknown";
}

}  // namespace ferry::mmu
