// Per-sample generators for timesteps and noise.
#include "trainer/train/step_noise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <vector>

#include "trainer/common/rng.h"

namespace difftrain::trainer {

StepNoise draw_step_noise(uint64_t seed, int64_t step, int64_t first_position, int64_t batch,
                          int64_t timesteps, at::IntArrayRef sample_shape, double label_dropout,
                          bool pin_memory) {
  std::vector<int64_t> shape = {batch};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  StepNoise noise;
  const at::TensorOptions host = at::TensorOptions().pinned_memory(pin_memory);
  noise.timesteps = at::empty({batch}, host.dtype(at::kLong));
  noise.eps = at::empty(shape, host.dtype(at::kFloat));
  noise.drop_label = at::empty({batch}, host.dtype(at::kBool));
  auto* t = noise.timesteps.data_ptr<int64_t>();
  auto* drop = noise.drop_label.data_ptr<bool>();
  for (int64_t i = 0; i < batch; ++i) {
    at::Generator generator =
        at::detail::createCPUGenerator(derive_seed(seed, kNoisePurpose, static_cast<uint64_t>(step),
                                                   static_cast<uint64_t>(first_position + i)));
    t[i] = at::randint(timesteps, {1}, generator, at::kLong).item<int64_t>();
    noise.eps[i].normal_(0.0, 1.0, generator);
    drop[i] =
        at::empty({1}, at::kDouble).uniform_(0.0, 1.0, generator).item<double>() < label_dropout;
  }
  return noise;
}

}  // namespace difftrain::trainer
