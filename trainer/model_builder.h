// Turns a Config into the objects it describes: U-Net options, noise schedule, sampler options.
#pragma once

#include <memory>

#include "trainer/bucket_adamw.h"
#include "trainer/config.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"
#include "trainer/model/unet.h"

namespace difftrain::trainer {

UNetOptions unet_options(const Config& config);
NoiseSchedule noise_schedule(const Config& config);
// The end-of-run grid's sampler from the `sample.*` keys.
SamplerOptions sampler_options(const Config& config);
// train.adam_*, train.weight_decay and train.grad_clip.
AdamWSettings adamw_settings(const Config& config);

}  // namespace difftrain::trainer
