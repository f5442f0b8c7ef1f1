// What the agent learns about its host at start-up: resources, KVM
// capabilities (probed, never assumed), and the parsing of the flags that
// describe it. Pure functions; agent/main.cc puts them together.
#ifndef FERRY_AGENT_SERVICE_HOST_INFO_H_
#define FERRY_AGENT_SERVICE_HOST_INFO_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "agent/vmm/backend.h"
#include "agent/vmm/soft/memory_port.h"
#include "proto/agent.pb.h"

namespace ferry::service {

// "64MiB", "8GiB", "1.5G", "4096" (bytes); K/M/G are binary, KB/MB/GB
// decimal. INVALID_ARGUMENT otherwise.
absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text);

// "k=v,k2=v2" (empty = none). Keys are non-empty, unique, and must not use
// the agent's reserved prefix "ferry.dev/".
absl::StatusOr<std::map<std::string, std::string>> ParseLabels(
    absl::string_view text);
inline constexpr char kReservedLabelPrefix[] = "ferry.dev/";

struct HostResourcesProbe {
  uint64_t memory_bytes = 0;  // physical RAM
  uint32_t cpus = 0;          // online CPUs
};
HostResourcesProbe ProbeHostResources();

// RAM the agent hands to VMs by default: all of it minus a reserve for the
// host (max(1 GiB, 10%), never more than half).
uint64_t DefaultMemoryCapacity(uint64_t physical_bytes);

// The short host name (gethostname), or "localhost".
std::string HostName();

// KvmCapabilities of the device at `path`. available=false when it cannot
// be opened; `why` (if given) gets the reason.
v1::KvmCapabilities ProbeKvmCapabilities(const std::string& path,
                                         absl::Status* why = nullptr);

// The backends the agent runs, from --backend (auto|kvm|soft).
struct BackendChoice {
  std::unique_ptr<vmm::Backend> kvm;   // null if unusable or not wanted
  std::unique_ptr<vmm::Backend> soft;  // null with --backend=kvm
  absl::Status kvm_status;             // why kvm is null
  v1::VmBackend preferred = v1::VM_BACKEND_SOFT;
  // One line for logs and HostInfo: which backend new VMs get and why.
  std::string summary;
};
// FAILED_PRECONDITION for --backend=kvm without a usable KVM, INVALID_ARGUMENT
// for an unknown mode.
absl::StatusOr<BackendChoice> ChooseBackends(
    absl::string_view mode, const std::string& kvm_device,
    vmm::SoftMemoryPortFactory soft_factory);

}  // namespace ferry::service

#endif  // FERRY_AGENT_SERVICE_HOST_INFO_H_
