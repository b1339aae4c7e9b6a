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

}  // namespace difftrain::trainer
