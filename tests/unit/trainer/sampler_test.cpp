// Sampler tests with analytic eps-predictors: a single data point (recovered exactly) and
// Gaussian data N(mu, s^2) (moments reproduced), plus determinism, callbacks and validation.
#include "trainer/diffusion/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "tests/unit/trainer/test_util.h"

namespace difftrain::trainer {
namespace {

at::Generator cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

SamplerOptions options_for(SamplerKind kind, int64_t steps, double eta = 0.0,
                           DdpmVariance variance = DdpmVariance::kBeta) {
  SamplerOptions options;
  options.kind = kind;
  options.steps = steps;
  options.eta = eta;
  options.variance = variance;
  options.clip_x0 = false;
  return options;
}

// alpha_bar_t for each sample (float64), shaped to broadcast against x [B, ...].
torch::Tensor alpha_bar_of(const NoiseSchedule& schedule, const torch::Tensor& x,
                           const torch::Tensor& t) {
  std::vector<int64_t> shape(static_cast<size_t>(x.dim()), 1);
  shape[0] = x.size(0);
  return schedule.alpha_bars().index_select(0, t.cpu()).to(x.device()).reshape(shape);
}

// The exact eps-predictor when all data is the point x0_star: x_t = sqrt(a) x0* + sqrt(1-a) eps.
EpsPredictor point_predictor(const NoiseSchedule& schedule, const torch::Tensor& x0_star) {
  return [&schedule, x0_star](const torch::Tensor& x, const torch::Tensor& t) {
    // In float64, so that the predictor itself is exact to float32 rounding of its output.
    const torch::Tensor a = alpha_bar_of(schedule, x, t);
    return ((x.to(torch::kDouble) - a.sqrt() * x0_star) / (1 - a).sqrt()).to(x.scalar_type());
  };
}

// The exact (MMSE) eps-predictor for data x0 ~ N(mu, s^2) per element: x_t ~ N(sqrt(a) mu, v)
// with v = a s^2 + 1 - a and Cov(eps, x_t) = sqrt(1 - a), so E[eps | x_t] = sqrt(1-a)(x_t -
// sqrt(a) mu) / v.
EpsPredictor gaussian_predictor(const NoiseSchedule& schedule, double mu, double s) {
  return [&schedule, mu, s](const torch::Tensor& x, const torch::Tensor& t) {
    // The samplers pass one timestep for the whole batch: scalar coefficients keep it cheap.
    const int64_t step = t[0].item<int64_t>();
    EXPECT_TRUE(torch::equal(t, torch::full_like(t, step)));
    const double a = schedule.alpha_bar(step);
    const double gain = std::sqrt(1 - a) / (a * s * s + 1 - a);
    return (x - std::sqrt(a) * mu) * gain;
  };
}

struct Moments {
  double mean;
  double variance;
};

// Exact mean and variance of the discretised chains on Gaussian data with the MMSE predictor,
// derived from the Gaussian conditionals rather than from the sampler's code. With
// E[x0 | x] = mu + sqrt(a) s^2 (x - sqrt(a) mu) / v and E[eps | x] as above, a step is affine:
// DDIM (Song et al. eq. 12): x' = sqrt(a') E[x0|x] + d E[eps|x] + sigma z, d = sqrt(1-a'-sigma^2);
// DDPM (Ho et al. eq. 7): x' = c0 E[x0|x] + c1 x + sigma z, c0 = sqrt(a') beta / (1-a),
// c1 = sqrt(1-beta) (1-a') / (1-a), beta = 1 - a/a'. Both start from x_T ~ N(0, 1).
Moments chain_moments(const NoiseSchedule& schedule, const SamplerOptions& options, double mu,
                      double s) {
  const std::vector<int64_t> ts = sampling_timesteps(schedule.timesteps(), options.steps);
  double mean = 0.0;
  double variance = 1.0;
  for (int64_t k = options.steps - 1; k >= 0; --k) {
    const double a = schedule.alpha_bar(ts[static_cast<size_t>(k)]);
    const double a_prev = k > 0 ? schedule.alpha_bar(ts[static_cast<size_t>(k - 1)]) : 1.0;
    const double v = a * s * s + 1 - a;
    const double x0_gain = std::sqrt(a) * s * s / v;  // d E[x0|x] / dx
    const double eps_gain = std::sqrt(1 - a) / v;     // d E[eps|x] / dx
    const double centred = mean - std::sqrt(a) * mu;  // E[x] - E[x_t] under the data
    double sigma2 = 0.0;
    if (options.kind == SamplerKind::kDdim) {
      sigma2 = options.eta * options.eta * (1 - a_prev) / (1 - a) * (1 - a / a_prev);
      const double d = std::sqrt(1 - a_prev - sigma2);
      const double gain = std::sqrt(a_prev) * x0_gain + d * eps_gain;
      mean = std::sqrt(a_prev) * mu + gain * centred;
      variance = gain * gain * variance + sigma2;
    } else {
      const double beta = 1 - a / a_prev;
      const double c0 = std::sqrt(a_prev) * beta / (1 - a);
      const double c1 = std::sqrt(1 - beta) * (1 - a_prev) / (1 - a);
      if (k > 0) {
        sigma2 = options.variance == DdpmVariance::kBeta ? beta : beta * (1 - a_prev) / (1 - a);
      }
      const double gain = c0 * x0_gain + c1;
      mean = c0 * (mu + x0_gain * centred) + c1 * mean;
      variance = gain * gain * variance + sigma2;
    }
  }
  return {mean, variance};
}

// Exact mean and variance of the DPM-Solver++(2M) chain on Gaussian data with the MMSE
// predictor, from Lu et al. 2022 alg. 2 rather than from the sampler's code. The chain is
// deterministic and affine in x_T ~ N(0, 1): track x = A + B x_T and the previous
// x0-prediction (P, Q) the same way. lambda = log(sqrt(a) / sqrt(1 - a)), h = lambda' - lambda,
// x' = sqrt((1-a')/(1-a)) x - sqrt(a') expm1(-h) D, D = x0 first, then (1 + 1/2r) x0 - x0_prev / 2r
// with r = h_prev / h; the last step (a' = 1) returns x0.
Moments dpm_solver_moments(const NoiseSchedule& schedule, int64_t steps, double mu, double s) {
  const std::vector<int64_t> ts = log_snr_timesteps(schedule, steps);
  const auto lambda = [](double a) { return 0.5 * std::log(a / (1 - a)); };
  double A = 0.0, B = 1.0, P = 0.0, Q = 0.0, h_prev = 0.0;
  bool first = true;
  for (int64_t k = steps - 1; k >= 0; --k) {
    const double a = schedule.alpha_bar(ts[static_cast<size_t>(k)]);
    const double a_prev = k > 0 ? schedule.alpha_bar(ts[static_cast<size_t>(k - 1)]) : 1.0;
    const double x0_gain = std::sqrt(a) * s * s / (a * s * s + 1 - a);
    const double x0_A = mu + x0_gain * (A - std::sqrt(a) * mu);
    const double x0_B = x0_gain * B;
    if (k == 0) {
      A = x0_A;
      B = x0_B;
      break;
    }
    const double h = lambda(a_prev) - lambda(a);
    double d_A = x0_A, d_B = x0_B;
    if (!first) {
      const double w = 0.5 * h / h_prev;  // 1 / (2r)
      d_A = (1 + w) * x0_A - w * P;
      d_B = (1 + w) * x0_B - w * Q;
    }
    const double keep = std::sqrt((1 - a_prev) / (1 - a));
    const double push = -std::sqrt(a_prev) * std::expm1(-h);
    A = keep * A + push * d_A;
    B = keep * B + push * d_B;
    P = x0_A;
    Q = x0_B;
    h_prev = h;
    first = false;
  }
  return {A, B * B};
}

Moments moments_of(const torch::Tensor& x) {
  const torch::Tensor d = x.to(torch::kDouble);
  return {d.mean().item<double>(), d.var().item<double>()};
}

using test_util::error_of;

TEST(SamplerTest, SamplingTimestepsAreEvenlySpacedAndEndAtTheLastStep) {
  EXPECT_EQ(sampling_timesteps(1000, 1), std::vector<int64_t>({999}));
  EXPECT_EQ(sampling_timesteps(1000, 2), std::vector<int64_t>({0, 999}));
  EXPECT_EQ(sampling_timesteps(10, 4), std::vector<int64_t>({0, 3, 6, 9}));
  const std::vector<int64_t> all = sampling_timesteps(7, 7);
  EXPECT_EQ(all, std::vector<int64_t>({0, 1, 2, 3, 4, 5, 6}));
  const std::vector<int64_t> fifty = sampling_timesteps(1000, 50);
  ASSERT_EQ(fifty.size(), 50u);
  for (size_t k = 1; k < fifty.size(); ++k) {
    EXPECT_GE(fifty[k] - fifty[k - 1], 20);
    EXPECT_LE(fifty[k] - fifty[k - 1], 21);
  }
  EXPECT_THROW(sampling_timesteps(10, 11), std::runtime_error);
}

TEST(SamplerTest, LogSnrTimestepsAreEvenInLambdaDistinctAndSpanTheSchedule) {
  const auto lambda = [](const NoiseSchedule& schedule, int64_t t) {
    return 0.5 * std::log(schedule.snr(t));
  };
  for (const auto kind : {BetaSchedule::kLinear, BetaSchedule::kCosine}) {
    const NoiseSchedule schedule(kind, 1000);
    EXPECT_EQ(log_snr_timesteps(schedule, 1), std::vector<int64_t>({999}));
    EXPECT_EQ(log_snr_timesteps(schedule, 2), std::vector<int64_t>({0, 999}));
    for (const int64_t steps : {3, 10, 20, 100, 1000}) {
      const std::vector<int64_t> ts = log_snr_timesteps(schedule, steps);
      ASSERT_EQ(ts.size(), static_cast<size_t>(steps));
      EXPECT_EQ(ts.front(), 0);
      EXPECT_EQ(ts.back(), 999);
      for (size_t k = 1; k < ts.size(); ++k) EXPECT_GT(ts[k], ts[k - 1]) << steps;
    }
    // Both schedules reach lambda < -3 at T-1, so the floor applies: 9 points evenly spaced
    // from lambda_0 to -3 (to within one timestep's lambda step), then T-1.
    const std::vector<int64_t> ts = log_snr_timesteps(schedule, 10);
    const double spacing = (lambda(schedule, 0) - kLogSnrFloor) / 8;
    for (size_t k = 1; k + 1 < ts.size(); ++k) {
      const double target = lambda(schedule, 0) - spacing * static_cast<double>(k);
      const double grid_step = std::max(lambda(schedule, ts[k] - 1) - lambda(schedule, ts[k]),
                                        lambda(schedule, ts[k]) - lambda(schedule, ts[k] + 1));
      EXPECT_LE(std::abs(lambda(schedule, ts[k]) - target), grid_step) << to_string(kind) << k;
    }
  }
  // A schedule that never falls below the floor is spaced evenly all the way.
  const NoiseSchedule short_schedule(BetaSchedule::kLinear, 50);
  ASSERT_GT(0.5 * std::log(short_schedule.snr(49)), kLogSnrFloor);
  const std::vector<int64_t> ts = log_snr_timesteps(short_schedule, 5);
  EXPECT_EQ(ts.size(), 5u);
  EXPECT_EQ(ts.back(), 49);
  EXPECT_THROW(log_snr_timesteps(short_schedule, 51), std::runtime_error);
}

TEST(SamplerTest, ValidateAndParseNameTheBadValue) {
  EXPECT_NO_THROW(validate(options_for(SamplerKind::kDdim, 1000, 1.0), 1000));
  EXPECT_NE(
      error_of([] { validate(options_for(SamplerKind::kDdim, 0), 1000); }).find("sample.steps = 0"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              validate(options_for(SamplerKind::kDdpm, 1001), 1000);
            }).find("sample.steps = 1001"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              validate(options_for(SamplerKind::kDdim, 50, 1.5), 1000);
            }).find("sample.eta = 1.5"),
            std::string::npos);
  EXPECT_THROW(validate(options_for(SamplerKind::kDdim, 50, -0.1), 1000), std::runtime_error);
  EXPECT_THROW(validate(options_for(SamplerKind::kDdim, 50, std::nan("")), 1000),
               std::runtime_error);
  EXPECT_EQ(parse_sampler_kind("ddpm"), SamplerKind::kDdpm);
  EXPECT_EQ(parse_sampler_kind("ddim"), SamplerKind::kDdim);
  EXPECT_EQ(parse_sampler_kind("dpmpp2m"), SamplerKind::kDpmSolverPP2M);
  EXPECT_EQ(to_string(SamplerKind::kDpmSolverPP2M), "dpmpp2m");
  EXPECT_EQ(parse_ddpm_variance("beta"), DdpmVariance::kBeta);
  EXPECT_EQ(parse_ddpm_variance("posterior"), DdpmVariance::kPosterior);
  EXPECT_NE(error_of([] { parse_sampler_kind("dpm"); }).find("'dpm'"), std::string::npos);
  EXPECT_NE(error_of([] { parse_ddpm_variance("large"); }).find("'large'"), std::string::npos);
  // sample() validates before doing any work.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  at::Generator generator = cpu_generator(0);
  int calls = 0;
  const EpsPredictor counting = [&calls](const torch::Tensor& x, const torch::Tensor&) {
    ++calls;
    return torch::zeros_like(x);
  };
  EXPECT_THROW(sample(counting, schedule, {2, 3}, options_for(SamplerKind::kDdim, 101), generator,
                      torch::kCPU),
               std::runtime_error);
  EXPECT_EQ(calls, 0);
}

