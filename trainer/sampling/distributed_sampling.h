// Generating one set of images with every rank drawing its contiguous share: image i's noise
// depends only on (seed, i), so the gathered result is the same for any number of ranks.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <functional>

#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::launch {
class Communicator;
}

namespace difftrain::trainer {

// Rank r of W's share of n items: [r*n/W, (r+1)*n/W) (possibly empty when n < W).
struct ImageRange {
  int64_t begin = 0;
  int64_t end = 0;
};
ImageRange rank_share(int64_t n, int rank, int world_size);

// Images are drawn in chunks of `chunk_images` aligned to multiples of it ([0, c), [c, 2c), ...,
// the last one cut at n), whatever the rank count, and each rank draws whole chunks: rank r
// gets chunks rank_share(ceil(n / c), r, W), so no chunk is drawn twice. A network's output for
// one image can depend on the batch it sits in (a different batch size picks another kernel:
// 1-ulp differences), so fixed chunks are what makes the result bit-identical for any world
// size (for the same chunk size).
ImageRange chunk_share(int64_t n, int64_t chunk_images, int rank, int world_size);

// The chunk size when none is set (sample.batch_size / --batch-size 0): 8 images on a CPU,
// where a bigger batch buys little and small chunks spread a grid over more ranks; 128 on a
// GPU, which needs large batches to be busy.
int64_t default_sample_chunk(const c10::Device& device);

// Thrown by a draw (or by a sampler's step callback inside it) to stop drawing: the rank draws
// no further chunks, its remaining images stay zero, and it still joins the collective, so that
// no rank waits for it. The caller decides, with the other ranks, what the images are worth.
struct DrawingStopped {};

// Draws images [begin, end) (one chunk) as [end - begin, C, H, W] (any device, floating dtype).
using ImageRangeDraw = std::function<at::Tensor(int64_t begin, int64_t end)>;

// Calls draw() for each chunk of this rank's chunk_share() (none when it is empty), places them
// in a zero-filled CPU float32 [n, image_shape...] tensor and sums it over the ranks, so every
// rank returns all n images. comm == nullptr: one rank, draws [0, n). Throws
// std::runtime_error naming the shapes if draw() returns the wrong shape, or if
// chunk_images < 1. Collective: every rank calls this, in the same order.
at::Tensor gather_across_ranks(int64_t n, at::IntArrayRef image_shape, int64_t chunk_images,
                               launch::Communicator* comm, const ImageRangeDraw& draw);

// Draws images [0, n) in chunks of chunk_images split across the communicator's ranks
// (chunk_share()); image i's noise depends only on (seed, i) (sample()'s seed overload), and
// the chunks are fixed (gather_across_ranks()), so the result equals a one-rank run with the
// same chunk size bit for bit. Returns all n images as CPU float32 on every rank. on_step sees each
// chunk this rank draws, in turn (never on a rank whose share is empty). comm == nullptr: one rank.
// Collective: every rank calls this, in the same order.
at::Tensor sample_across_ranks(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                               int64_t n, at::IntArrayRef image_shape /* C, H, W */,
                               const SamplerOptions& options, uint64_t seed, int64_t chunk_images,
                               const at::Device& device, launch::Communicator* comm,
                               const StepCallback& on_step = {});

}  // namespace difftrain::trainer
