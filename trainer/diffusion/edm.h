// EDM (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
// Models"): the preconditioned denoiser over continuous noise levels (table 1, "ours"), its
// training pair, the heun sampler (alg. 1, with alg. 2's churn), and the bridge that lets the
// discrete-timestep samplers drive an EDM model.
#pragma once

#include <ATen/ATen.h>

#include <functional>
#include <vector>

#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

// The network as EDM calls it: F(c_in x, c_noise) for x float [B, ...] and c_noise float [B].
// Class-conditional networks and classifier-free guidance bind their labels inside (guidance on
// F is guidance on D: D is affine in F with the same c_skip x for both predictions).
using EdmNetwork = std::function<at::Tensor(const at::Tensor& input, const at::Tensor& c_noise)>;

// Preconditioning for noise levels sigma float [B] (table 1), each shaped [B, 1, ...] to
// broadcast against `like` [B, ...] and of its dtype and device, c_noise [B]:
//   c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2),
//   c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4   (sd = sigma_data).
struct EdmScalings {
  at::Tensor c_skip, c_out, c_in, c_noise;
};
EdmScalings edm_scalings(const at::Tensor& sigma, double sigma_data, const at::Tensor& like);

// D(x; sigma) = c_skip x + c_out F(c_in x, c_noise): EDM eq. 7. Output in float32 (or wider).
Denoiser edm_denoiser(EdmNetwork network, double sigma_data);

// The training pair for clean images x0 and standard normal noise eps [B, ...], sigma [B]:
// the network's input c_in (x0 + sigma eps), c_noise, and its target
// (x0 - c_skip (x0 + sigma eps)) / c_out. The mean squared error of F against the target is EDM's
// loss: lambda(sigma) = 1 / c_out^2 makes every noise level's weight 1 on F (eq. 8, sec. 5).
struct EdmTrainingPair {
  at::Tensor input, c_noise, target;
};
EdmTrainingPair edm_training_pair(const at::Tensor& x0, const at::Tensor& eps,
                                  const at::Tensor& sigma, double sigma_data);

// The samplers' predictor for a denoiser at the schedule's timesteps: x_t = sqrt(abar) x0 +
// sqrt(1 - abar) eps is x = x_t / sqrt(abar) at sigma_t = sqrt((1 - abar) / abar), so
// x0 = D(x; sigma_t) and eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar). The predictor also
// carries `denoiser` for the heun sampler. Holds copies of both arguments.
EpsPredictor edm_predictor(ContinuousDenoiser denoiser, const NoiseSchedule& schedule);

// The heun sampler's noise levels, descending, then 0 (steps + 1 values): EDM eq. 5,
// sigma_i = (max^(1/rho) + i / (steps - 1) (min^(1/rho) - max^(1/rho)))^rho, i < steps
// (one step: sigma_max alone). Throws std::runtime_error unless steps >= 1, 0 < min < max and
// rho > 0.
std::vector<double> karras_sigmas(int64_t steps, double sigma_min, double sigma_max, double rho);

// EDM alg. 2 (alg. 1 for churn 0): from x = sigma_max x_T (x_T standard normal [B, ...]),
// per level i: gamma = min(churn / steps, sqrt(2) - 1) (0 for churn 0), sigma_hat = (1 + gamma)
// sigma_i, x_hat = x + sqrt(sigma_hat^2 - sigma_i^2) noise(); an Euler step to sigma_{i+1}, then
// Heun's correction unless sigma_{i+1} = 0. options.steps levels, 2 steps - 1 calls of D;
// options.clip_x0 clips D's output to [-1, 1]. on_step(i, -1, x) after each level. Returns x_0
// (float32). Runs under no-grad.
at::Tensor heun_sample(const ContinuousDenoiser& denoiser, const at::Tensor& x_T,
                       const SamplerOptions& options, const NoiseSource& noise,
                       const StepCallback& on_step = {});

}  // namespace difftrain::trainer