TEST(SamplerTest, DdimWithEtaZeroIsDeterministicGivenXT) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  // Any non-trivial predictor: the point is that eta = 0 never consumes generator noise.
  const EpsPredictor predictor = [](const torch::Tensor& x, const torch::Tensor& t) {
    return 0.5 * torch::tanh(x) + 1e-4 * t.to(x.scalar_type()).reshape({-1, 1, 1, 1});
  };
  const torch::Tensor x_T = torch::randn({3, 2, 4, 4}, cpu_generator(7));
  at::Generator first = cpu_generator(1);
  at::Generator second = cpu_generator(2);
  const SamplerOptions ddim = options_for(SamplerKind::kDdim, 20, 0.0);
  const torch::Tensor a = sample_from(predictor, schedule, x_T, ddim, first);
  const torch::Tensor b = sample_from(predictor, schedule, x_T, ddim, second);
  const torch::Tensor c = sample_from(predictor, schedule, x_T, ddim, first);
  EXPECT_TRUE(torch::equal(a, b));
  EXPECT_TRUE(torch::equal(a, c));
  // The same set-up with eta > 0 does depend on the generator (the test can tell them apart).
  const SamplerOptions noisy = options_for(SamplerKind::kDdim, 20, 0.5);
  EXPECT_FALSE(torch::equal(sample_from(predictor, schedule, x_T, noisy, first),
                            sample_from(predictor, schedule, x_T, noisy, second)));
  // sample() draws x_T from the generator, so the same seed gives the same images.
  at::Generator g1 = cpu_generator(11);
  at::Generator g2 = cpu_generator(11);
  EXPECT_TRUE(torch::equal(sample(predictor, schedule, {2, 1, 4, 4}, noisy, g1, torch::kCPU),
                           sample(predictor, schedule, {2, 1, 4, 4}, noisy, g2, torch::kCPU)));
}

