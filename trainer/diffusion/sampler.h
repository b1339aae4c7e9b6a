// Reverse-process samplers: ancestral DDPM (Ho et al. 2020, alg. 2) with optional respacing
// (Nichol & Dhariwal 2021, sec. 4), DDIM (Song et al. 2021, eq. 12) with eta in [0, 1], and
// DPM-Solver++(2M) (Lu et al. 2022, alg. 2) for deterministic sampling in 10-20 steps.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/Generator.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "trainer/config/settings.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

// A prediction for x_t: the noise eps_hat and, where the model gives it directly, the clean
// image x0_hat (undefined otherwise). The samplers need both, and x0 from eps alone,
// (x_t - sqrt(1 - abar) eps) / sqrt(abar), multiplies eps's rounding by 1/sqrt(abar): 2e4 at the
// cosine schedule's last timestep. Both [B, ...] like x_t, any floating dtype.
struct PredictorOutput {
  at::Tensor eps;
  at::Tensor x0;
};

// A denoiser over continuous noise levels (EDM, Karras et al. 2022): D(x; sigma), the estimate
// of x0 from x = x0 + sigma n, for x float [B, ...] and sigma float [B] on x's device.
using Denoiser = std::function<at::Tensor(const at::Tensor& x, const at::Tensor& sigma)>;

// What the heun sampler needs of a model over continuous noise levels: its denoiser and the
// sampler's noise-level grid (diffusion.sigma_min, sigma_max, rho).
struct ContinuousDenoiser {
  Denoiser denoise;
  double sigma_min = 0.002;
  double sigma_max = 80.0;
  double rho = 7.0;
};

// The model as the samplers see it, for x_t float [B, ...] and t int64 [B] on x_t's device.
// Called under no-grad; put the model in eval() mode before sampling. Any callable
// (x_t, t) -> eps_hat converts to one implicitly (x0 is then derived from eps); with_x0() makes
// one that returns x0 too (as_eps_predictor() does for v-models, prediction.h).
class EpsPredictor {
 public:
  using Function = std::function<PredictorOutput(const at::Tensor& x_t, const at::Tensor& t)>;

  EpsPredictor() = default;
  template <typename F>
  requires(!std::is_same_v<std::remove_cvref_t<F>, EpsPredictor> &&
           std::is_invocable_r_v<at::Tensor, F&, const at::Tensor&, const at::Tensor&>)
      EpsPredictor(F eps)  // NOLINT(google-explicit-constructor): an eps function is a predictor
      : predict_([eps = std::move(eps)](const at::Tensor& x_t, const at::Tensor& t) mutable {
          return PredictorOutput{eps(x_t, t), at::Tensor()};
        }) {}

  // `predict` returns eps_hat and x0_hat (an undefined x0_hat is derived from eps_hat).
  static EpsPredictor with_x0(Function predict);
  // `predict` as with_x0, for a model that also denoises at continuous noise levels (the heun
  // sampler's input).
  static EpsPredictor with_denoiser(Function predict, ContinuousDenoiser denoiser);
  // The continuous denoiser, or nullptr for a model of discrete timesteps only.
  const ContinuousDenoiser* denoiser() const { return denoiser_ ? &*denoiser_ : nullptr; }

  at::Tensor operator()(const at::Tensor& x_t, const at::Tensor& t) const {
    return predict_(x_t, t).eps;
  }
  PredictorOutput predict(const at::Tensor& x_t, const at::Tensor& t) const {
    return predict_(x_t, t);
  }
  explicit operator bool() const { return static_cast<bool>(predict_); }

 private:
  Function predict_;
  std::optional<ContinuousDenoiser> denoiser_;
};

// SamplerKind (trainer/config/settings.h): kDpmSolverPP2M is the multistep second-order solver
// of the probability-flow ODE in the data prediction (x0) form, stepping in log-SNR
// lambda_t = log(sqrt(abar_t) / sqrt(1 - abar_t)) on the grid log_snr_timesteps();
// deterministic (ignores eta and variance). DdpmVariance: sigma_t^2 = beta_t or the posterior
// variance beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) (Ho et al. sec. 3.2).
// Config keys are `sample.<field>` (sample.sampler for kind, sample.ddpm_variance).
struct SamplerOptions {
  SamplerKind kind = SamplerKind::kDdim;
  // Model evaluations. DDPM and DDIM visit sampling_timesteps(T, steps) (steps == T is the
  // classic sampler), DPM-Solver++ log_snr_timesteps(schedule, steps). Fewer DDPM steps use
  // betas re-derived from the kept alpha_bars (beta'_k = 1 - abar_{t_k} / abar_{t_{k-1}},
  // "respacing").
  int64_t steps = 50;  // heun: noise levels, 2 steps - 1 model evaluations
  double eta = 0.0;    // DDIM only, [0, 1]: 0 = deterministic, 1 = DDPM posterior variance
  double churn = 0.0;  // heun only, >= 0: EDM's S_churn (0 = deterministic)
  DdpmVariance variance = DdpmVariance::kBeta;
  bool clip_x0 = true;  // clip the predicted x0 to [-1, 1] (images); the analytic tests turn it off
};

