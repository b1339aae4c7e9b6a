// Per-image noise streams for sampling: image i of a run seeded `seed` draws its x_T and every
// later noise tensor from its own generator keyed by (seed, i), so an image does not depend on
// which batch, rank or world size draws it.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <vector>

namespace difftrain::trainer {

// The noise of images first_index .. first_index + batch - 1. Each draw() returns one row per
// image from that image's generator, so the k-th draw of image i is the same whatever the batch.
// Not thread-safe (draws advance the generators).
class ImageNoise {
 public:
  // Throws std::runtime_error for first_index < 0 or batch < 1.
  ImageNoise(uint64_t seed, int64_t first_index, int64_t batch);

  int64_t first_index() const { return first_index_; }
  int64_t batch() const { return static_cast<int64_t>(generators_.size()); }

  // Standard normal float32 [batch, image_shape...], drawn on the CPU (so the values do not
  // depend on the device) and moved to `device`.
  at::Tensor draw(at::IntArrayRef image_shape, const c10::Device& device = c10::kCPU);

 private:
  int64_t first_index_;
  std::vector<at::Generator> generators_;
};

}  // namespace difftrain::trainer
