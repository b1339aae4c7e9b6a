// Helpers shared by the trainer unit tests.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"
#include "trainer/model/unet.h"

namespace difftrain::trainer::test_util {

// The message of the exception `action` throws, or "<no exception>" when it returns normally:
// tests check the one-line errors users see.
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "<no exception>";
}

// A small U-Net for tests: two levels of 32 and 64 channels, one residual block each, attention
// at the lower level (image_size / 2), no dropout.
inline UNetOptions small_unet_options(int64_t image_size, int64_t in_channels = 1) {
  UNetOptions options;
  options.in_channels = in_channels;
  options.image_size = image_size;
  options.channels = 32;
  options.channel_mult = {1, 2};
  options.num_res_blocks = 1;
  options.attention_resolutions = {image_size / 2};
  options.dropout = 0.0;
  return options;
}

// Every parameter from N(0, std^2): DDPM zero-initialises the output convolution, so a fresh
// model predicts 0 everywhere.
inline void randomise_parameters(UNet& model, double std) {
  torch::NoGradGuard no_grad;
  for (auto& parameter : model->parameters()) parameter.normal_(0.0, std);
}

// A small_unet_options(image_size) U-Net with parameters from N(0, 0.05^2) after
// torch::manual_seed(seed) (so every rank builds the same one), in eval mode, as an
// eps-predictor (x, t) -> eps that keeps the module alive.
inline std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> random_unet_eps(
    uint64_t seed, int64_t image_size = 8) {
  torch::manual_seed(seed);
  UNet model(small_unet_options(image_size));
  randomise_parameters(model, 0.05);
  model->eval();
  return [model](const torch::Tensor& x, const torch::Tensor& t) mutable {
    return model->forward(x, t);
  };
}

// The exact (MMSE) eps-predictor for data x0 ~ N(mu, s^2) per element: x_t ~ N(sqrt(a) mu, v)
// with v = a s^2 + 1 - a and Cov(eps, x_t) = sqrt(1 - a), so E[eps | x_t] = sqrt(1-a) (x_t -
// sqrt(a) mu) / v. Holds a reference to `schedule`. The samplers pass one timestep for the whole
// batch, so the coefficients are scalars.
inline EpsPredictor gaussian_eps_predictor(const NoiseSchedule& schedule, double mu, double s) {
  return [&schedule, mu, s](const torch::Tensor& x, const torch::Tensor& t) {
    const int64_t step = t[0].item<int64_t>();
    if (!torch::equal(t, torch::full_like(t, step))) {
      throw std::logic_error("gaussian_eps_predictor: timesteps differ within the batch");
    }
    const double a = schedule.alpha_bar(step);
    return (x - std::sqrt(a) * mu) * (std::sqrt(1 - a) / (a * s * s + 1 - a));
  };
}

// x_t of Gaussian data N(mu, s^2) standardised, w = (x_t - sqrt(a) mu) / sqrt(a s^2 + 1 - a):
// N(0, 1) under the data, and what the probability-flow ODE keeps along its path.
inline torch::Tensor standardised(const torch::Tensor& x_t, double alpha_bar, double mu, double s) {
  return (x_t.to(torch::kDouble) - std::sqrt(alpha_bar) * mu) /
         std::sqrt(alpha_bar * s * s + 1 - alpha_bar);
}

// Deterministic DDIM on Gaussian data N(mu, s^2) with the exact predictor, by geometry rather
// than by the sampler's formula. With u = (x0 - mu) / s and the noise e, both N(0, 1), the
// standardised state is w = cos(theta) u + sin(theta) e, tan(theta_t) = sqrt(1 - a_t) / (s
// sqrt(a_t)); the exact predictor returns the projections E[u | w] = cos(theta) w and E[e | w] =
// sin(theta) w, and DDIM re-mixes them at the next angle theta', so w' = cos(theta - theta') w.
// A run over `timesteps` (ascending) ending at theta = 0 (x0) multiplies w by the product of the
// cosines of the angles it steps, which this returns; the exact flow (infinitely many steps)
// keeps w, so x0 = mu + s w.
inline double ddim_gaussian_gain(const NoiseSchedule& schedule,
                                 const std::vector<int64_t>& timesteps, double s) {
  double gain = 1.0;
  double previous_theta = 0.0;  // the angle of x0, where the last step lands
  for (const int64_t t : timesteps) {
    const double a = schedule.alpha_bar(t);
    const double theta = std::atan2(std::sqrt(1 - a), s * std::sqrt(a));
    gain *= std::cos(theta - previous_theta);
    previous_theta = theta;
  }
  return gain;
}

}  // namespace difftrain::trainer::test_util
