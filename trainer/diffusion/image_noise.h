// Per-image noise streams for sampling: image i of a run seeded `seed` draws its x_T and every
// later noise tensor from its own generator keyed by (seed, i), so an image does not depend on
// which batch, rank or world size draws it.
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <future>
#include <vector>

namespace difftrain::trainer {

// The noise of images first_index .. first_index + batch - 1. Each draw() returns one row per
// image from that image's generator, so the k-th draw of image i is the same whatever the batch.
// Not thread-safe (draws advance the generators).
class ImageNoise {
 public:
  // draw_ahead: after each draw(), a helper thread draws the next one (same shape and device)
  // into pinned memory while the caller runs the step: a GPU sampler then does not wait for
  // the CPU's generators at every step. The values are the same either way; the last draw
  // ahead is wasted. Throws std::runtime_error for first_index < 0 or batch < 1.
  ImageNoise(uint64_t seed, int64_t first_index, int64_t batch, bool draw_ahead = false);
  ~ImageNoise();  // waits for a draw ahead in flight
  ImageNoise(const ImageNoise&) = delete;
  ImageNoise& operator=(const ImageNoise&) = delete;

  int64_t first_index() const { return first_index_; }
  int64_t batch() const { return static_cast<int64_t>(generators_.size()); }

  // Standard normal float32 [batch, image_shape...], drawn on the CPU (so the values do not
  // depend on the device) and moved to `device`. With draw_ahead every call must ask for the
  // same shape and device (std::logic_error otherwise).
  at::Tensor draw(at::IntArrayRef image_shape, const c10::Device& device = c10::kCPU);

 private:
  // Fills `noise` ([batch, ...]) row by row from the generators, advancing them.
  void fill(at::Tensor& noise);

  int64_t first_index_;
  std::vector<at::Generator> generators_;
  bool draw_ahead_;
  at::Tensor ahead_;              // the next draw, being filled by ahead_done_'s thread
  std::future<void> ahead_done_;  // valid while a draw ahead is in flight
};

}  // namespace difftrain::trainer
