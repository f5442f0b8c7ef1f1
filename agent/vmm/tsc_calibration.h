// The host TSC frequency, measured once against CLOCK_MONOTONIC. The KVM
// backend tells the payload this frequency (params.tsc_hz): on kvm_pvm and
// on hosts without TSC scaling the guest's rdtsc ticks at the host rate.
#ifndef FERRY_AGENT_VMM_TSC_CALIBRATION_H_
#define FERRY_AGENT_VMM_TSC_CALIBRATION_H_

#include <cstdint>

#include "absl/time/time.h"

namespace ferry::vmm {

// Measures over `window` (median of 3 windows). Never 0.
uint64_t MeasureTscHz(absl::Duration window);

// MeasureTscHz(20 ms), computed on first use and cached; thread-safe.
uint64_t CalibratedTscHz();

}  // namespace ferry::vmm

#endif  // FERRY_AGENT_VMM_TSC_CALIBRATION_H_
