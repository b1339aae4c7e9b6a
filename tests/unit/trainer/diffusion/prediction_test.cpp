// v-prediction: the target, the conversions to eps and x0 (x0 taken from v directly, exact at
// the noisiest timestep), and that every sampler, inpainting and denoising give the same images
// from the exact v-predictor of Gaussian data as from the exact eps-predictor.
#include "trainer/diffusion/prediction.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tests/unit/trainer/test_util.h"
#include "trainer/diffusion/denoise.h"
#include "trainer/diffusion/inpaint.h"

namespace difftrain::trainer {
namespace {

at::Generator cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

using test_util::error_of;

// sqrt(abar_t) and sqrt(1 - abar_t) per sample in float64, shaped [B, 1, ...] like x.
std::pair<torch::Tensor, torch::Tensor> coefficients(const NoiseSchedule& schedule,
                                                     const torch::Tensor& x,
                                                     const torch::Tensor& t) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  const torch::Tensor a = schedule.alpha_bars().index_select(0, t.cpu()).reshape(shape);
  return {a.sqrt(), (1 - a).sqrt()};
}

// Exact eps- and v-predictors for data x0 ~ N(mu, s^2) per element, in float64:
// E[eps | x_t] = sqrt(1-a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a), E[x0 | x_t] from eq. 4, and
// E[v | x_t] = sqrt(a) E[eps | x_t] - sqrt(1-a) E[x0 | x_t] (v is linear in eps and x0).
constexpr double kMu = 0.3;
constexpr double kSigma = 0.7;

torch::Tensor exact_eps(const NoiseSchedule& schedule, const torch::Tensor& x,
                        const torch::Tensor& t) {
  const auto [alpha, sigma] = coefficients(schedule, x, t);
  const torch::Tensor xd = x.to(torch::kDouble);
  return sigma * (xd - alpha * kMu) / (alpha.square() * kSigma * kSigma + sigma.square());
}

EpsPredictor eps_model(const NoiseSchedule& schedule) {
  return [&schedule](const torch::Tensor& x, const torch::Tensor& t) {
    return exact_eps(schedule, x, t).to(x.scalar_type());
  };
}

ModelFunction v_model(const NoiseSchedule& schedule) {
  return [&schedule](const torch::Tensor& x, const torch::Tensor& t) {
    const auto [alpha, sigma] = coefficients(schedule, x, t);
    const torch::Tensor eps = exact_eps(schedule, x, t);
    const torch::Tensor x0 = (x.to(torch::kDouble) - sigma * eps) / alpha;
    return (alpha * eps - sigma * x0).to(x.scalar_type());
  };
}

TEST(PredictionTest, VTargetIsTheVelocityAndConvertsBackToEps) {
  const NoiseSchedule schedule(BetaSchedule::kCosine, 100);
  const torch::Tensor x0 = torch::randn({4, 2, 3}, cpu_generator(1));
  const torch::Tensor eps = torch::randn({4, 2, 3}, cpu_generator(2));
  const torch::Tensor t = torch::tensor({0, 17, 50, 99});
  const torch::Tensor v = schedule.v_target(x0, t, eps);
  for (int64_t i = 0; i < 4; ++i) {
    const double a = schedule.alpha_bar(t[i].item<int64_t>());
    const torch::Tensor expected = std::sqrt(a) * eps[i] - std::sqrt(1 - a) * x0[i];
    EXPECT_TRUE(torch::allclose(v[i], expected, 1e-6, 1e-6)) << i;
  }
  // A model that outputs the true v of x_t gives back the true eps; eps passes through as is.
  const torch::Tensor x_t = schedule.q_sample(x0, t, eps);
  const EpsPredictor from_v = as_eps_predictor(
      [&](const torch::Tensor&, const torch::Tensor&) { return v; }, schedule, Prediction::kV);
  EXPECT_TRUE(torch::allclose(from_v(x_t, t), eps, 1e-5, 1e-5));
  const EpsPredictor from_eps = as_eps_predictor(
      [&](const torch::Tensor&, const torch::Tensor&) { return eps; }, schedule, Prediction::kEps);
  EXPECT_TRUE(torch::equal(from_eps(x_t, t), eps));
  EXPECT_NE(error_of([&] { schedule.v_target(x0, t, eps.narrow(0, 0, 2)); }).find("v_target"),
            std::string::npos);
  EXPECT_THROW(schedule.v_target(x0, torch::tensor({0, 1, 2, 100}), eps), std::runtime_error);
}

TEST(PredictionTest, EverySamplerTakesX0StraightFromAVModelAtTheNoisiestTimestep) {
  // Cosine t = T-1: abar = 2.5e-9. Going through eps, x0 = (x_t - sqrt(1-a) eps) / sqrt(a)
  // multiplies eps's float32 rounding (~1e-7) by 1/sqrt(a) = 2e4, a ~4e-3 error; from v,
  // x0 = sqrt(a) x_t - sqrt(1-a) v is exact to v's rounding. A one-step sampler returns its x0.
  const NoiseSchedule schedule(BetaSchedule::kCosine, 1000);
  const double a = schedule.alpha_bar(999);
  const torch::Tensor x0 = torch::linspace(-0.9, 0.9, 4 * 3 * 5, torch::kDouble).reshape({4, 3, 5});
  const torch::Tensor eps = torch::randn({4, 3, 5}, cpu_generator(6), torch::kDouble);
  const torch::Tensor x_t = (std::sqrt(a) * x0 + std::sqrt(1 - a) * eps).to(torch::kFloat);
  const torch::Tensor v = (std::sqrt(a) * eps - std::sqrt(1 - a) * x0).to(torch::kFloat);
  const EpsPredictor from_v = as_eps_predictor(
      [&](const torch::Tensor&, const torch::Tensor&) { return v; }, schedule, Prediction::kV);
  for (const auto kind : {SamplerKind::kDdpm, SamplerKind::kDdim, SamplerKind::kDpmSolverPP2M}) {
    SamplerOptions options;
    options.kind = kind;
    options.steps = 1;
    options.clip_x0 = false;
    at::Generator generator = cpu_generator(7);
    const torch::Tensor out = sample_from(from_v, schedule, x_t, options, generator);
    EXPECT_LT((out - x0).abs().max().item<double>(), 1e-6) << setting_name(kind);
  }
}

TEST(PredictionTest, EverySamplerGivesTheSameSamplesFromExactVAndEpsPredictors) {
  // Same x_T, same generator seed, so the stochastic samplers draw the same noise; the only
  // difference is float32 rounding of the v output and its conversion (~1e-7 relative).
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor via_eps = as_eps_predictor(eps_model(schedule), schedule, Prediction::kEps);
  const EpsPredictor via_v = as_eps_predictor(v_model(schedule), schedule, Prediction::kV);
  const torch::Tensor x_T = torch::randn({256, 3}, cpu_generator(3));
  struct Case {
    SamplerKind kind;
    int64_t steps;
    double eta;
  };
  for (const Case& c : {Case{SamplerKind::kDdpm, 50, 0.0}, Case{SamplerKind::kDdpm, 1000, 0.0},
                        Case{SamplerKind::kDdim, 20, 0.0}, Case{SamplerKind::kDdim, 20, 1.0},
                        Case{SamplerKind::kDpmSolverPP2M, 15, 0.0}}) {
    SamplerOptions options;
    options.kind = c.kind;
    options.steps = c.steps;
    options.eta = c.eta;
    options.clip_x0 = false;
    at::Generator g1 = cpu_generator(4);
    at::Generator g2 = cpu_generator(4);
    const torch::Tensor a = sample_from(via_eps, schedule, x_T, options, g1);
    const torch::Tensor b = sample_from(via_v, schedule, x_T, options, g2);
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4))
        << setting_name(c.kind) << " " << c.steps << " steps: max |diff| "
        << (a - b).abs().max().item<float>();
    EXPECT_GT(a.std().item<float>(), 0.5) << "the samples are not degenerate";
  }
}

