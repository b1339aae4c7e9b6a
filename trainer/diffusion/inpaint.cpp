// RePaint-style replacement of the known region as a StepTransform on the shared reverse process.
#include "trainer/diffusion/inpaint.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

#include <sstream>
#include <stdexcept>

#include "trainer/diffusion/image_noise.h"

namespace difftrain::trainer {

at::Tensor inpaint(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                   const at::Tensor& known, const at::Tensor& fill_mask, int64_t n,
                   const SamplerOptions& options, uint64_t seed, int64_t first_index,
                   const at::Device& device, const StepCallback& on_step) {
  validate(options, schedule.timesteps());
  if (known.dim() != 3 || fill_mask.dim() != 3 || fill_mask.size(1) != known.size(1) ||
      fill_mask.size(2) != known.size(2) ||
      (fill_mask.size(0) != 1 && fill_mask.size(0) != known.size(0)) || n < 1) {
    std::ostringstream message;
    message << "inpaint: image " << known.sizes() << ", mask " << fill_mask.sizes() << ", n = " << n
            << "; want image [C, H, W], mask [1 or C, H, W] and n >= 1";
    throw std::runtime_error(message.str());
  }
  at::NoGradGuard no_grad;
  const at::Tensor known_batch = known.to(device, at::kFloat).unsqueeze(0).expand({n, -1, -1, -1});
  const at::Tensor fill = fill_mask.to(device).ne(0).unsqueeze(0);
  const at::IntArrayRef image_shape = known.sizes();
  ImageNoise noise(seed, first_index, n, /*draw_ahead=*/device.is_cuda());
  const at::TensorOptions timestep_options = at::TensorOptions().dtype(at::kLong).device(device);
  // The known region at timestep t: q(x_t | x_0 = known), with noise from each image's stream.
  const auto known_at = [&](int64_t t) {
    return schedule.q_sample(known_batch, at::full({n}, t, timestep_options),
                             noise.draw(image_shape, device));
  };

  const std::vector<int64_t> timesteps = sampler_timesteps(schedule, options);
  at::Tensor x_T = noise.draw(image_shape, device);
  x_T = at::where(fill, x_T, known_at(timesteps.back()));
  return run_reverse_process(
      predictor, schedule, x_T, timesteps, options, [&] { return noise.draw(image_shape, device); },
      on_step,
      [&](int64_t, int64_t t_next, const at::Tensor& x) {
        return at::where(fill, x, t_next < 0 ? known_batch : known_at(t_next));
      });
}

}  // namespace difftrain::trainer
