// Turns a Config into the objects it describes: U-Net options, noise schedule, sampler options.
#pragma once

#include <memory>

#include "trainer/config/config.h"
#include "trainer/diffusion/prediction.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"
#include "trainer/model/unet.h"
#include "trainer/optim/bucket_adamw.h"

namespace difftrain::trainer {

// The model.* keys as U-Net options (a loaded Config has passed find_shape_problem()).
UNetOptions unet_options(const Config& config);
NoiseSchedule noise_schedule(const Config& config);
// The end-of-run grid's sampler from the `sample.*` keys.
SamplerOptions sampler_options(const Config& config);
// The samplers' predictor for a network trained under `config`: model.prediction's output read
// as eps or v (ddpm formulation), or EDM's preconditioned denoiser (edm; the network is then
// called with c_in x and c_noise in place of x_t and t, and the predictor carries the
// denoiser for the heun sampler). Holds a copy of `network`.
EpsPredictor network_predictor(ModelFunction network, const Config& config);
// train.adam_*, train.weight_decay and train.grad_clip.
AdamWSettings adamw_settings(const Config& config);

// train.channels_last: the memory format of images and 4-D weights.
at::MemoryFormat memory_format(const Config& config);

// Puts every 4-D parameter and buffer of `module` in `format`, in place (set_data: each tensor
// keeps its identity, so an optimizer holding it follows). Set it before gradient buckets, the
// optimizer and the EMA are made, and again after LoadedCheckpoint::load_model (which hands
// models back contiguous).
void set_memory_format(torch::nn::Module& module, at::MemoryFormat format);

}  // namespace difftrain::trainer