TEST(PredictionTest, InpaintingAndDenoisingGiveTheSameImagesFromExactVAndEpsPredictors) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor via_eps = as_eps_predictor(eps_model(schedule), schedule, Prediction::kEps);
  const EpsPredictor via_v = as_eps_predictor(v_model(schedule), schedule, Prediction::kV);
  const torch::Tensor known = kMu + kSigma * torch::randn({2, 5, 5}, cpu_generator(8));
  torch::Tensor fill = torch::zeros({1, 5, 5});
  fill.narrow(2, 1, 3).fill_(1.0);
  const torch::Tensor images = known.unsqueeze(0).repeat({8, 1, 1, 1});
  for (const SamplerKind kind :
       {SamplerKind::kDdpm, SamplerKind::kDdim, SamplerKind::kDpmSolverPP2M}) {
    SamplerOptions options;
    options.kind = kind;
    options.steps = 20;
    options.clip_x0 = false;
    const torch::Tensor a = inpaint(via_eps, schedule, known, fill, 8, options, 3, 0, torch::kCPU);
    const torch::Tensor b = inpaint(via_v, schedule, known, fill, 8, options, 3, 0, torch::kCPU);
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4))
        << "inpaint " << setting_name(kind) << ": max |diff| " << (a - b).abs().max().item<float>();
    const torch::Tensor c = denoise(via_eps, schedule, images, 0.6, options, 3, 0);
    const torch::Tensor d = denoise(via_v, schedule, images, 0.6, options, 3, 0);
    EXPECT_TRUE(torch::allclose(c, d, 1e-4, 1e-4))
        << "denoise " << setting_name(kind) << ": max |diff| " << (c - d).abs().max().item<float>();
  }
}

}  // namespace
}  // namespace difftrain::trainer
