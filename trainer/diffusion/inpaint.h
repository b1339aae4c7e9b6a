// Inpainting with an unconditional diffusion model (RePaint, Lugmayr et al. 2022, without the
// resampling jumps): after every reverse step the known region of x is replaced by the known
// image noised to the timestep the sampler is now at, and at the end by the known pixels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>

#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

// Images first_index .. first_index + n - 1 of the run seeded `seed`, all completing the same
// `known` image: known float [C, H, W] in the data range, fill_mask [1 or C, H, W] (non-zero =
// generate, zero = keep known's pixel). Every sampler kind works (the replacement acts on the
// state between steps). Image i's noise (x_T, step noise, the noise of the known region) comes
// from ImageNoise(seed, i), so the result does not depend on the batching. The result's kept
// pixels equal `known` exactly. Returns float32 [n, C, H, W] on `device`. Throws
// std::runtime_error naming the shapes if fill_mask does not fit known, or n < 1.
at::Tensor inpaint(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                   const at::Tensor& known, const at::Tensor& fill_mask, int64_t n,
                   const SamplerOptions& options, uint64_t seed, int64_t first_index,
                   const at::Device& device, const StepCallback& on_step = {});

}  // namespace difftrain::trainer
