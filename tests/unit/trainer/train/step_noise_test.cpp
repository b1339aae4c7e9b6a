// Per-step randomness: reproducible, independent of how the global batch is split over ranks,
// different across steps and seeds; and the learning-rate warm-up.
#include "trainer/train/step_noise.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "trainer/config/config.h"
#include "trainer/diffusion/schedule.h"
#include "trainer/train/trainer.h"

namespace difftrain::trainer {
namespace {

TEST(StepNoise, SplitOverRanksDrawsTheSameNoise) {
  const StepNoise whole = draw_step_noise(7, 3, 0, 8, 1000, {1, 4, 4});
  const StepNoise first = draw_step_noise(7, 3, 0, 4, 1000, {1, 4, 4});
  const StepNoise second = draw_step_noise(7, 3, 4, 4, 1000, {1, 4, 4});
  EXPECT_TRUE(torch::equal(torch::cat({first.eps, second.eps}), whole.eps));
  EXPECT_TRUE(torch::equal(torch::cat({first.timesteps, second.timesteps}), whole.timesteps));
}

TEST(StepNoise, ReproducibleAndVaried) {
  const StepNoise a = draw_step_noise(7, 3, 0, 64, 1000, {1, 4, 4});
  EXPECT_TRUE(torch::equal(a.eps, draw_step_noise(7, 3, 0, 64, 1000, {1, 4, 4}).eps));
  EXPECT_FALSE(torch::equal(a.eps, draw_step_noise(7, 4, 0, 64, 1000, {1, 4, 4}).eps));
  EXPECT_FALSE(torch::equal(a.eps, draw_step_noise(8, 3, 0, 64, 1000, {1, 4, 4}).eps));
  EXPECT_NEAR(a.eps.mean().item<double>(), 0.0, 0.15);
  EXPECT_NEAR(a.eps.std().item<double>(), 1.0, 0.1);
}

TEST(StepNoise, TimestepsAreUniformOverZeroToTMinusOne) {
  // t ~ U{0..T-1}: 40 000 draws (20 steps x 2000 positions, T = 1000, 40 per timestep) give
  // Pearson's chi-square with 999 degrees of freedom, mean 999 and standard deviation 44.7.
  // Accepted: [800, 1226], both ends ~4.75 standard deviations out (Wilson-Hilferty, p ~ 1e-6
  // each), so a draw that favours some timesteps or is too even (t = position mod T) falls
  // outside. One missing timestep (T-1, say) adds only ~40 to the statistic, so every count must
  // also be positive (a count of 0 has probability e^-40 per timestep).
  constexpr int64_t kTimesteps = 1000;
  constexpr int64_t kSteps = 20;
  constexpr int64_t kPositions = 2000;
  torch::Tensor counts = torch::zeros({kTimesteps}, torch::kLong);
  for (int64_t step = 0; step < kSteps; ++step) {
    const torch::Tensor t = draw_step_noise(5, step, 0, kPositions, kTimesteps, {1}).timesteps;
    ASSERT_GE(t.min().item<int64_t>(), 0);
    ASSERT_LT(t.max().item<int64_t>(), kTimesteps);
    counts += torch::bincount(t, {}, kTimesteps);
  }
  const double expected = static_cast<double>(kSteps * kPositions) / kTimesteps;
  const double chi_square =
      ((counts.to(torch::kDouble) - expected).square() / expected).sum().item<double>();
  EXPECT_GT(chi_square, 800.0);
  EXPECT_LT(chi_square, 1226.0);
  EXPECT_GT(counts.min().item<int64_t>(), 0) << "timestep " << counts.argmin().item<int64_t>();
}

TEST(StepNoise, LogNormalTimestepsFollowEdmsNoiseLevels) {
  // ln(sigma_t) of the drawn timesteps, sigma_t = sqrt((1 - abar_t) / abar_t), must follow
  // N(-1.2, 1.2) up to the schedule's grid: 40 000 draws, quantiles of the standard normal
  // checked to 0.02 in probability (the standard error is 0.0025; the grid moves ln(sigma) by
  // at most half a timestep's spacing, < 0.02 in the range that carries the mass here).
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const TimestepDistribution distribution = TimestepDistribution::log_normal(schedule, -1.2, 1.2);
  std::vector<double> z;
  for (int64_t step = 0; step < 20; ++step) {
    const torch::Tensor t = draw_step_noise(9, step, 0, 2000, distribution, {1}).timesteps;
    for (int64_t i = 0; i < t.size(0); ++i) {
      const double a = schedule.alpha_bar(t[i].item<int64_t>());
      z.push_back((0.5 * std::log((1 - a) / a) + 1.2) / 1.2);
    }
  }
  const auto fraction_below = [&](double q) {
    return static_cast<double>(std::count_if(z.begin(), z.end(), [&](double v) { return v < q; })) /
           static_cast<double>(z.size());
  };
  EXPECT_NEAR(fraction_below(-1.0), 0.1587, 0.02);
  EXPECT_NEAR(fraction_below(0.0), 0.5, 0.02);
  EXPECT_NEAR(fraction_below(1.0), 0.8413, 0.02);
  // Uniform timesteps would put half of them above t = 500, where ln(sigma) > 1.4 (z > 2.2).
  EXPECT_LT(1 - fraction_below(2.2), 0.03);
}

TEST(StepNoise, LogNormalTakesTheNearestSigmaOfTheSchedule) {
  const NoiseSchedule schedule(BetaSchedule::kCosine, 1000);
  const TimestepDistribution distribution = TimestepDistribution::log_normal(schedule, 0.0, 1.0);
  const auto log_sigma = [&](int64_t t) {
    const double a = schedule.alpha_bar(t);
    return 0.5 * std::log((1 - a) / a);
  };
  for (const int64_t t : {0L, 1L, 250L, 998L, 999L})
    EXPECT_EQ(distribution.nearest(log_sigma(t)), t);
  // Either side of the midpoint between two timesteps' ln(sigma) goes to the nearer one.
  const double mid = 0.5 * (log_sigma(400) + log_sigma(401));
  EXPECT_EQ(distribution.nearest(mid - 1e-9), 400);
  EXPECT_EQ(distribution.nearest(mid + 1e-9), 401);
  EXPECT_EQ(distribution.nearest(-100.0), 0);
  EXPECT_EQ(distribution.nearest(100.0), 999);
}

// EDM trains at the continuous sigma drawn; its timestep is that sigma's nearest one.
TEST(StepNoise, LogNormalDrawsKeepTheirContinuousSigma) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const TimestepDistribution distribution = TimestepDistribution::log_normal(schedule, -1.2, 1.2);
  const StepNoise noise = draw_step_noise(3, 1, 0, 4000, distribution, {1});
  ASSERT_EQ(noise.sigmas.sizes(), (std::vector<int64_t>{4000}));
  std::vector<double> log_sigma;
  for (int64_t i = 0; i < 4000; ++i) {
    const double sigma = noise.sigmas[i].item<double>();
    EXPECT_EQ(distribution.nearest(std::log(sigma)), noise.timesteps[i].item<int64_t>());
    log_sigma.push_back(std::log(sigma));
  }
  const torch::Tensor z = (torch::tensor(log_sigma) + 1.2) / 1.2;
  EXPECT_NEAR(z.mean().item<double>(), 0.0, 0.06);
  EXPECT_NEAR(z.std().item<double>(), 1.0, 0.05);
  // Not rounded to the grid: the sigmas are (almost surely) all different.
  EXPECT_EQ(std::get<0>(torch::_unique(noise.sigmas)).numel(), 4000);
  // Uniform timesteps have no continuous sigma.
  EXPECT_EQ(draw_step_noise(3, 1, 0, 8, 1000, {1}).sigmas.abs().sum().item<double>(), 0.0);
}

TEST(StepNoise, LabelDropoutIsPerSampleAndLeavesTheNoiseAlone) {
  const StepNoise plain = draw_step_noise(7, 3, 0, 400, 1000, {1, 2, 2});
  const StepNoise half = draw_step_noise(7, 3, 0, 400, 1000, {1, 2, 2}, 0.5);
  EXPECT_TRUE(torch::equal(plain.eps, half.eps));
  EXPECT_TRUE(torch::equal(plain.timesteps, half.timesteps));
  EXPECT_FALSE(plain.drop_label.any().item<bool>());
  EXPECT_TRUE(draw_step_noise(7, 3, 0, 400, 1000, {1, 2, 2}, 1.0).drop_label.all().item<bool>());
  // 400 Bernoulli(0.5) draws: 200 +- 4.5 standard deviations (10).
  EXPECT_NEAR(half.drop_label.sum().item<int64_t>(), 200, 45);
  // Independent of the rank split (and so of world size), like the noise.
  const StepNoise first = draw_step_noise(7, 3, 0, 150, 1000, {1, 2, 2}, 0.5);
  const StepNoise second = draw_step_noise(7, 3, 150, 250, 1000, {1, 2, 2}, 0.5);
  EXPECT_TRUE(torch::equal(torch::cat({first.drop_label, second.drop_label}), half.drop_label));
  EXPECT_FALSE(torch::equal(half.drop_label,
                            draw_step_noise(7, 4, 0, 400, 1000, {1, 2, 2}, 0.5).drop_label));
}

TEST(LearningRate, LinearWarmupThenConstant) {
  const Config c = load_config("", {"train.lr=0.001", "train.warmup_steps=10"});
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 0), 0.0001);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 4), 0.0005);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 9), 0.001);
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 5000), 0.001);
  const Config none = load_config("", {"train.lr=0.001", "train.warmup_steps=0"});
  EXPECT_DOUBLE_EQ(learning_rate_at(none, 0), 0.001);
}

TEST(LearningRate, CosineDecayReachesZeroAtTheLastStep) {
  const Config c = load_config(
      "", {"train.lr=0.001", "train.warmup_steps=10", "train.steps=110", "train.lr_decay=cosine"});
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 4), 0.0005);  // warm-up unchanged
  EXPECT_DOUBLE_EQ(learning_rate_at(c, 10), 0.001);  // the peak, then half a cosine
  EXPECT_NEAR(learning_rate_at(c, 60), 0.0005, 1e-15);
  EXPECT_NEAR(learning_rate_at(c, 35), 0.0005 * (1 + std::cos(M_PI / 4)), 1e-15);
  EXPECT_NEAR(learning_rate_at(c, 110), 0.0, 1e-18);
  for (int64_t step = 11; step <= 110; ++step) {
    EXPECT_LT(learning_rate_at(c, step), learning_rate_at(c, step - 1)) << step;
  }
}

}  // namespace
}  // namespace difftrain::trainer
