// The two clocks of a run: seconds since the Unix epoch for what other programs read (metrics,
// logs), and steady seconds for how long something took.
#pragma once

#include <chrono>

namespace difftrain::monitoring {

// Wall-clock time in seconds since the Unix epoch (the unit of Prometheus timestamps).
inline double unix_now_s() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Seconds of the steady clock since `start`.
inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace difftrain::monitoring
