// Forward-process tests: beta / alpha_bar tables against the papers' formulas, q(x_t | x_0)
// against iterating the one-step forward process, and the eps-MSE objective.
#include "trainer/diffusion/schedule.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/trainer/test_util.h"
#include "trainer/diffusion/objective.h"

namespace difftrain::trainer {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Nichol & Dhariwal eq. 17 before normalisation.
double cosine_f(double t, double timesteps) {
  const double phase = (t / timesteps + 0.008) / 1.008 * kPi / 2.0;
  return std::cos(phase) * std::cos(phase);
}

using test_util::error_of;

TEST(NoiseScheduleTest, LinearBetasAndAlphaBarsMatchTheFormula) {
  for (const int64_t timesteps : {1000, 7}) {
    const NoiseSchedule schedule(BetaSchedule::kLinear, timesteps, 1e-4, 0.02);
    ASSERT_EQ(schedule.timesteps(), timesteps);
    ASSERT_EQ(schedule.betas().scalar_type(), torch::kDouble);
    ASSERT_EQ(schedule.alpha_bars().scalar_type(), torch::kDouble);
    ASSERT_EQ(schedule.betas().numel(), timesteps);
    ASSERT_TRUE(schedule.alpha_bars().device().is_cpu());
    double log_alpha_bar = 0.0;
    for (int64_t t = 0; t < timesteps; ++t) {
      const double beta = 1e-4 + (0.02 - 1e-4) * static_cast<double>(t) / (timesteps - 1.0);
      log_alpha_bar += std::log1p(-beta);
      ASSERT_NEAR(schedule.beta(t), beta, 1e-15) << "T " << timesteps << " t " << t;
      ASSERT_NEAR(schedule.alpha_bar(t) / std::exp(log_alpha_bar), 1.0, 1e-12) << t;
      ASSERT_DOUBLE_EQ(schedule.betas()[t].item<double>(), schedule.beta(t));
      ASSERT_DOUBLE_EQ(schedule.alpha_bars()[t].item<double>(), schedule.alpha_bar(t));
    }
  }
  // Spot values of the DDPM schedule: abar at T-1 is about 4.0e-5.
  const NoiseSchedule ddpm(BetaSchedule::kLinear, 1000);
  EXPECT_DOUBLE_EQ(ddpm.beta(0), 1e-4);
  EXPECT_DOUBLE_EQ(ddpm.beta(999), 0.02);
  EXPECT_NEAR(ddpm.alpha_bar(999), 4.036e-5, 0.01e-5);
  // One timestep: beta_start.
  EXPECT_DOUBLE_EQ(NoiseSchedule(BetaSchedule::kLinear, 1, 3e-3, 0.02).beta(0), 3e-3);
}

TEST(NoiseScheduleTest, CosineAlphaBarsMatchTheFormulaAndClip) {
  for (const int64_t timesteps : {1000, 37}) {
    const NoiseSchedule schedule(BetaSchedule::kCosine, timesteps);
    const double T = static_cast<double>(timesteps);
    // abar(t) = f(t+1) / f(0) wherever no beta was clipped (all t < T-1: f(T) = 0 forces beta = 1
    // at the last step only).
    for (const int64_t t : {int64_t{0}, int64_t{1}, timesteps / 3, timesteps / 2, timesteps - 2}) {
      EXPECT_NEAR(schedule.alpha_bar(t) / (cosine_f(t + 1.0, T) / cosine_f(0.0, T)), 1.0, 1e-12)
          << "T " << timesteps << " t " << t;
      EXPECT_NEAR(schedule.beta(t), 1.0 - cosine_f(t + 1.0, T) / cosine_f(t, T), 1e-12);
      EXPECT_LT(schedule.beta(t), 0.999);
    }
    EXPECT_DOUBLE_EQ(schedule.beta(timesteps - 1), 0.999);
    EXPECT_NEAR(schedule.alpha_bar(timesteps - 1), schedule.alpha_bar(timesteps - 2) * 0.001,
                1e-15);
    EXPECT_LE(schedule.betas().max().item<double>(), 0.999);
  }
  EXPECT_DOUBLE_EQ(NoiseSchedule(BetaSchedule::kCosine, 1).beta(0), 0.999);
}

TEST(NoiseScheduleTest, SnrIsStrictlyDecreasing) {
  for (const auto kind : {BetaSchedule::kLinear, BetaSchedule::kCosine}) {
    for (const int64_t timesteps : {1000, 37}) {
      const NoiseSchedule schedule(kind, timesteps);
      for (int64_t t = 1; t < timesteps; ++t) {
        ASSERT_LT(schedule.snr(t), schedule.snr(t - 1)) << setting_name(kind) << " t " << t;
      }
      const double abar = schedule.alpha_bar(timesteps / 2);
      EXPECT_DOUBLE_EQ(schedule.snr(timesteps / 2), abar / (1.0 - abar));
    }
  }
}

TEST(NoiseScheduleTest, CsvHasHeaderAndOneRowPerTimestep) {
  const NoiseSchedule schedule(BetaSchedule::kCosine, 37);
  std::istringstream csv(schedule.to_csv());
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line, "t,beta_t,alpha_bar_t,snr");
  int64_t rows = 0;
  while (std::getline(csv, line)) {
    std::istringstream row(line);
    int64_t t = 0;
    double beta = 0, alpha_bar = 0, snr = 0;
    char comma = 0;
    row >> t >> comma >> beta >> comma >> alpha_bar >> comma >> snr;
    ASSERT_FALSE(row.fail()) << line;
    EXPECT_EQ(t, rows);
    EXPECT_NEAR(beta, schedule.beta(t), 1e-11 * schedule.beta(t));
    EXPECT_NEAR(alpha_bar, schedule.alpha_bar(t), 1e-11 * schedule.alpha_bar(t));
    EXPECT_NEAR(snr, schedule.snr(t), 1e-11 * schedule.snr(t));
    ++rows;
  }
  EXPECT_EQ(rows, 37);
}

