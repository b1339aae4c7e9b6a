// Helpers shared by the trainer unit tests.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <exception>
#include <functional>
#include <string>

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

}  // namespace difftrain::trainer::test_util
