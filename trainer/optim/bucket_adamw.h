// AdamW over the gradient reducer's flat buckets, with gradient clipping and the non-finite
// guard decided on the device: a step only launches work, so the host never waits for the GPU
// inside a training step (the step's numbers are read back later, see StepReadback).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "launch/gradient_reducer.h"

namespace torch::serialize {
class InputArchive;
class OutputArchive;
}  // namespace torch::serialize

namespace difftrain::trainer {

struct AdamWSettings {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double max_grad_norm = 0.0;  // clip the global gradient norm to this; <= 0: no clipping
};

// The update is torch::optim::AdamW's (decoupled weight decay, bias-corrected moments) after
// torch::nn::utils::clip_grad_norm_, equal up to float rounding. When the global gradient norm,
// the new moments or the update are NaN or infinite (a bad batch, or a learning rate that
// overflows the update) the step changes nothing: parameters, moments and the step count stay
// as they were. Moments live in flat buffers shaped like the gradient buckets, so each step is a
// few whole-bucket kernels plus two multi-tensor (foreach) updates of the parameters.
//
// Checkpoints hold the state in torch::optim::AdamW's format (per-parameter step, exp_avg,
// exp_avg_sq), so checkpoints written before this optimizer existed resume with it.
class BucketAdamW {
 public:
  // `parameters`: every parameter of the model in registration order (the checkpoint order);
  // `buckets`: the gradient reducer's, covering each trainable parameter once.
  BucketAdamW(const std::vector<at::Tensor>& parameters,
              const std::vector<launch::GradientBucket>& buckets, const AdamWSettings& settings);

  // Sets the learning rate of the next step() (a fill kernel on the device, no wait). Not
  // inside a CUDA graph capture: a captured step() reads whatever was set before each replay.
  void set_learning_rate(double lr);

  // Clips the gradients (in place) and updates the parameters at the learning rate last set,
  // or skips the update when the gradient norm, the new moments or the update are not finite.
  // Launches device work only (so a CUDA graph can capture it) and returns a float64 device tensor
  // [gradient norm before clipping, 1 if skipped else 0].
  at::Tensor step();

  // set_learning_rate(lr), then step().
  at::Tensor step(double lr);

  // Steps taken, skipped ones not counted (reads the device: synchronises).
  int64_t step_count() const;
  // Whether both moments of every parameter are finite (reads the device: synchronises).
  bool all_finite() const;

  // torch::optim::AdamW's archive layout, for the parameters given at construction.
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  struct Bucket {
    at::Tensor grad;  // the reducer's flat gradient
    at::Tensor exp_avg, exp_avg_sq, update;
    at::Tensor next_exp_avg, next_exp_avg_sq;  // a step's moments before it is known finite
    std::vector<at::Tensor> parameters;
    std::vector<at::Tensor> update_views;  // `update` shaped like each parameter
  };
  // (bucket, offset) of parameters_[i]; bucket -1 for a parameter that gets no gradient.
  struct Place {
    int64_t bucket = -1;
    int64_t offset = 0;
  };

  std::vector<at::Tensor> parameters_;
  std::vector<Place> places_;
  std::vector<Bucket> buckets_;
  std::vector<at::Tensor> gradient_views_;  // the gradients, in parameter order
  AdamWSettings settings_;
  at::Tensor step_;  // float64 scalar on the device: steps taken
  at::Tensor lr_;    // float64 scalar on the device: this step's learning rate
};

// For a single process without a GradientReducer (benchmarks, tests): one bucket holding every
// parameter that requires grad, each .grad() made a view into it (zeros).
std::vector<launch::GradientBucket> single_gradient_bucket(
    const std::vector<at::Tensor>& parameters);

}  // namespace difftrain::trainer
