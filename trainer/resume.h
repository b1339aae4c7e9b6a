// Resuming a run: which checkpoint to load and whether the current config may continue it.
#pragma once

#include <string>

#include "trainer/config.h"

namespace difftrain::trainer {

// Throws CheckpointError when `now` changes what the checkpoint's weights mean: the model
// (model.* keys, including the image shape) or the diffusion schedule. Logs other changes
// (learning rate, step count, batch, world size) that are allowed. `global_batch_now` and
// `global_batch_then` decide whether the global sample order continues unchanged.
void check_resume_compatible(const Config& now, const Config& then, const std::string& path,
                             int64_t global_batch_now, int64_t global_batch_then, int world_now,
                             int64_t world_then);

}  // namespace difftrain::trainer
