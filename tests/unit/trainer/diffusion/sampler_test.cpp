// Sampler tests with the exact eps-predictor of Gaussian data N(mu, s^2), checked against facts
// derived apart from the samplers' formulas (deterministic DDIM turns the standardised state by
// known angles, a stationary Gaussian chain is its own reverse, the mean is preserved, fine steps
// reach the data's moments), plus determinism, callbacks and validation.
#include "trainer/diffusion/sampler.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
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

std::string name_of(const SamplerOptions& options) {
  return setting_name(options.kind) + " steps " + std::to_string(options.steps) + " eta " +
         std::to_string(options.eta) + " " + setting_name(options.variance);
}

struct Moments {
  double mean;
  double variance;
};

Moments moments_of(const torch::Tensor& x) {
  const torch::Tensor d = x.to(torch::kDouble);
  return {d.mean().item<double>(), d.var().item<double>()};
}

using test_util::ddim_gaussian_gain;
using test_util::error_of;
using test_util::gaussian_eps_predictor;
using test_util::standardised;

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
      EXPECT_LE(std::abs(lambda(schedule, ts[k]) - target), grid_step) << setting_name(kind) << k;
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

TEST(SamplerTest, DdimWithEtaZeroTurnsGaussianDataByTheAnglesItSteps) {
  // Each sample must end at mu + s g w_T: w_T is x_T standardised, g the product of the cosines
  // of the angles the run steps (ddim_gaussian_gain). Every intermediate state enters, so a wrong
  // coefficient or timestep at any step moves the result; g is 0.63 to 0.999 here, so the step
  // counts are told apart too.
  constexpr double mu = 0.5;
  constexpr double s = 0.8;
  const torch::Tensor x_T = torch::randn({4096}, cpu_generator(3));
  for (const auto kind : {BetaSchedule::kLinear, BetaSchedule::kCosine}) {
    const NoiseSchedule schedule(kind, 1000);
    const EpsPredictor predictor = gaussian_eps_predictor(schedule, mu, s);
    const double a_last = schedule.alpha_bar(999);
    for (const int64_t steps : {1, 2, 5, 10, 50, 1000}) {
      const SamplerOptions options = options_for(SamplerKind::kDdim, steps);
      at::Generator generator = cpu_generator(4);
      const torch::Tensor x0 = sample_from(predictor, schedule, x_T, options, generator);
      const std::vector<int64_t> ts = sampler_timesteps(schedule, options);
      const torch::Tensor expected =
          mu + s * ddim_gaussian_gain(schedule, ts, s) * standardised(x_T, a_last, mu, s);
      // Float32 state: the first step's x0 = (x_T - sqrt(1-a) eps) / sqrt(a) amplifies the
      // rounding of x_T and eps (|x_T| < 5: ~3e-7) by 1/sqrt(abar_{T-1}) (158 linear, 2e4
      // cosine), and the next state takes sqrt(abar) of it, abar at the next timestep visited (1
      // after a single step). Rounding of the state accumulates over the steps too: 1.04e-5 at
      // 1000 linear steps, hence 2e-5; a wrong coefficient at any step moves x0 by 1e-3 or more.
      const double a_next = ts.size() > 1 ? schedule.alpha_bar(ts[ts.size() - 2]) : 1.0;
      const double tolerance = 2e-5 + 3e-7 * std::sqrt(a_next / a_last);
      EXPECT_LT((x0 - expected).abs().max().item<double>(), tolerance)
          << setting_name(kind) << " " << steps << " steps";
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
    EXPECT_EQ(indices, std::vector<int64_t>({0, 1, 2, 3, 4, 5, 6, 7, 8})) << setting_name(kind);
    EXPECT_EQ(ts, expected_ts) << setting_name(kind);
    EXPECT_TRUE(torch::equal(last, x0)) << setting_name(kind);
  }
}

TEST(SamplerTest, DdimWithEtaOneIsTheRespacedDdpmWithPosteriorVariance) {
  // Song et al. sec. 4.1: eta = 1 makes the DDIM step the DDPM posterior step; with the same
  // generator both draw the same noise in the same order.
  const NoiseSchedule schedule(BetaSchedule::kCosine, 200);
  const EpsPredictor predictor = gaussian_eps_predictor(schedule, 0.2, 0.6);
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
  // Bias of the chain itself (computed offline for T = 1000 linear): variance +0.08%
  // (sigma^2 = beta) and -1.05% (posterior); mean < 1e-4. Tolerance: that bias plus 4.5 standard
  // errors: mean +-0.016, variance +-4% relative.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor = gaussian_eps_predictor(schedule, kMu, kSigma);
  const double se_mean = kSigma / std::sqrt(static_cast<double>(kSamples));
  for (const auto variance : {DdpmVariance::kBeta, DdpmVariance::kPosterior}) {
    at::Generator generator = cpu_generator(21);
    const Moments m = moments_of(sample(predictor, schedule, {kSamples, 1},
                                        options_for(SamplerKind::kDdpm, 1000, 0.0, variance),
                                        generator, torch::kCPU));
    EXPECT_NEAR(m.mean, kMu, 4.5 * se_mean) << setting_name(variance);
    EXPECT_NEAR(m.variance / (kSigma * kSigma), 1.0, 0.04) << setting_name(variance);
  }
}

TEST(SamplerTest, FewStepChainsMatchClosedFormsOnDataWithTheNoisesVariance) {
  // Data N(mu, 1), x_T drawn from its marginal N(sqrt(abar_T) mu, 1): then y_t = x_t -
  // sqrt(abar_t) mu is N(0, 1) at every t, and the forward chain of y over any subset of
  // timesteps is the stationary Gaussian AR(1) chain y' = sqrt(1 - beta) y + sqrt(beta) z (beta =
  // 1 - abar / abar_prev), which is reversible. Facts that follow without the samplers' formulas:
  // - Every sampler keeps the mean: from E[x_t] = sqrt(abar_t) mu the exact predictor's mean
  //   E[E[x0 | x_t]] is mu, and each step maps it to the next marginal's mean, so x0 has mean mu.
  // - The exact reverse step is the forward step; DDPM with sigma^2 = beta is that step, so
  //   every state keeps variance 1, but for x0, where no noise is added: abar_{t_0}.
  // - DDPM with the posterior variance (and DDIM with eta 1, the same step) puts E[x0 | x_t] where
  //   the exact reverse step averages over x0 | x_t, whose variance is 1 - abar here: it loses
  //   (sqrt(abar') beta / (1 - abar))^2 (1 - abar), x0's weight in q(x_t' | x_t, x0) squared,
  //   and the later steps scale that loss by prod (1 - beta) = abar': x0's variance is
  //   1 - sum_k abar'^2 beta^2 / (1 - abar) over the steps.
  // - Deterministic DDIM: variance g^2 (ddim_gaussian_gain with s = 1).
  // Tolerance 5 standard errors; DDPM's two variances differ by 2-3x here.
  constexpr double mu = 0.5;
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor = gaussian_eps_predictor(schedule, mu, 1.0);
  const auto posterior_variance = [&](int64_t steps) {
    const std::vector<int64_t> ts = sampling_timesteps(schedule.timesteps(), steps);
    double lost = 0.0;
    for (size_t k = 0; k < ts.size(); ++k) {
      const double a = schedule.alpha_bar(ts[k]);
      const double a_prev = k > 0 ? schedule.alpha_bar(ts[k - 1]) : 1.0;
      const double beta = 1 - a / a_prev;
      lost += a_prev * a_prev * beta * beta / (1 - a);
    }
    return 1 - lost;
  };
  const auto ddim_variance = [&](int64_t steps) {
    const double gain = ddim_gaussian_gain(schedule, sampling_timesteps(1000, steps), 1.0);
    return gain * gain;
  };
  const double no_check = -1.0;  // the mean only
  struct Case {
    SamplerOptions options;
    double variance;
  };
  const std::vector<Case> cases = {
      {options_for(SamplerKind::kDdpm, 5), schedule.alpha_bar(0)},
      {options_for(SamplerKind::kDdpm, 10), schedule.alpha_bar(0)},
      {options_for(SamplerKind::kDdpm, 5, 0.0, DdpmVariance::kPosterior), posterior_variance(5)},
      {options_for(SamplerKind::kDdpm, 10, 0.0, DdpmVariance::kPosterior), posterior_variance(10)},
      {options_for(SamplerKind::kDdim, 10, 1.0), posterior_variance(10)},
      {options_for(SamplerKind::kDdim, 10, 0.0), ddim_variance(10)},
      {options_for(SamplerKind::kDdim, 10, 0.5), no_check},
      {options_for(SamplerKind::kDpmSolverPP2M, 10), no_check},
  };
  const double a_last = schedule.alpha_bar(999);
  const torch::Tensor x_T = std::sqrt(a_last) * mu + torch::randn({kSamples}, cpu_generator(30));
  for (const Case& c : cases) {
    at::Generator generator = cpu_generator(31);
    const Moments m = moments_of(sample_from(predictor, schedule, x_T, c.options, generator));
    const double variance = c.variance == no_check ? m.variance : c.variance;
    EXPECT_NEAR(m.mean, mu, 5 * std::sqrt(variance / kSamples)) << name_of(c.options);
    if (c.variance != no_check) {
      EXPECT_NEAR(m.variance, variance, 5 * variance * std::sqrt(2.0 / kSamples))
          << name_of(c.options);
    }
  }
}

TEST(SamplerTest, DdimWithAllStepsReproducesGaussianData) {
  // Fine steps converge to the data distribution: at 1000 steps the chain's own bias is -0.4%
  // (variance) and -0.003 (mean); tolerance bias + 4.5 SE: mean +-0.02, variance +-3.5%.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor = gaussian_eps_predictor(schedule, kMu, kSigma);
  at::Generator generator = cpu_generator(41);
  const Moments m =
      moments_of(sample(predictor, schedule, {kSamples, 1},
                        options_for(SamplerKind::kDdim, 1000, 0.0), generator, torch::kCPU));
  EXPECT_NEAR(m.mean, kMu, 0.02);
  EXPECT_NEAR(m.variance / (kSigma * kSigma), 1.0, 0.035);
}

TEST(SamplerTest, DpmSolverPlusPlusFollowsTheProbabilityFlowInFewSteps) {
  // The probability-flow ODE keeps the standardised state w (see ddim_gaussian_gain), so each
  // sample of the exact flow ends at mu + s w_T. DPM-Solver++(2M) must come close in 10-20 steps
  // and at least 3x closer than deterministic DDIM with as many model evaluations, which ends at
  // mu + s g w_T. Bounds: the largest error over 4096 samples (|w_T| < 4.5), measured
  // (linear / cosine) 0.11 / 0.12 at 10 steps, 0.06 / 0.07 at 15, 0.04 / 0.04 at 20, with ~30%
  // margin.
  struct Case {
    int64_t steps;
    double bound;
  };
  const torch::Tensor x_T = torch::randn({4096}, cpu_generator(50));
  for (const auto kind : {BetaSchedule::kLinear, BetaSchedule::kCosine}) {
    const NoiseSchedule schedule(kind, 1000);
    const EpsPredictor predictor = gaussian_eps_predictor(schedule, kMu, kSigma);
    const torch::Tensor w_T = standardised(x_T, schedule.alpha_bar(999), kMu, kSigma);
    const torch::Tensor flow = kMu + kSigma * w_T;
    for (const Case& c : {Case{10, 0.15}, Case{15, 0.09}, Case{20, 0.06}}) {
      const std::string name = setting_name(kind) + " " + std::to_string(c.steps) + " steps";
      at::Generator generator = cpu_generator(51);
      const torch::Tensor x0 = sample_from(
          predictor, schedule, x_T, options_for(SamplerKind::kDpmSolverPP2M, c.steps), generator);
      const double error = (x0 - flow).abs().max().item<double>();
      const double ddim_gain =
          ddim_gaussian_gain(schedule, sampling_timesteps(1000, c.steps), kSigma);
      const double ddim_error = ((1 - ddim_gain) * kSigma * w_T).abs().max().item<double>();
      EXPECT_LT(error, c.bound) << name;
      EXPECT_LT(3 * error, ddim_error) << name;
    }
  }
}

}  // namespace
}  // namespace difftrain::trainer
