// Resuming a run: which checkpoint to load and whether the current config may continue it.
#pragma once

#include <string>

#include "trainer/config/config.h"

namespace difftrain::trainer {

// Throws CheckpointError naming the first key whose config-table rule is OnResume::kMustMatch
// (the model's shape, what it predicts, the diffusion process) and whose value differs between
// `now` and `then`; logs every other key that changed, and a change of world size.
// `global_batch_now` and `global_batch_then` decide whether the global sample order continues
// unchanged.
void check_resume_compatible(const Config& now, const Config& then, const std::string& path,
                             int64_t global_batch_now, int64_t global_batch_then, int world_now,
                             int64_t world_then);

}  // namespace difftrain::trainer
