#include "mmu/kvm/vm_dirty_ops.h"

#include "common/status_macros.h"
#include "kmod/caps.h"

namespace ferry::mmu::kvm {

absl::StatusOr<uint64_t> KvmVmDirtyOps::ManualProtectSupport() {
  ASSIGN_OR_RETURN(int bits,
                   vm_->CheckExtension(kmod::Cap::kManualDirtyLogProtect2));
  return bits > 0 ? static_cast<uint64_t>(bits) : 0;
}

}  // namespace ferry::mmu::kvm
