// Denoising and image editing by partial diffusion (SDEdit, Meng et al. 2022): noise the input
// to an intermediate timestep, then run the reverse process from there.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

// The timestep a run of `strength` starts from: round(strength * (T - 1)). strength in (0, 1]
// (1 = from pure noise, as sampling); throws std::runtime_error naming the value otherwise.
int64_t denoise_start_timestep(double strength, int64_t timesteps);

// The timesteps a denoising run visits, ascending: the sampler's grid (sampler_timesteps())
// below t_start, then t_start itself, so it ends where the noised input is.
std::vector<int64_t> denoise_timesteps(const NoiseSchedule& schedule, const SamplerOptions& options,
                                       int64_t t_start);

// images float [B, C, H, W] in the data range (on the device to run on) are images
// first_index .. first_index + B - 1 of the run seeded `seed`: each is noised to
// t = denoise_start_timestep(strength) with q_sample() and noise from ImageNoise(seed, i), then
// the reverse process runs over denoise_timesteps(). Returns float32 [B, C, H, W] on the
// images' device.
at::Tensor denoise(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                   const at::Tensor& images, double strength, const SamplerOptions& options,
                   uint64_t seed, int64_t first_index, const StepCallback& on_step = {});

}  // namespace difftrain::trainer
