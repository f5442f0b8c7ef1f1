#include "agent/migration/destination/malloc_tuning.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

namespace ferry::migration {

bool TuneMallocForDataPlane() {
  static std::once_flag once;
  static bool applied = false;
  std::call_once(once, [] {
    const char* env = std::getenv("FERRY_MALLOC_TUNING");
    if (env != nullptr && std::strcmp(env, "0") == 0) return;
#if defined(__GLIBC__)
    // Order matters little; each is independent. See the header for why.
    mallopt(M_ARENA_MAX, 1);                  // before the 2nd thread only
    mallopt(M_MMAP_THRESHOLD, 32 << 20);      // also disables the dynamic one
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    mallopt(M_TOP_PAD, 16 << 20);
    applied = true;
#endif
  });
  return applied;
}

namespace {
// Before main(): see the header (M_ARENA_MAX).
[[maybe_unused]] const bool kTunedAtStartup = TuneMallocForDataPlane();
}  // namespace

}  // namespace ferry::migration
