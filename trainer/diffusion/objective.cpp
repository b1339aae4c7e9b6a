// L_simple and its per-sample form; see objective.h.
#include "trainer/diffusion/objective.h"

#include <sstream>
#include <stdexcept>

namespace difftrain::trainer {
namespace {

// eps_hat - eps in at least float32 (a bf16 sum of many squares loses the small losses).
at::Tensor difference(const at::Tensor& eps_hat, const at::Tensor& eps, const char* caller) {
  if (eps_hat.sizes() != eps.sizes() || eps_hat.dim() < 1) {
    std::ostringstream message;
    message << caller << ": eps_hat has shape " << eps_hat.sizes() << ", eps has shape "
            << eps.sizes() << "; want equal shapes [B, ...]";
    throw std::runtime_error(message.str());
  }
  const at::ScalarType type =
      at::promote_types(at::promote_types(eps_hat.scalar_type(), eps.scalar_type()), at::kFloat);
  return eps_hat.to(type) - eps.to(type);
}

}  // namespace

at::Tensor eps_mse_loss(const at::Tensor& eps_hat, const at::Tensor& eps) {
  return difference(eps_hat, eps, "eps_mse_loss").square().mean();
}

at::Tensor per_sample_mse(const at::Tensor& eps_hat, const at::Tensor& eps) {
  return difference(eps_hat, eps, "per_sample_mse").square().reshape({eps.size(0), -1}).mean(1);
}

at::Tensor min_snr_weights(const NoiseSchedule& schedule, Prediction prediction, double gamma) {
  if (!(gamma > 0)) {
    throw std::runtime_error("min_snr_weights: gamma = " + std::to_string(gamma) + ", want > 0");
  }
  const at::Tensor a = schedule.alpha_bars();
  const at::Tensor snr = a / (1.0 - a);
  const at::Tensor clipped = snr.clamp_max(gamma);
  return prediction == Prediction::kV ? clipped / (snr + 1.0) : clipped / snr;
}

at::Tensor weighted_mse_loss(const at::Tensor& output, const at::Tensor& target,
                             const at::Tensor& weights) {
  const at::Tensor per_sample = difference(output, target, "weighted_mse_loss")
                                    .square()
                                    .reshape({target.size(0), -1})
                                    .mean(1);
  return (per_sample * weights.to(per_sample.scalar_type())).mean();
}

}  // namespace difftrain::trainer
