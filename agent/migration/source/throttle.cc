#include "agent/migration/source/throttle.h"

#include <algorithm>

namespace ferry::migration {

absl::Status VmThrottle::Set(uint32_t percent) {
  changed_ = true;
  return vm_->SetThrottle(std::min<uint32_t>(percent, 99));
}

absl::Status VmThrottle::Reset() {
  if (!changed_) return absl::OkStatus();
  changed_ = false;
  return vm_->SetThrottle(0);
}

}  // namespace ferry::migration