// Throws std::runtime_error naming the value: steps in [1, timesteps], eta in [0, 1], churn >= 0.
void validate(const SamplerOptions& options, int64_t timesteps);

// The timesteps a `steps`-step sampler visits, ascending: round(k (T-1) / (steps-1)) for
// k = 0..steps-1 (distinct, from 0 to T-1; {T-1} for one step). Precondition 1 <= steps <= T.
std::vector<int64_t> sampling_timesteps(int64_t timesteps, int64_t steps);

// The timesteps DPM-Solver++ visits, ascending, from 0 to T-1 and distinct: the nearest
// timesteps to points evenly spaced in lambda from lambda_0 down to max(lambda_{T-1},
// kLogSnrFloor), then T-1 if the floor cut the range. Below the floor (SNR < e^-6) the
// x0-prediction of unit-scale data is its mean to 0.25%, so steps spent there buy nothing; the
// cosine schedule's clipped tail reaches lambda ~ -10. Precondition 1 <= steps <= T.
constexpr double kLogSnrFloor = -3.0;
std::vector<int64_t> log_snr_timesteps(const NoiseSchedule& schedule, int64_t steps);

// The timesteps options.kind visits (one of the two above), ascending.
std::vector<int64_t> sampler_timesteps(const NoiseSchedule& schedule,
                                       const SamplerOptions& options);

// Called after reverse step `index` (0 .. steps-1), which started from timestep `t`, with the
// new state x (x_0 after the last step); for progression strips.
using StepCallback = std::function<void(int64_t index, int64_t t, const at::Tensor& x_t)>;

// Standard normal noise shaped like the batch being sampled (float32, on its device); the
// reverse process calls it once per noisy step (DDPM before the last step, DDIM with eta > 0).
using NoiseSource = std::function<at::Tensor()>;

// Replaces the state after reverse step `index`, which went from timestep t to `t_next` (the
// next timestep the sampler visits, or -1 after the last step, when x is x_0); returns the new
// state, same shape. Inpainting uses it to put back the known pixels.
using StepTransform = std::function<at::Tensor(int64_t index, int64_t t_next, const at::Tensor& x)>;

// The reverse process over explicit ascending, distinct timesteps in [0, T): x_start (float,
// [B, ...], on the device to sample on) is the state at timesteps.back(); each step goes to the
// previous timestep of the list, the last one to x_0. `after_step` runs before `on_step`. What
// sample_from() runs on the sampler's grid; denoising runs it on a grid cut at its start.
// Validates `options` (options.steps is not used: the list sets the steps); runs under no-grad.
// The heun sampler has no timesteps: it throws std::runtime_error saying so (denoising and
// inpainting start from a timestep).
at::Tensor run_reverse_process(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                               const at::Tensor& x_start, const std::vector<int64_t>& timesteps,
                               const SamplerOptions& options, const NoiseSource& noise,
                               const StepCallback& on_step = {},
                               const StepTransform& after_step = {});

// Split-invariant sampling: images first_index .. first_index + shape[0] - 1 of the run seeded
// `seed`, each drawing x_T and its step noise from its own stream (ImageNoise, image_noise.h), so
// image i is bit-identical whether drawn alone, in one batch or spread over batches and ranks
// (given a predictor that treats batch rows independently). Returns x_0 (float32, on device).
at::Tensor sample(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                  at::IntArrayRef shape, const SamplerOptions& options, uint64_t seed,
                  int64_t first_index, const at::Device& device, const StepCallback& on_step = {});

// The reverse process from a given x_T (float, [B, ...], on the device to sample on) with step
// noise from `noise`. SamplerKind::kHeun runs heun_sample() (edm.h) from sigma_max x_T and needs
// a predictor with a denoiser() (throws std::runtime_error naming diffusion.formulation).
at::Tensor sample_from(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                       const at::Tensor& x_T, const SamplerOptions& options,
                       const NoiseSource& noise, const StepCallback& on_step = {});

// Batch-dependent sampling from one generator (kept for callers that own a generator; prefer
// the seed overload above). Draws x_T ~ N(0, I) of `shape` with `generator` (a CPU generator:
// all noise is drawn on the CPU and moved, so results do not depend on the device), runs the
// reverse process on `device` and returns x_0 (float32, on device). Validates `options`; runs
// under no-grad. Not thread-safe with respect to `generator`.
at::Tensor sample(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                  at::IntArrayRef shape, const SamplerOptions& options, at::Generator& generator,
                  const at::Device& device, const StepCallback& on_step = {});

// The reverse process from a given x_T; step noise (DDPM, DDIM with eta > 0) comes from
// `generator` as in the generator overload of sample().
at::Tensor sample_from(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                       const at::Tensor& x_T, const SamplerOptions& options,
                       at::Generator& generator, const StepCallback& on_step = {});

}  // namespace difftrain::trainer