TEST(SamplerTest, ExactPredictorOfASinglePointRecoversIt) {
  const torch::Tensor x0_star =
      torch::linspace(-0.9, 0.9, 4 * 3 * 5, torch::kDouble).reshape({4, 3, 5});
  for (const auto kind : {BetaSchedule::kLinear, BetaSchedule::kCosine}) {
    const NoiseSchedule schedule(kind, 1000);
    const EpsPredictor predictor = point_predictor(schedule, x0_star);
    struct Case {
      SamplerOptions options;
      const char* name;
    };
    const std::vector<Case> cases = {
        {options_for(SamplerKind::kDdim, 1, 0.0), "ddim 1 step"},
        {options_for(SamplerKind::kDdim, 7, 0.0), "ddim 7 steps"},
        {options_for(SamplerKind::kDdim, 1000, 0.0), "ddim 1000 steps"},
        {options_for(SamplerKind::kDdim, 7, 1.0), "ddim eta 1, 7 steps"},
        {options_for(SamplerKind::kDdpm, 7), "ddpm 7 steps"},
        {options_for(SamplerKind::kDdpm, 1000, 0.0, DdpmVariance::kPosterior), "ddpm 1000 steps"},
        {options_for(SamplerKind::kDpmSolverPP2M, 2), "dpmpp2m 2 steps"},
        {options_for(SamplerKind::kDpmSolverPP2M, 10), "dpmpp2m 10 steps"},
        {options_for(SamplerKind::kDpmSolverPP2M, 20), "dpmpp2m 20 steps"},
    };
    for (const Case& c : cases) {
      at::Generator generator = cpu_generator(3);
      const torch::Tensor x0 =
          sample(predictor, schedule, x0_star.sizes(), c.options, generator, torch::kCPU);
      // Float32 state: exact up to rounding. A single step jumps straight from x_T to x0 =
      // (x_T - sqrt(1-a) eps) / sqrt(a), which amplifies the rounding of x_T (|x_T| < 5, about
      // 3e-7) by 1/sqrt(abar_{T-1}) (158 linear, 2e4 cosine); more steps end at t = 0 (a ~ 1).
      const double tolerance =
          c.options.steps == 1 ? 3e-7 / std::sqrt(schedule.alpha_bar(999)) : 1e-6;
      EXPECT_LT((x0 - x0_star).abs().max().item<float>(), tolerance)
          << c.name << ", " << to_string(kind);
    }
  }
}

