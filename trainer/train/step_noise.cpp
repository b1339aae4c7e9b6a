// Per-sample generators for timesteps and noise.
#include "trainer/train/step_noise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "trainer/common/rng.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

TimestepDistribution::TimestepDistribution(int64_t timesteps) : timesteps_(timesteps) {}

TimestepDistribution TimestepDistribution::log_normal(const NoiseSchedule& schedule, double mean,
                                                      double std) {
  TimestepDistribution distribution(schedule.timesteps());
  distribution.kind_ = TimestepSampling::kLogNormal;
  distribution.mean_ = mean;
  distribution.std_ = std;
  for (int64_t t = 0; t < schedule.timesteps(); ++t) {
    const double a = schedule.alpha_bar(t);
    distribution.log_sigma_.push_back(0.5 * (std::log1p(-a) - std::log(a)));
  }
  return distribution;
}

int64_t TimestepDistribution::nearest(double log_sigma) const {
  const auto above = std::lower_bound(log_sigma_.begin(), log_sigma_.end(), log_sigma);
  if (above == log_sigma_.begin()) return 0;
  if (above == log_sigma_.end()) return timesteps_ - 1;
  const auto below = above - 1;
  return (log_sigma - *below <= *above - log_sigma ? below : above) - log_sigma_.begin();
}

TimestepDistribution::Draw TimestepDistribution::draw(at::Generator& generator) const {
  if (kind_ == TimestepSampling::kUniform) {
    return {at::randint(timesteps_, {1}, generator, at::kLong).item<int64_t>(), 0.0};
  }
  const double z = at::empty({1}, at::kDouble).normal_(0.0, 1.0, generator).item<double>();
  const double log_sigma = mean_ + std_ * z;
  return {nearest(log_sigma), std::exp(log_sigma)};
}

StepNoise draw_step_noise(uint64_t seed, int64_t step, int64_t first_position, int64_t batch,
                          const TimestepDistribution& timesteps, at::IntArrayRef sample_shape,
                          double label_dropout, bool pin_memory, bool hflip) {
  std::vector<int64_t> shape = {batch};
  shape.insert(shape.end(), sample_shape.begin(), sample_shape.end());
  StepNoise noise;
  const at::TensorOptions host = at::TensorOptions().pinned_memory(pin_memory);
  noise.timesteps = at::empty({batch}, host.dtype(at::kLong));
  noise.sigmas = at::empty({batch}, host.dtype(at::kFloat));
  noise.eps = at::empty(shape, host.dtype(at::kFloat));
  noise.drop_label = at::empty({batch}, host.dtype(at::kBool));
  noise.flip = at::zeros({batch}, host.dtype(at::kBool));
  auto* t = noise.timesteps.data_ptr<int64_t>();
  auto* sigma = noise.sigmas.data_ptr<float>();
  auto* drop = noise.drop_label.data_ptr<bool>();
  auto* flip = noise.flip.data_ptr<bool>();
  for (int64_t i = 0; i < batch; ++i) {
    at::Generator generator =
        at::detail::createCPUGenerator(derive_seed(seed, kNoisePurpose, static_cast<uint64_t>(step),
                                                   static_cast<uint64_t>(first_position + i)));
    const TimestepDistribution::Draw draw = timesteps.draw(generator);
    t[i] = draw.timestep;
    sigma[i] = static_cast<float>(draw.sigma);
    noise.eps[i].normal_(0.0, 1.0, generator);
    drop[i] =
        at::empty({1}, at::kDouble).uniform_(0.0, 1.0, generator).item<double>() < label_dropout;
    if (hflip)
      flip[i] = at::empty({1}, at::kDouble).uniform_(0.0, 1.0, generator).item<double>() < 0.5;
  }
  return noise;
}

}  // namespace difftrain::trainer
