// EDM preconditioning, training pair, heun sampler and timestep bridge; see edm.h.
#include "trainer/diffusion/edm.h"

#include <ATen/core/grad_mode.h>

#include <algorithm>
#include <cmath>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "trainer/common/text.h"

namespace difftrain::trainer {
namespace {

// sigma [B] as [B, 1, ...] for `like` [B, ...], in like's dtype (at least float32).
at::Tensor per_sample(const at::Tensor& values, const at::Tensor& like) {
  std::vector<int64_t> shape(static_cast<size_t>(like.dim()), 1);
  shape[0] = like.size(0);
  const at::ScalarType type = at::promote_types(like.scalar_type(), at::kFloat);
  return values.to(like.device(), type).reshape(shape);
}

void check_sigma(const at::Tensor& sigma, const at::Tensor& like, const char* caller) {
  if (sigma.dim() != 1 || like.dim() < 1 || sigma.size(0) != like.size(0)) {
    std::ostringstream message;
    message << caller << ": sigma has shape " << sigma.sizes() << " for a batch of shape "
            << like.sizes() << "; want [B]";
    throw std::runtime_error(message.str());
  }
}

}  // namespace

EdmScalings edm_scalings(const at::Tensor& sigma, double sigma_data, const at::Tensor& like) {
  check_sigma(sigma, like, "edm_scalings");
  const at::Tensor s = per_sample(sigma, like);
  const double sd2 = sigma_data * sigma_data;
  const at::Tensor total = s * s + sd2;  // sigma^2 + sd^2
  const at::Tensor root = total.sqrt();
  EdmScalings c;
  c.c_skip = sd2 / total;
  c.c_out = s * sigma_data / root;
  c.c_in = root.reciprocal();
  c.c_noise = sigma.to(like.device(), at::kFloat).log() * 0.25;
  return c;
}

Denoiser edm_denoiser(EdmNetwork network, double sigma_data) {
  return [network = std::move(network), sigma_data](const at::Tensor& x, const at::Tensor& sigma) {
    const EdmScalings c = edm_scalings(sigma, sigma_data, x);
    const at::Tensor x_wide = x.to(c.c_skip.scalar_type());
    const at::Tensor f = network(x_wide * c.c_in, c.c_noise);
    if (f.sizes() != x.sizes()) {
      std::ostringstream message;
      message << "edm_denoiser: the network returned shape " << f.sizes() << " for x of shape "
              << x.sizes();
      throw std::runtime_error(message.str());
    }
    return c.c_skip * x_wide + c.c_out * f.to(c.c_out.scalar_type());
  };
}

EdmTrainingPair edm_training_pair(const at::Tensor& x0, const at::Tensor& eps,
                                  const at::Tensor& sigma, double sigma_data) {
  if (x0.sizes() != eps.sizes()) {
    std::ostringstream message;
    message << "edm_training_pair: x0 has shape " << x0.sizes() << ", eps " << eps.sizes();
    throw std::runtime_error(message.str());
  }
  const EdmScalings c = edm_scalings(sigma, sigma_data, x0);
  const at::Tensor x = x0 + per_sample(sigma, x0) * eps;
  return {x * c.c_in, c.c_noise, (x0 - c.c_skip * x) / c.c_out};
}

EpsPredictor edm_predictor(ContinuousDenoiser denoiser, const NoiseSchedule& schedule) {
  const Denoiser denoise = denoiser.denoise;
  return EpsPredictor::with_denoiser(
      [denoise, schedule](const at::Tensor& x_t, const at::Tensor& t) {
        const at::Tensor x_float = x_t.to(at::kFloat);
        const at::Tensor alpha = schedule.sqrt_alpha_bar_at(t, x_float);
        const at::Tensor sigma_vp = schedule.sqrt_one_minus_alpha_bar_at(t, x_float);
        const at::Tensor x = x_float / alpha;
        const at::Tensor sigma = (sigma_vp / alpha).reshape({x_t.size(0)});
        const at::Tensor x0 = denoise(x, sigma);
        return PredictorOutput{(x_float - alpha * x0) / sigma_vp, x0};
      },
      std::move(denoiser));
}

std::vector<double> karras_sigmas(int64_t steps, double sigma_min, double sigma_max, double rho) {
  if (steps < 1) {
    throw std::runtime_error("sample.steps = " + std::to_string(steps) + ": must be >= 1");
  }
  if (!(sigma_min > 0.0 && sigma_max > sigma_min)) {
    throw std::runtime_error("diffusion.sigma_min = " + format_double(sigma_min) +
                             ", sigma_max = " + format_double(sigma_max) +
                             ": want 0 < sigma_min < sigma_max");
  }
  if (!(rho > 0.0)) {
    throw std::runtime_error("diffusion.rho = " + format_double(rho) + ": must be > 0");
  }
  std::vector<double> sigmas;
  const double high = std::pow(sigma_max, 1.0 / rho);
  const double low = std::pow(sigma_min, 1.0 / rho);
  for (int64_t i = 0; i < steps; ++i) {
    const double fraction = steps == 1 ? 0.0 : static_cast<double>(i) / (steps - 1);
    sigmas.push_back(std::pow(high + fraction * (low - high), rho));
  }
  sigmas.front() = sigma_max;  // exact ends: pow(pow(s, 1/rho), rho) may round
  if (steps > 1) sigmas.back() = sigma_min;
  sigmas.push_back(0.0);
  return sigmas;
}

at::Tensor heun_sample(const ContinuousDenoiser& denoiser, const at::Tensor& x_T,
                       const SamplerOptions& options, const NoiseSource& noise,
                       const StepCallback& on_step) {
  const std::vector<double> sigmas =
      karras_sigmas(options.steps, denoiser.sigma_min, denoiser.sigma_max, denoiser.rho);
  if (!(options.churn >= 0.0)) {
    throw std::runtime_error("sample.churn = " + format_double(options.churn) + ": must be >= 0");
  }
  if (x_T.dim() < 1 || x_T.numel() == 0) {
    std::ostringstream message;
    message << "sample: x_T has shape " << x_T.sizes() << "; want a non-empty [B, ...]";
    throw std::runtime_error(message.str());
  }
  at::NoGradGuard no_grad;
  const int64_t batch = x_T.size(0);
  const at::TensorOptions sigma_options =
      at::TensorOptions().dtype(at::kFloat).device(x_T.device());
  const auto denoise = [&](const at::Tensor& x, double sigma) {
    at::Tensor d = denoiser.denoise(x, at::full({batch}, sigma, sigma_options));
    if (d.sizes() != x.sizes()) {
      std::ostringstream message;
      message << "sample: the denoiser returned shape " << d.sizes() << " for x of shape "
              << x.sizes();
      throw std::runtime_error(message.str());
    }
    d = d.to(at::kFloat);
    return options.clip_x0 ? d.clamp(-1.0, 1.0) : d;
  };
  const double gamma =
      std::min(options.churn / static_cast<double>(options.steps), std::sqrt(2.0) - 1.0);
  at::Tensor x = x_T.to(at::kFloat) * sigmas.front();
  for (int64_t i = 0; i < options.steps; ++i) {
    const double sigma = sigmas[static_cast<size_t>(i)];
    const double sigma_next = sigmas[static_cast<size_t>(i + 1)];
    const double sigma_hat = sigma * (1.0 + gamma);
    at::Tensor x_hat = x;
    if (gamma > 0.0) {
      x_hat = x + noise() * std::sqrt(sigma_hat * sigma_hat - sigma * sigma);
    }
    const at::Tensor d = (x_hat - denoise(x_hat, sigma_hat)) / sigma_hat;
    x = x_hat + d * (sigma_next - sigma_hat);
    if (sigma_next > 0.0) {
      const at::Tensor d_next = (x - denoise(x, sigma_next)) / sigma_next;
      x = x_hat + (d + d_next) * (0.5 * (sigma_next - sigma_hat));
    }
    if (on_step) on_step(i, -1, x);
  }
  return x;
}

}  // namespace difftrain::trainer
