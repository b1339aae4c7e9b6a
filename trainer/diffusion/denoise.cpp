// SDEdit on the shared reverse process: a cut grid and a noised start.
#include "trainer/diffusion/denoise.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

#include "trainer/diffusion/image_noise.h"

namespace difftrain::trainer {

int64_t denoise_start_timestep(double strength, int64_t timesteps) {
  if (!(strength > 0.0 && strength <= 1.0)) {
    std::ostringstream message;
    message << "--strength " << strength << ": must be in (0, 1]";
    throw std::runtime_error(message.str());
  }
  return std::llround(strength * static_cast<double>(timesteps - 1));
}

std::vector<int64_t> denoise_timesteps(const NoiseSchedule& schedule, const SamplerOptions& options,
                                       int64_t t_start) {
  if (t_start < 0 || t_start >= schedule.timesteps()) {
    throw std::runtime_error("denoise: start timestep " + std::to_string(t_start) +
                             " outside [0, " + std::to_string(schedule.timesteps()) + ")");
  }
  std::vector<int64_t> result;
  for (const int64_t t : sampler_timesteps(schedule, options)) {
    if (t < t_start) result.push_back(t);
  }
  result.push_back(t_start);
  return result;
}

at::Tensor denoise(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                   const at::Tensor& images, double strength, const SamplerOptions& options,
                   uint64_t seed, int64_t first_index, const StepCallback& on_step) {
  validate(options, schedule.timesteps());
  const int64_t t_start = denoise_start_timestep(strength, schedule.timesteps());
  if (images.dim() < 2 || images.numel() == 0) {
    std::ostringstream message;
    message << "denoise: images of shape " << images.sizes() << "; want a non-empty [B, ...]";
    throw std::runtime_error(message.str());
  }
  at::NoGradGuard no_grad;
  const at::Tensor x0 = images.to(at::kFloat);
  const int64_t batch = x0.size(0);
  const at::IntArrayRef image_shape = x0.sizes().slice(1);
  const at::Device device = x0.device();
  ImageNoise noise(seed, first_index, batch, /*draw_ahead=*/device.is_cuda());
  const at::Tensor x_start =
      schedule.q_sample(x0, at::full({batch}, t_start, at::TensorOptions().dtype(at::kLong)),
                        noise.draw(image_shape, device));
  return run_reverse_process(
      predictor, schedule, x_start, denoise_timesteps(schedule, options, t_start), options,
      [&] { return noise.draw(image_shape, device); }, on_step);
}

}  // namespace difftrain::trainer