TEST(SamplerTest, StepCallbackSeesEveryStepInOrder) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  const EpsPredictor predictor = [](const torch::Tensor& x, const torch::Tensor&) {
    return 0.1 * x;
  };
  for (const auto kind : {SamplerKind::kDdpm, SamplerKind::kDdim, SamplerKind::kDpmSolverPP2M}) {
    std::vector<int64_t> indices;
    std::vector<int64_t> ts;
    torch::Tensor last;
    const StepCallback on_step = [&](int64_t index, int64_t t, const torch::Tensor& x_t) {
      indices.push_back(index);
      ts.push_back(t);
      last = x_t.clone();
    };
    at::Generator generator = cpu_generator(5);
    const torch::Tensor x0 =
        sample(predictor, schedule, {2, 3}, options_for(kind, 9), generator, torch::kCPU, on_step);
    std::vector<int64_t> expected_ts = sampler_timesteps(schedule, options_for(kind, 9));
    std::reverse(expected_ts.begin(), expected_ts.end());
    EXPECT_EQ(indices, std::vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8})) << to_string(kind);
    EXPECT_EQ(ts, expected_ts) << to_string(kind);
    EXPECT_TRUE(torch::equal(last, x0)) << to_string(kind);
  }
}

TEST(SamplerTest, DdimWithEtaOneIsTheRespacedDdpmWithPosteriorVariance) {
  // Song et al. sec. 4.1: eta = 1 makes the DDIM step the DDPM posterior step; with the same
  // generator both draw the same noise in the same order.
  const NoiseSchedule schedule(BetaSchedule::kCosine, 200);
  const EpsPredictor predictor = gaussian_predictor(schedule, 0.2, 0.6);
  const torch::Tensor x_T = torch::randn({64, 4}, cpu_generator(9));
  at::Generator g1 = cpu_generator(10);
  at::Generator g2 = cpu_generator(10);
  const torch::Tensor ddim =
      sample_from(predictor, schedule, x_T, options_for(SamplerKind::kDdim, 25, 1.0), g1);
  const torch::Tensor ddpm =
      sample_from(predictor, schedule, x_T,
                  options_for(SamplerKind::kDdpm, 25, 0.0, DdpmVariance::kPosterior), g2);
  EXPECT_TRUE(torch::allclose(ddim, ddpm, 1e-4, 1e-4)) << (ddim - ddpm).abs().max().item<float>();
}

