// The random part of one training step: timesteps, noise and label dropout for each sample,
// drawn from a generator seeded by (seed, step, the sample's position in the global batch).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace difftrain::trainer {

struct StepNoise {
  at::Tensor timesteps;   // int64 [B], uniform in [0, T)
  at::Tensor eps;         // float32 [B,C,H,W], standard normal
  at::Tensor drop_label;  // bool [B]: train this sample with "no label" (probability label_dropout)
};

// Draws for this rank's `batch` samples, which sit at global positions
// first_position .. first_position + batch - 1 of step `step`'s global batch. Each sample has
// its own generator, so the draws do not depend on how the global batch is split over ranks
// and a resumed run draws exactly what an uninterrupted one would. Tensors are on the CPU. The
// label-dropout draw comes after the timestep and noise, so it leaves them unchanged.
// pin_memory: allocate the tensors in page-locked memory (needs a CUDA LibTorch and device),
// so that their copies to a GPU run asynchronously.
StepNoise draw_step_noise(uint64_t seed, int64_t step, int64_t first_position, int64_t batch,
                          int64_t timesteps, at::IntArrayRef sample_shape,
                          double label_dropout = 0.0, bool pin_memory = false);

}  // namespace difftrain::trainer