TEST(NoiseScheduleTest, BadNamesAndArgumentsThrowNamingTheValue) {
  EXPECT_NE(error_of([] { NoiseSchedule(BetaSchedule::kLinear, 0); }).find("timesteps = 0"),
            std::string::npos);
  EXPECT_NE(
      error_of([] { NoiseSchedule(BetaSchedule::kLinear, 10, 0.0, 0.02); }).find("beta_start = 0"),
      std::string::npos);
  EXPECT_THROW(NoiseSchedule(BetaSchedule::kLinear, 10, 0.03, 0.02), std::runtime_error);
  EXPECT_THROW(NoiseSchedule(BetaSchedule::kLinear, 10, 1e-4, 1.0), std::runtime_error);
  const NoiseSchedule schedule(BetaSchedule::kLinear, 10);
  EXPECT_THROW(schedule.beta(10), std::runtime_error);
  EXPECT_THROW(schedule.alpha_bar(-1), std::runtime_error);
}

TEST(QSampleTest, MatchesTheClosedFormPerSample) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  torch::manual_seed(0);
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    const torch::Tensor x0 = torch::randn({3, 2, 4, 4}, dtype);
    const torch::Tensor eps = torch::randn({3, 2, 4, 4}, dtype);
    const std::vector<int64_t> steps = {0, 500, 999};
    const torch::Tensor x_t = schedule.q_sample(x0, torch::tensor(steps), eps);
    ASSERT_EQ(x_t.scalar_type(), dtype);
    ASSERT_EQ(x_t.sizes(), x0.sizes());
    for (int64_t b = 0; b < 3; ++b) {
      const double abar = schedule.alpha_bar(steps[static_cast<size_t>(b)]);
      const torch::Tensor expected = std::sqrt(abar) * x0[b] + std::sqrt(1.0 - abar) * eps[b];
      const double tolerance = dtype == torch::kFloat ? 1e-6 : 1e-14;
      EXPECT_TRUE(torch::allclose(x_t[b], expected, tolerance, tolerance)) << b;
    }
  }
}