// Gaussian data N(mu, s^2), n samples. Statistical tolerance: k standard errors,
// SE(mean) = s / sqrt(n), SE(variance) = s^2 sqrt(2 / n).
constexpr double kMu = 0.5;
constexpr double kSigma = 0.8;
constexpr int64_t kSamples = 50000;

TEST(SamplerTest, DdpmWithAllStepsReproducesGaussianData) {
  // Bias of the chain itself (exact moment propagation, computed offline for T = 1000 linear):
  // variance +0.08% (sigma^2 = beta) and -1.05% (posterior); mean < 1e-4. Tolerance: that bias
  // plus 4.5 standard errors: mean +-0.016, variance +-4% relative. The chain's exact moments
  // (chain_moments) must match to 5 standard errors.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor = gaussian_predictor(schedule, kMu, kSigma);
  const double se_mean = kSigma / std::sqrt(static_cast<double>(kSamples));
  for (const auto variance : {DdpmVariance::kBeta, DdpmVariance::kPosterior}) {
    at::Generator generator = cpu_generator(21);
    const Moments m = moments_of(sample(predictor, schedule, {kSamples, 1},
                                        options_for(SamplerKind::kDdpm, 1000, 0.0, variance),
                                        generator, torch::kCPU));
    EXPECT_NEAR(m.mean, kMu, 4.5 * se_mean) << to_string(variance);
    EXPECT_NEAR(m.variance / (kSigma * kSigma), 1.0, 0.04) << to_string(variance);
    const Moments exact =
        chain_moments(schedule, options_for(SamplerKind::kDdpm, 1000, 0.0, variance), kMu, kSigma);
    EXPECT_NEAR(m.variance, exact.variance, 5 * exact.variance * std::sqrt(2.0 / kSamples))
        << to_string(variance);
  }
}

