// Per-image generators seeded by derive_seed(seed, kSamplePurpose, 0, image index).
#include "trainer/diffusion/image_noise.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <stdexcept>
#include <string>

#include "trainer/rng.h"

namespace difftrain::trainer {

ImageNoise::ImageNoise(uint64_t seed, int64_t first_index, int64_t batch)
    : first_index_(first_index) {
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

at::Tensor ImageNoise::draw(at::IntArrayRef image_shape, const c10::Device& device) {
  std::vector<int64_t> shape = {batch()};
  shape.insert(shape.end(), image_shape.begin(), image_shape.end());
  // Drawn on the CPU (per-image generators); for a GPU into pinned memory, so that the copy
  // does not make the host wait for the GPU at every sampling step.
  const bool pin = device.is_cuda();
  at::Tensor noise = at::empty(shape, at::TensorOptions().dtype(at::kFloat).pinned_memory(pin));
  for (int64_t i = 0; i < batch(); ++i) {
    noise[i].normal_(0.0, 1.0, generators_[static_cast<size_t>(i)]);
  }
  return noise.to(device, /*non_blocking=*/pin);
}

}  // namespace difftrain::trainer