TEST(QSampleTest, EqualsIteratingTheOneStepForwardProcessInDistribution) {
  // Iterate x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) z from x_{-1} = x0 for n replicas of
  // four fixed pixels and compare the moments at several t with those of q_sample (fresh eps)
  // and with the analytic N(sqrt(abar) x0, 1 - abar). Tolerance: 5 standard errors of the
  // difference (SE(mean) = sqrt(var / n), SE(var) = var sqrt(2 / n)). Float32: 1000 steps of
  // rounding (~1e-4 relative) are far below those errors.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  torch::manual_seed(1);
  const int64_t n = 20000;
  const torch::Tensor x0 = torch::tensor({-1.0f, -0.3f, 0.5f, 1.0f});
  torch::Tensor x = x0.expand({n, 4}).clone();
  const std::vector<int64_t> checkpoints = {0, 49, 299, 999};
  size_t next = 0;
  for (int64_t s = 0; s < schedule.timesteps() && next < checkpoints.size(); ++s) {
    const double beta = schedule.beta(s);
    x = std::sqrt(1.0 - beta) * x + std::sqrt(beta) * torch::randn({n, 4});
    if (s != checkpoints[next]) continue;
    ++next;
    const torch::Tensor closed = schedule.q_sample(
        x0.expand({n, 4}), torch::full({n}, s, torch::kLong), torch::randn({n, 4}));
    const double abar = schedule.alpha_bar(s);
    const double variance = 1.0 - abar;
    const double se_mean = std::sqrt(variance / n);
    const double se_var = variance * std::sqrt(2.0 / n);
    for (int64_t pixel = 0; pixel < 4; ++pixel) {
      const double mean = std::sqrt(abar) * x0[pixel].item<double>();
      const torch::Tensor a = x.select(1, pixel);
      const torch::Tensor b = closed.select(1, pixel);
      EXPECT_NEAR(a.mean().item<double>(), b.mean().item<double>(), 5 * std::sqrt(2.0) * se_mean)
          << "t " << s << " pixel " << pixel;
      EXPECT_NEAR(a.var().item<double>(), b.var().item<double>(), 5 * std::sqrt(2.0) * se_var)
          << "t " << s << " pixel " << pixel;
      EXPECT_NEAR(a.mean().item<double>(), mean, 5 * se_mean) << "t " << s;
      EXPECT_NEAR(a.var().item<double>(), variance, 5 * se_var) << "t " << s;
    }
  }
  EXPECT_EQ(next, checkpoints.size());
}

TEST(QSampleTest, RejectsMismatchedShapesAndOutOfRangeTimesteps) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 10);
  const torch::Tensor x0 = torch::zeros({2, 3});
  EXPECT_THROW(schedule.q_sample(x0, torch::tensor({1, 2}), torch::zeros({2, 4})),
               std::runtime_error);
  EXPECT_THROW(schedule.q_sample(x0, torch::tensor({1}), torch::zeros({2, 3})), std::runtime_error);
  EXPECT_THROW(schedule.q_sample(x0, torch::tensor({1.0, 2.0}), torch::zeros({2, 3})),
               std::runtime_error);
  EXPECT_NE(error_of([&] {
              schedule.q_sample(x0, torch::tensor({1, 10}), torch::zeros({2, 3}));
            }).find("timestep 10"),
            std::string::npos);
}

TEST(ObjectiveTest, EpsMseLossIsTheMeanSquaredError) {
  const torch::Tensor eps = torch::tensor({{1.0f, 2.0f}, {3.0f, 4.0f}});
  const torch::Tensor eps_hat = torch::tensor({{1.0f, 0.0f}, {0.0f, 4.0f}}).requires_grad_(true);
  const torch::Tensor loss = eps_mse_loss(eps_hat, eps);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_FLOAT_EQ(loss.item<float>(), (0.0f + 4.0f + 9.0f + 0.0f) / 4.0f);
  loss.backward();  // d/d eps_hat = 2 (eps_hat - eps) / n
  EXPECT_TRUE(torch::allclose(eps_hat.grad(), torch::tensor({{0.0f, -1.0f}, {-1.5f, 0.0f}})));
}

TEST(ObjectiveTest, PerSampleMseAveragesOverAllButTheBatchDimension) {
  const torch::Tensor eps = torch::zeros({2, 1, 2, 2});
  const torch::Tensor eps_hat =
      torch::tensor({1.0f, 1.0f, 1.0f, 1.0f, 2.0f, 0.0f, 0.0f, 0.0f}).reshape({2, 1, 2, 2});
  const torch::Tensor per_sample = per_sample_mse(eps_hat, eps);
  ASSERT_EQ(per_sample.sizes(), torch::IntArrayRef({2}));
  EXPECT_FLOAT_EQ(per_sample[0].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(per_sample[1].item<float>(), 1.0f);
  EXPECT_FLOAT_EQ(per_sample.mean().item<float>(), eps_mse_loss(eps_hat, eps).item<float>());
  // Reduced precision (autocast output) is accumulated in float32.
  EXPECT_EQ(eps_mse_loss(eps_hat.to(torch::kBFloat16), eps).scalar_type(), torch::kFloat);
  EXPECT_EQ(per_sample_mse(eps_hat.to(torch::kDouble), eps).scalar_type(), torch::kDouble);
  EXPECT_THROW(eps_mse_loss(eps_hat, torch::zeros({2, 4})), std::runtime_error);
}

}  // namespace
}  // namespace difftrain::trainer
