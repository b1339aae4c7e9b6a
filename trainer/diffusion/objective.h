// The simplified DDPM training objective L_simple = E ||eps - eps_hat(x_t, t)||^2 (Ho et al.
// 2020, eq. 14), and its per-sample form for the loss-by-timestep metric.
#pragma once

#include <ATen/ATen.h>

namespace difftrain::trainer {

// Mean of (eps - eps_hat)^2 over all elements (a scalar). eps_hat and eps must have the same
// shape (throws std::runtime_error naming both); half/bfloat16 inputs (autocast) are
// accumulated in float32. Differentiable in eps_hat.
at::Tensor eps_mse_loss(const at::Tensor& eps_hat, const at::Tensor& eps);

// Mean of (eps - eps_hat)^2 over all but the first dimension: [B, ...] -> [B]. Same dtype rules.
at::Tensor per_sample_mse(const at::Tensor& eps_hat, const at::Tensor& eps);

}  // namespace difftrain::trainer
