// Config compatibility rules for resuming from a checkpoint.
#include "trainer/checkpoint/resume.h"

#include <spdlog/spdlog.h>

#include "trainer/checkpoint/checkpoint.h"

namespace difftrain::trainer {

void check_resume_compatible(const Config& now, const Config& then, const std::string& path,
                             int64_t global_batch_now, int64_t global_batch_then, int world_now,
                             int64_t world_then) {
  // The config table says which keys a resumed run must keep; the others may change.
  for (const auto& key : config_keys()) {
    const std::string value_now = key.get(now), value_then = key.get(then);
    if (value_now == value_then) continue;
    if (key.on_resume == OnResume::kMustMatch) {
      throw CheckpointError("checkpoint " + path + ": " + key.name + " is " + value_then +
                            " there but " + value_now +
                            " in the config; a run cannot change its model or diffusion process "
                            "(use the original value or a new --run-dir)");
    }
    spdlog::info("resume: {} changed from {} to {}", key.name, value_then, value_now);
  }
  if (world_now != world_then) {
    spdlog::info("resume: {} ranks now, {} when the checkpoint was written", world_now, world_then);
  }
  if (global_batch_now != global_batch_then) {
    spdlog::warn(
        "resume: global batch {} (train.batch_size x ranks x train.grad_accum_steps) "
        "differs from the checkpoint's {}: the sample order from here on differs from "
        "an uninterrupted run; keep the product equal to continue it exactly",
        global_batch_now, global_batch_then);
  }
}

}  // namespace difftrain::trainer
