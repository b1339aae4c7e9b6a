// Config compatibility rules for resuming from a checkpoint.
#include "trainer/resume.h"

#include <spdlog/spdlog.h>

#include "trainer/checkpoint.h"

namespace difftrain::trainer {

void check_resume_compatible(const Config& now, const Config& then, const std::string& path,
                             int64_t global_batch_now, int64_t global_batch_then, int world_now,
                             int64_t world_then) {
  const auto& a = now.model;
  const auto& b = then.model;
  auto differs = [&](const std::string& key, const std::string& x, const std::string& y) {
    if (x != y) {
      throw CheckpointError("checkpoint " + path + ": " + key + " is " + y + " there but " + x +
                            " in the config; a run cannot change its model or "
                            "data shape (use the original value or a new --run-dir)");
    }
  };
  auto list = [](const std::vector<int64_t>& v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
    return s + "]";
  };
  differs("model.in_channels", std::to_string(a.in_channels), std::to_string(b.in_channels));
  differs("model.image_size", std::to_string(a.image_size), std::to_string(b.image_size));
  differs("model.channels", std::to_string(a.channels), std::to_string(b.channels));
  differs("model.channel_mult", list(a.channel_mult), list(b.channel_mult));
  differs("model.num_res_blocks", std::to_string(a.num_res_blocks),
          std::to_string(b.num_res_blocks));
  differs("model.attention_resolutions", list(a.attention_resolutions),
          list(b.attention_resolutions));
  differs("diffusion.schedule", now.diffusion.schedule, then.diffusion.schedule);
  differs("diffusion.timesteps", std::to_string(now.diffusion.timesteps),
          std::to_string(then.diffusion.timesteps));

  if (now.train.lr != then.train.lr) {
    spdlog::info("resume: train.lr changed from {} to {}", then.train.lr, now.train.lr);
  }
  if (now.train.steps != then.train.steps) {
    spdlog::info("resume: train.steps changed from {} to {}", then.train.steps, now.train.steps);
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