TEST(SamplerTest, FewStepChainsHaveTheirExactGaussianMoments) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor = gaussian_predictor(schedule, kMu, kSigma);
  // Few steps: the discretised chain is not exactly N(mu, s^2) (deterministic DDIM shrinks the
  // variance, by ~37% at 10 steps for this data: each step multiplies the standard deviation by
  // a cosine of the step's angle), so compare with the chain's exact moments (chain_moments).
  // Tolerance: 5 standard errors. DDPM's two variances differ by ~2x here.
  for (const SamplerOptions& options :
       {options_for(SamplerKind::kDdim, 5, 0.0), options_for(SamplerKind::kDdim, 10, 0.0),
        options_for(SamplerKind::kDdim, 5, 1.0), options_for(SamplerKind::kDdim, 10, 0.5),
        options_for(SamplerKind::kDdpm, 10, 0.0, DdpmVariance::kBeta),
        options_for(SamplerKind::kDdpm, 10, 0.0, DdpmVariance::kPosterior)}) {
    at::Generator generator = cpu_generator(31);
    const Moments m =
        moments_of(sample(predictor, schedule, {kSamples, 1}, options, generator, torch::kCPU));
    const Moments exact = chain_moments(schedule, options, kMu, kSigma);
    const std::string name = to_string(options.kind) + " steps " + std::to_string(options.steps) +
                             " eta " + std::to_string(options.eta) + " " +
                             to_string(options.variance);
    EXPECT_NEAR(m.mean, exact.mean, 5 * std::sqrt(exact.variance / kSamples)) << name;
    EXPECT_NEAR(m.variance, exact.variance, 5 * exact.variance * std::sqrt(2.0 / kSamples)) << name;
  }
}

