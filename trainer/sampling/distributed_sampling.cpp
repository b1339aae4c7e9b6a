// Whole fixed-size chunks of images per rank and gathered by an all-reduce of a
// zero-filled tensor (every element has exactly one non-zero contribution, so the sum is exact).
#include "trainer/sampling/distributed_sampling.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "launch/communicator.h"

namespace difftrain::trainer {

ImageRange rank_share(int64_t n, int rank, int world_size) {
  return {n * rank / world_size, n * (rank + 1) / world_size};
}

ImageRange chunk_share(int64_t n, int64_t chunk_images, int rank, int world_size) {
  const ImageRange chunks = rank_share((n + chunk_images - 1) / chunk_images, rank, world_size);
  return {std::min(n, chunks.begin * chunk_images), std::min(n, chunks.end * chunk_images)};
}

int64_t default_sample_chunk(const c10::Device& device) { return device.is_cuda() ? 128 : 8; }

at::Tensor gather_across_ranks(int64_t n, at::IntArrayRef image_shape, int64_t chunk_images,
                               launch::Communicator* comm, const ImageRangeDraw& draw) {
  if (n < 1) throw std::runtime_error("sample: n = " + std::to_string(n) + " images; want >= 1");
  if (chunk_images < 1) {
    throw std::runtime_error("sample: batch size " + std::to_string(chunk_images) +
                             " images; want >= 1");
  }
  const int rank = comm != nullptr ? comm->rank() : 0;
  const int world_size = comm != nullptr ? comm->world_size() : 1;
  std::vector<int64_t> shape = {n};
  shape.insert(shape.end(), image_shape.begin(), image_shape.end());
  at::Tensor images = at::zeros(shape, at::kFloat);
  const ImageRange share = chunk_share(n, chunk_images, rank, world_size);
  for (int64_t begin = share.begin; begin < share.end; begin += chunk_images) {
    const int64_t end = std::min(begin + chunk_images, n);
    at::Tensor drawn;
    try {
      drawn = draw(begin, end);
    } catch (const DrawingStopped&) {
      break;  // the rest of this rank's share stays zero; the sum below still runs
    }
    std::vector<int64_t> want = shape;
    want[0] = end - begin;
    if (drawn.sizes() != at::IntArrayRef(want)) {
      std::ostringstream message;
      message << "sample: images [" << begin << ", " << end << ") came back as " << drawn.sizes()
              << "; want " << at::IntArrayRef(want);
      throw std::runtime_error(message.str());
    }
    images.narrow(0, begin, end - begin).copy_(drawn);
  }
  // Collective: every rank calls this, in the same order.
  if (world_size > 1) comm->all_reduce_sum(images);
  return images;
}

at::Tensor sample_across_ranks(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                               int64_t n, at::IntArrayRef image_shape,
                               const SamplerOptions& options, uint64_t seed, int64_t chunk_images,
                               const at::Device& device, launch::Communicator* comm,
                               const StepCallback& on_step) {
  validate(options, schedule.timesteps());
  return gather_across_ranks(n, image_shape, chunk_images, comm, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> shape = {end - begin};
    shape.insert(shape.end(), image_shape.begin(), image_shape.end());
    return sample(predictor, schedule, shape, options, seed, begin, device, on_step);
  });
}

}  // namespace difftrain::trainer
