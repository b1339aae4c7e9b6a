// One rank's inputs to one micro-step (images, labels, timesteps and noise), made on the
// prefetch thread so that the training step only launches copies and compute.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <any>
#include <cstdint>

#include "data/prefetcher.h"
#include "trainer/train/step_noise.h"

namespace difftrain::trainer {

// B below is the batch's images times the plan's noise_draws.
struct StepInputs {
  at::Tensor images;     // uint8 [B,C,H,W] as stored, each image noise_draws times in a row
  at::Tensor labels;     // int64 [B], dropped labels set to num_classes; undefined if unconditional
  at::Tensor timesteps;  // int64 [B]
  at::Tensor eps;        // float32 [B,C,H,W]
  at::Tensor sigmas;     // float32 [B]: continuous noise levels (EDM); undefined otherwise
};

// What prepare_step_inputs needs to place a prefetched batch in its optimizer step.
struct StepInputPlan {
  uint64_t seed = 0;
  int64_t grad_accum_steps = 1;       // micro-steps per optimizer step
  int64_t micro_global_batch = 0;     // images per micro-step over all ranks
  int64_t first_in_rank = 0;          // this rank's first position in a micro-step: rank * batch
  TimestepDistribution timesteps{0};  // T and how a sample's timestep is drawn
  int64_t noise_draws = 1;            // samples (timestep and noise) per image
  int64_t num_classes = 0;            // 0: unconditional
  double label_dropout = 0;
  bool hflip = false;       // flip each image left-right with probability 1/2
  bool sigmas = false;      // pass the continuous noise levels on (diffusion.formulation edm)
  bool pin_memory = false;  // page-locked host tensors (CUDA devices)
};

// Builds the inputs of prefetched batch number `batch.step` (a micro-step index: optimizer step
// batch.step / grad_accum_steps). The noise is draw_step_noise's for the batch's global
// positions, so it does not depend on where or when it is drawn. With noise_draws k, image i
// of the batch is samples k i .. k i + k - 1, and sample positions are k times image positions.
StepInputs prepare_step_inputs(const data::Batch& batch, const StepInputPlan& plan);

// A Prefetcher hook that attaches prepare_step_inputs' result to every batch.
data::PrepareBatch step_input_preparer(const StepInputPlan& plan);

// The inputs on `device`: asynchronous copies where the host tensors are pinned.
StepInputs to_device(const StepInputs& inputs, const c10::Device& device);

// Copies `inputs` into the fixed buffers `on_device` (made by to_device() the first time,
// reused after), asynchronously where the host tensors are pinned: a step captured in a CUDA
// graph reads the same device memory at every replay. Throws std::logic_error when a tensor's
// shape or presence differs from the buffers'.
void copy_to_device(const StepInputs& inputs, const c10::Device& device, StepInputs& on_device);

}  // namespace difftrain::trainer