TEST(SamplerTest, DdimWithAllStepsReproducesGaussianData) {
  // Fine steps converge to the data distribution: at 1000 steps the chain's own bias is -0.4%
  // (variance) and -0.003 (mean); tolerance bias + 4.5 SE: mean +-0.02, variance +-3.5%.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor = gaussian_predictor(schedule, kMu, kSigma);
  at::Generator generator = cpu_generator(41);
  const Moments m =
      moments_of(sample(predictor, schedule, {kSamples, 1},
                        options_for(SamplerKind::kDdim, 1000, 0.0), generator, torch::kCPU));
  EXPECT_NEAR(m.mean, kMu, 0.02);
  EXPECT_NEAR(m.variance / (kSigma * kSigma), 1.0, 0.035);
}

TEST(SamplerTest, DpmSolverPlusPlusReproducesGaussianDataInFewSteps) {
  // The exact chain's bias (dpm_solver_moments; T = 1000, floor lambda >= -3), variance relative:
  // linear +6.8% / +3.5% / +1.9% at 10 / 15 / 20 steps, cosine +7.2% / +3.9% / +2.2%; the
  // mean is off by <= 0.003 because x_T ~ N(0, 1) is not exactly the forward marginal at T-1
  // (it is the same for every sampler). Deterministic DDIM on the same step counts is -37% /
  // -26% / -19% (linear), -24% / -16% / -12% (cosine). Tolerances: bias bound 8% / 5% / 3% on the
  // exact moments; the samples must match the exact moments to 5 standard errors and the data to
  // bias bound + 4.5 SE (variance: 4.5 sqrt(2/n) = 2.8%; mean: 0.003 + 4.5 s / sqrt(n) = 0.019).
  struct Case {
    int64_t steps;
    double variance_bias_bound;
  };
  const double se_mean = kSigma / std::sqrt(static_cast<double>(kSamples));
  const double se_variance_relative = std::sqrt(2.0 / kSamples);
  for (const auto kind : {BetaSchedule::kLinear, BetaSchedule::kCosine}) {
    const NoiseSchedule schedule(kind, 1000);
    const EpsPredictor predictor = gaussian_predictor(schedule, kMu, kSigma);
    for (const Case& c : {Case{10, 0.08}, Case{15, 0.05}, Case{20, 0.03}}) {
      const std::string name = to_string(kind) + " " + std::to_string(c.steps) + " steps";
      const Moments exact = dpm_solver_moments(schedule, c.steps, kMu, kSigma);
      EXPECT_NEAR(exact.mean, kMu, 0.003) << name;
      EXPECT_NEAR(exact.variance / (kSigma * kSigma), 1.0, c.variance_bias_bound) << name;
      // Far closer than DDIM with as many model evaluations: at least 3x smaller variance error.
      const Moments ddim =
          chain_moments(schedule, options_for(SamplerKind::kDdim, c.steps), kMu, kSigma);
      EXPECT_LT(3 * std::abs(exact.variance - kSigma * kSigma),
                std::abs(ddim.variance - kSigma * kSigma))
          << name;

      at::Generator generator = cpu_generator(51);
      const Moments m = moments_of(sample(predictor, schedule, {kSamples, 1},
                                          options_for(SamplerKind::kDpmSolverPP2M, c.steps),
                                          generator, torch::kCPU));
      EXPECT_NEAR(m.mean, exact.mean, 5 * std::sqrt(exact.variance / kSamples)) << name;
      EXPECT_NEAR(m.variance, exact.variance, 5 * exact.variance * se_variance_relative) << name;
      EXPECT_NEAR(m.mean, kMu, 0.003 + 4.5 * se_mean) << name;
      EXPECT_NEAR(m.variance / (kSigma * kSigma), 1.0,
                  c.variance_bias_bound + 4.5 * se_variance_relative)
          << name;
    }
  }
}

}  // namespace
}  // namespace difftrain::trainer
