// glibc malloc thresholds for steady-state training steps; see host_allocator.h.
#include "launch/host_allocator.h"

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace difftrain::launch {
namespace {

constexpr int kMmapThresholdBytes = 32 << 20;  // glibc's upper limit for the threshold
constexpr int kTrimThresholdBytes = 256 << 20;

bool user_tuned_malloc() {
  const char* tunables = std::getenv("GLIBC_TUNABLES");
  return (tunables != nullptr && std::strstr(tunables, "malloc.") != nullptr) ||
         std::getenv("MALLOC_MMAP_THRESHOLD_") != nullptr ||
         std::getenv("MALLOC_TRIM_THRESHOLD_") != nullptr;
}

}  // namespace

std::string configure_host_allocator() {
#if defined(__GLIBC__)
  if (user_tuned_malloc()) return "malloc: user's glibc tunables kept";
  if (mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes) == 1 &&
      mallopt(M_TRIM_THRESHOLD, kTrimThresholdBytes) == 1) {
    return "malloc: mmap threshold 32 MB, trim threshold 256 MB";
  }
  return "malloc: mallopt refused the thresholds; glibc defaults kept";
#else
  return "malloc: not glibc; defaults kept";
#endif
}

}  // namespace difftrain::launch
