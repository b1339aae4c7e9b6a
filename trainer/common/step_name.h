// The one naming rule for a run's per-step files: step-000001200.ckpt, samples/step-000001200.png,
// eval/step-000001200.json (nine digits, so that names sort in step order).
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace difftrain::trainer {

// "step-<step, 9 digits>" + extension (".ckpt", ".png", ".json").
inline std::string step_file_name(int64_t step, const std::string& extension) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%09lld", static_cast<long long>(step));
  return name + extension;
}

}  // namespace difftrain::trainer
