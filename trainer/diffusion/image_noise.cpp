// Per-image generators seeded by derive_seed(seed, kSamplePurpose, 0, image index).
#include "trainer/diffusion/image_noise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "trainer/common/rng.h"

namespace difftrain::trainer {

ImageNoise::ImageNoise(uint64_t seed, int64_t first_index, int64_t batch, bool draw_ahead)
    : first_index_(first_index), draw_ahead_(draw_ahead) {
  if (first_index < 0 || batch < 1) {
    throw std::runtime_error("ImageNoise: images [" + std::to_string(first_index) + ", " +
                             std::to_string(first_index + batch) +
                             "): want first_index >= 0 and batch >= 1");
  }
  generators_.reserve(static_cast<size_t>(batch));
  for (int64_t i = 0; i < batch; ++i) {
    generators_.push_back(at::detail::createCPUGenerator(
        derive_seed(seed, kSamplePurpose, 0, static_cast<uint64_t>(first_index + i))));
  }
}

ImageNoise::~ImageNoise() {
  if (ahead_done_.valid()) ahead_done_.wait();
}

void ImageNoise::fill(at::Tensor& noise) {
  for (int64_t i = 0; i < batch(); ++i) {
    noise[i].normal_(0.0, 1.0, generators_[static_cast<size_t>(i)]);
  }
}

at::Tensor ImageNoise::draw(at::IntArrayRef image_shape, const c10::Device& device) {
  std::vector<int64_t> shape = {batch()};
  shape.insert(shape.end(), image_shape.begin(), image_shape.end());
  // Drawn on the CPU (per-image generators); for a GPU into pinned memory, so that the copy
  // does not make the host wait for the GPU at every sampling step.
  const bool pin = device.is_cuda();
  const auto options = at::TensorOptions().dtype(at::kFloat).pinned_memory(pin);
  at::Tensor noise;
  if (ahead_done_.valid()) {
    ahead_done_.get();  // rethrows what the helper thread threw
    noise = std::move(ahead_);
    if (noise.sizes() != at::IntArrayRef(shape) || noise.is_pinned() != pin) {
      std::ostringstream message;
      message << "ImageNoise: drew ahead " << noise.sizes() << (noise.is_pinned() ? " pinned" : "")
              << ", then was asked for " << at::IntArrayRef(shape) << " on " << device;
      throw std::logic_error(message.str());
    }
  } else {
    noise = at::empty(shape, options);
    fill(noise);
  }
  if (draw_ahead_) {
    // Allocated here: pinned memory from a fresh thread could touch another device's context.
    ahead_ = at::empty(shape, options);
    ahead_done_ = std::async(std::launch::async, [this] { fill(ahead_); });
  }
  return noise.to(device, /*non_blocking=*/pin);
}

}  // namespace difftrain::trainer
