// The simplified DDPM training objective L_simple = E ||eps - eps_hat(x_t, t)||^2 (Ho et al.
// 2020, eq. 14), its per-sample form for the loss-by-timestep metric, and its min-SNR-gamma
// weighted form.
#pragma once

#include <ATen/ATen.h>

#include "trainer/config/settings.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

// Mean of (eps - eps_hat)^2 over all elements (a scalar). eps_hat and eps must have the same
// shape (throws std::runtime_error naming both); half/bfloat16 inputs (autocast) are
// accumulated in float32. Differentiable in eps_hat.
at::Tensor eps_mse_loss(const at::Tensor& eps_hat, const at::Tensor& eps);

// Mean of (eps - eps_hat)^2 over all but the first dimension: [B, ...] -> [B]. Same dtype rules.
at::Tensor per_sample_mse(const at::Tensor& eps_hat, const at::Tensor& eps);

// Min-SNR-gamma loss weights per timestep (Hang et al. 2023), float64 [T] on the CPU: with
// SNR_t = abar_t / (1 - abar_t), the x0-space weight min(SNR, gamma) expressed for the network's
// target: min(SNR, gamma) / SNR for eps (the eps loss is SNR times the x0 loss), and
// min(SNR, gamma) / (SNR + 1) for v (the v loss is SNR + 1 times it). gamma > 0.
at::Tensor min_snr_weights(const NoiseSchedule& schedule, Prediction prediction, double gamma);

// Mean over the batch of weights[i] * mean((output - target)^2 over sample i): the weighted form
// of eps_mse_loss (equal to it for weights of 1). weights float [B]; differentiable in output.
at::Tensor weighted_mse_loss(const at::Tensor& output, const at::Tensor& target,
                             const at::Tensor& weights);

}  // namespace difftrain::trainer
