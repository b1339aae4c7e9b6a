// DDPM, DDIM and DPM-Solver++(2M) reverse processes; see sampler.h. All are written in terms of
// the predicted x0, so clipping it to the data range changes them the same way, and all run on
// any sub-sequence t_0 < ... < t_{S-1} of timesteps with abar_prev = abar_{t_{k-1}} (1 for k = 0).
#include "trainer/diffusion/sampler.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <utility>

#include "trainer/common/text.h"
#include "trainer/diffusion/edm.h"
#include "trainer/diffusion/image_noise.h"

namespace difftrain::trainer {
namespace {

// One reverse step from timestep t (alpha_bar a) to the previous kept timestep (a_prev).
struct StepCoefficients {
  double a;
  double a_prev;
};

// Ancestral step, Ho et al. eq. 6-7 with the x0 parameterisation: the posterior mean
// mu = sqrt(a_prev) beta / (1 - a) x0 + sqrt(1 - beta) (1 - a_prev) / (1 - a) x_t, where
// beta = 1 - a / a_prev is the (respaced) beta of this step.
at::Tensor ddpm_step(const at::Tensor& x, const at::Tensor& x0, const StepCoefficients& c,
                     DdpmVariance variance, bool last, const std::function<at::Tensor()>& noise) {
  const double beta = 1.0 - c.a / c.a_prev;
  const double x0_coefficient = std::sqrt(c.a_prev) * beta / (1.0 - c.a);
  const double xt_coefficient = std::sqrt(1.0 - beta) * (1.0 - c.a_prev) / (1.0 - c.a);
  at::Tensor mean = x0 * x0_coefficient + x * xt_coefficient;
  if (last) return mean;  // x_0 is the mean: no noise is added at t = 0
  const double sigma_squared =
      variance == DdpmVariance::kBeta ? beta : beta * (1.0 - c.a_prev) / (1.0 - c.a);
  return mean.add_(noise(), std::sqrt(sigma_squared));
}

// Song et al. eq. 12: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma z with
// sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev) (eq. 16).
at::Tensor ddim_step(const at::Tensor& x0, const at::Tensor& eps, const StepCoefficients& c,
                     double eta, const std::function<at::Tensor()>& noise) {
  const double sigma = eta * std::sqrt((1.0 - c.a_prev) / (1.0 - c.a) * (1.0 - c.a / c.a_prev));
  const double direction = std::sqrt(std::max(0.0, 1.0 - c.a_prev - sigma * sigma));
  at::Tensor next = x0 * std::sqrt(c.a_prev) + eps * direction;
  if (sigma > 0.0) next.add_(noise(), sigma);
  return next;
}

// lambda = log(alpha / sigma) with alpha = sqrt(abar), sigma = sqrt(1 - abar).
double log_snr(double alpha_bar) { return 0.5 * std::log(alpha_bar / (1.0 - alpha_bar)); }

// DPM-Solver++(2M) state carried between steps: the previous x0-prediction and step size h.
struct MultistepState {
  at::Tensor previous_x0;  // undefined before the first step
  double previous_h = 0.0;
};

// Lu et al. 2022 (DPM-Solver++), alg. 2, from lambda to lambda' = lambda + h:
// x' = (sigma'/sigma) x - alpha' (e^-h - 1) D, with D = x0 on the first step (DDIM) and
// D = (1 + 1/(2r)) x0 - 1/(2r) x0_prev, r = h_prev / h, after it. The last step (abar' = 1,
// sigma' = 0, h = inf) returns x0 itself, as DDIM does.
at::Tensor dpm_solver_pp_2m_step(const at::Tensor& x, const at::Tensor& x0,
                                 const StepCoefficients& c, MultistepState& state) {
  if (c.a_prev >= 1.0) return x0.clone();
  const double h = log_snr(c.a_prev) - log_snr(c.a);
  at::Tensor d = x0;
  if (state.previous_x0.defined()) {
    const double half_inverse_r = 0.5 * h / state.previous_h;
    d = x0 * (1.0 + half_inverse_r) - state.previous_x0 * half_inverse_r;
  }
  at::Tensor next =
      x * std::sqrt((1.0 - c.a_prev) / (1.0 - c.a)) - d * (std::sqrt(c.a_prev) * std::expm1(-h));
  state.previous_x0 = x0;
  state.previous_h = h;
  return next;
}

void check_prediction_shape(const at::Tensor& output, const at::Tensor& x) {
  if (!output.defined() || output.sizes() != x.sizes()) {
    std::ostringstream message;
    message << "sample: the predictor returned shape "
            << (output.defined() ? c10::str(output.sizes()) : "none") << " for x_t of shape "
            << x.sizes();
    throw std::runtime_error(message.str());
  }
}

}  // namespace

EpsPredictor EpsPredictor::with_x0(Function predict) {
  EpsPredictor predictor;
  predictor.predict_ = std::move(predict);
  return predictor;
}

EpsPredictor EpsPredictor::with_denoiser(Function predict, ContinuousDenoiser denoiser) {
  EpsPredictor predictor;
  predictor.predict_ = std::move(predict);
  predictor.denoiser_ = std::move(denoiser);
  return predictor;
}

void validate(const SamplerOptions& options, int64_t timesteps) {
  if (options.steps < 1 || options.steps > timesteps) {
    throw std::runtime_error("sample.steps = " + std::to_string(options.steps) +
                             ": must be in [1, " + std::to_string(timesteps) +
                             "] (diffusion.timesteps)");
  }
  if (!(options.eta >= 0.0 && options.eta <= 1.0)) {
    throw std::runtime_error("sample.eta = " + format_double(options.eta) + ": must be in [0, 1]");
  }
  if (!(options.churn >= 0.0)) {
    throw std::runtime_error("sample.churn = " + format_double(options.churn) + ": must be >= 0");
  }
}

std::vector<int64_t> sampling_timesteps(int64_t timesteps, int64_t steps) {
  if (steps < 1 || steps > timesteps) {
    throw std::runtime_error("sampling_timesteps: steps = " + std::to_string(steps) +
                             " outside [1, " + std::to_string(timesteps) + "]");
  }
  if (steps == 1) return {timesteps - 1};
  // Stride (T-1)/(steps-1) >= 1, so the rounded values are strictly increasing.
  std::vector<int64_t> result(static_cast<size_t>(steps));
  const double stride = static_cast<double>(timesteps - 1) / static_cast<double>(steps - 1);
  for (int64_t k = 0; k < steps; ++k) {
    result[static_cast<size_t>(k)] = std::llround(static_cast<double>(k) * stride);
  }
  return result;
}

std::vector<int64_t> log_snr_timesteps(const NoiseSchedule& schedule, int64_t steps) {
  const int64_t timesteps = schedule.timesteps();
  if (steps < 1 || steps > timesteps) {
    throw std::runtime_error("log_snr_timesteps: steps = " + std::to_string(steps) +
                             " outside [1, " + std::to_string(timesteps) + "]");
  }
  if (steps == 1) return {timesteps - 1};
  std::vector<double> lambdas(static_cast<size_t>(timesteps));  // strictly decreasing in t
  for (int64_t t = 0; t < timesteps; ++t) {
    lambdas[static_cast<size_t>(t)] = log_snr(schedule.alpha_bar(t));
  }
  const double high = lambdas.front();
  const bool floored = lambdas.back() < kLogSnrFloor && steps > 2;
  const double low = floored ? std::min(kLogSnrFloor, high) : lambdas.back();
  const int64_t even = floored ? steps - 1 : steps;  // points evenly spaced in lambda
  std::vector<int64_t> result;
  for (int64_t k = 0; k < even; ++k) {
    const double target =
        high - (high - low) * static_cast<double>(k) / static_cast<double>(even - 1);
    // First t with lambda_t <= target, or its predecessor if that is nearer.
    const auto it = std::lower_bound(lambdas.begin(), lambdas.end(), target,
                                     [](double lambda, double value) { return lambda > value; });
    int64_t t = std::min<int64_t>(it - lambdas.begin(), timesteps - 1);
    if (t > 0 && std::abs(lambdas[static_cast<size_t>(t - 1)] - target) <
                     std::abs(lambdas[static_cast<size_t>(t)] - target)) {
      --t;
    }
    result.push_back(t);
  }
  if (floored) result.push_back(timesteps - 1);
  // Nearest-timestep rounding can repeat a timestep where lambda is steep: make the grid strictly
  // increasing within [0, T-1] (possible since steps <= T), keeping both ends.
  result.front() = 0;
  for (size_t k = 1; k < result.size(); ++k) result[k] = std::max(result[k], result[k - 1] + 1);
  result.back() = timesteps - 1;
  for (size_t k = result.size() - 1; k-- > 0;) {
    result[k] = std::min(result[k], result[k + 1] - 1);
  }
  return result;
}

std::vector<int64_t> sampler_timesteps(const NoiseSchedule& schedule,
                                       const SamplerOptions& options) {
  return options.kind == SamplerKind::kDpmSolverPP2M
             ? log_snr_timesteps(schedule, options.steps)
             : sampling_timesteps(schedule.timesteps(), options.steps);
}

at::Tensor run_reverse_process(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                               const at::Tensor& x_start, const std::vector<int64_t>& timesteps,
                               const SamplerOptions& options, const NoiseSource& noise,
                               const StepCallback& on_step, const StepTransform& after_step) {
  validate(options, schedule.timesteps());
  if (options.kind == SamplerKind::kHeun) {
    throw std::runtime_error(
        "sample.sampler = heun: starts from pure noise only (sample, eval); denoising and "
        "inpainting start at a timestep: use ddpm, ddim or dpmpp2m");
  }
  if (x_start.dim() < 1 || x_start.numel() == 0) {
    std::ostringstream message;
    message << "sample: x_T has shape " << x_start.sizes() << "; want a non-empty [B, ...]";
    throw std::runtime_error(message.str());
  }
  for (size_t k = 0; k < timesteps.size(); ++k) {
    if (timesteps[k] < 0 || timesteps[k] >= schedule.timesteps() ||
        (k > 0 && timesteps[k] <= timesteps[k - 1])) {
      throw std::runtime_error("sample: timestep " + std::to_string(timesteps[k]) + " at " +
                               std::to_string(k) + ": want distinct ascending timesteps in [0, " +
                               std::to_string(schedule.timesteps()) + ")");
    }
  }
  if (timesteps.empty()) throw std::runtime_error("sample: no timesteps to visit");
  at::NoGradGuard no_grad;
  at::Tensor x = x_start.to(at::kFloat);
  const int64_t batch = x.size(0);
  const at::TensorOptions timestep_options =
      at::TensorOptions().dtype(at::kLong).device(x.device());

  const int64_t steps = static_cast<int64_t>(timesteps.size());
  MultistepState multistep;
  for (int64_t index = 0; index < steps; ++index) {
    const int64_t k = steps - 1 - index;
    const int64_t t = timesteps[static_cast<size_t>(k)];
    const int64_t t_next = k > 0 ? timesteps[static_cast<size_t>(k - 1)] : -1;
    const StepCoefficients c{schedule.alpha_bar(t), k > 0 ? schedule.alpha_bar(t_next) : 1.0};

    const PredictorOutput prediction = predictor.predict(x, at::full({batch}, t, timestep_options));
    check_prediction_shape(prediction.eps, x);
    if (prediction.x0.defined()) check_prediction_shape(prediction.x0, x);
    at::Tensor eps = prediction.eps.to(at::kFloat);
    // x0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar), eq. 4 solved for x0, unless the model gave it.
    at::Tensor x0 = prediction.x0.defined()
                        ? prediction.x0.to(at::kFloat)
                        : (x - eps * std::sqrt(1.0 - c.a)) * (1.0 / std::sqrt(c.a));
    if (options.clip_x0) {
      x0 = x0.clamp(-1.0, 1.0);  // not in place: x0 may be the predictor's own tensor
      // Keep DDIM's direction term consistent with the clipped x0 (as improved-diffusion does).
      if (options.kind == SamplerKind::kDdim) {
        eps = (x - x0 * std::sqrt(c.a)) * (1.0 / std::sqrt(1.0 - c.a));
      }
    }
    switch (options.kind) {
      case SamplerKind::kDdpm:
        x = ddpm_step(x, x0, c, options.variance, k == 0, noise);
        break;
      case SamplerKind::kDdim:
        x = ddim_step(x0, eps, c, options.eta, noise);
        break;
      case SamplerKind::kDpmSolverPP2M:
        x = dpm_solver_pp_2m_step(x, x0, c, multistep);
        break;
      case SamplerKind::kHeun:
        throw std::logic_error("run_reverse_process: heun has no timesteps");
    }
    if (after_step) x = after_step(index, t_next, x);
    if (on_step) on_step(index, t, x);
  }
  return x;
}

at::Tensor sample_from(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                       const at::Tensor& x_T, const SamplerOptions& options,
                       const NoiseSource& noise, const StepCallback& on_step) {
  validate(options, schedule.timesteps());
  if (options.kind == SamplerKind::kHeun) {
    const ContinuousDenoiser* denoiser = predictor.denoiser();
    if (denoiser == nullptr) {
      throw std::runtime_error(
          "sample.sampler = heun: needs a model trained with diffusion.formulation = edm");
    }
    return heun_sample(*denoiser, x_T, options, noise, on_step);
  }
  return run_reverse_process(predictor, schedule, x_T, sampler_timesteps(schedule, options),
                             options, noise, on_step);
}

at::Tensor sample(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                  at::IntArrayRef shape, const SamplerOptions& options, uint64_t seed,
                  int64_t first_index, const at::Device& device, const StepCallback& on_step) {
  validate(options, schedule.timesteps());
  if (shape.empty() || shape[0] < 1) {
    std::ostringstream message;
    message << "sample: shape " << shape << "; want a non-empty [B, ...]";
    throw std::runtime_error(message.str());
  }
  ImageNoise image_noise(seed, first_index, shape[0], /*draw_ahead=*/device.is_cuda());
  const at::IntArrayRef image_shape = shape.slice(1);
  const at::Tensor x_T = image_noise.draw(image_shape, device);
  return sample_from(
      predictor, schedule, x_T, options, [&] { return image_noise.draw(image_shape, device); },
      on_step);
}

namespace {

void check_cpu_generator(const at::Generator& generator) {
  if (!generator.device().is_cpu()) {
    throw std::runtime_error("sample: the generator is on " + generator.device().str() +
                             "; want a CPU generator (noise is drawn on the CPU)");
  }
}

// Standard normal noise drawn on the CPU, copied to `device` (through pinned memory for a GPU,
// so that the host does not wait for the GPU at every step).
at::Tensor cpu_randn(at::IntArrayRef shape, at::Generator& generator, const at::Device& device) {
  const bool pin = device.is_cuda();
  return at::randn(shape, generator, at::TensorOptions().dtype(at::kFloat).pinned_memory(pin))
      .to(device, /*non_blocking=*/pin);
}

}  // namespace

at::Tensor sample_from(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                       const at::Tensor& x_T, const SamplerOptions& options,
                       at::Generator& generator, const StepCallback& on_step) {
  validate(options, schedule.timesteps());
  check_cpu_generator(generator);
  const std::vector<int64_t> shape = x_T.sizes().vec();
  const at::Device device = x_T.device();
  return sample_from(
      predictor, schedule, x_T, options, [&] { return cpu_randn(shape, generator, device); },
      on_step);
}

at::Tensor sample(const EpsPredictor& predictor, const NoiseSchedule& schedule,
                  at::IntArrayRef shape, const SamplerOptions& options, at::Generator& generator,
                  const at::Device& device, const StepCallback& on_step) {
  validate(options, schedule.timesteps());
  check_cpu_generator(generator);
  const at::Tensor x_T = cpu_randn(shape, generator, device);
  return sample_from(predictor, schedule, x_T, options, generator, on_step);
}

}  // namespace difftrain::trainer
