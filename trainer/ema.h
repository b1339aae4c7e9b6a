// Exponential moving average of a model's weights, the weights `sample` uses by default.
#pragma once

#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <vector>

namespace difftrain::trainer {

// Keeps a shadow copy of every parameter and buffer on the model's device. After update number
// n (n = 1 after the first optimizer step) the decay used is min(decay, (1 + n) / (10 + n)), the
// usual warm-up, so that early EMA weights are not dominated by the random initialisation.
// Not thread-safe.
class Ema {
 public:
  Ema(const torch::nn::Module& model, double decay);

  // shadow = d * shadow + (1 - d) * weights, d = decay_for(updates() + 1); buffers are copied.
  void update(const torch::nn::Module& model);
  double decay_for(int64_t update_number) const;
  int64_t updates() const { return updates_; }

  // Writes the shadow weights into `model` (same architecture).
  void copy_to(torch::nn::Module& model) const;
  void save(torch::serialize::OutputArchive& archive) const;
  void load(torch::serialize::InputArchive& archive);

 private:
  double decay_;
  int64_t updates_ = 0;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> shadow_params_;
  std::vector<std::string> buffer_names_;
  std::vector<torch::Tensor> shadow_buffers_;
};

}  // namespace difftrain::trainer
