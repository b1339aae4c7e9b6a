// Min-SNR-gamma weighting against the paper's definition: the weight min(SNR, gamma) applies to
// the loss in x0 space, whatever the network predicts.
#include "trainer/diffusion/objective.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {
namespace {

TEST(MinSnrTest, WeightsAreMinSnrGammaOverTheTargetsScale) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const torch::Tensor eps = min_snr_weights(schedule, Prediction::kEps, 5.0);
  const torch::Tensor v = min_snr_weights(schedule, Prediction::kV, 5.0);
  ASSERT_EQ(eps.size(0), 1000);
  for (const int64_t t : {0L, 10L, 60L, 200L, 500L, 999L}) {
    const double snr = schedule.snr(t);
    EXPECT_NEAR(eps[t].item<double>(), std::min(snr, 5.0) / snr, 1e-12) << t;
    EXPECT_NEAR(v[t].item<double>(), std::min(snr, 5.0) / (snr + 1), 1e-12) << t;
  }
  // Low noise (SNR > gamma) is down-weighted; high noise keeps weight 1 for eps.
  EXPECT_LT(eps[0].item<double>(), 1e-3);
  EXPECT_DOUBLE_EQ(eps[999].item<double>(), 1.0);
}

TEST(MinSnrTest, WeightedLossIsMinSnrTimesTheX0Loss) {
  // For x_t = sqrt(a) x0 + sqrt(1-a) eps, the x0 a prediction implies is
  // eps: (x_t - sqrt(1-a) eps_hat) / sqrt(a);  v: sqrt(a) x_t - sqrt(1-a) v_hat.
  // Hang et al.'s loss is min(SNR_t, gamma) ||x0 - x0_hat||^2; the weighted loss on the network's
  // own target must equal it, per sample, for both parameterisations.
  const NoiseSchedule schedule(BetaSchedule::kCosine, 1000);
  torch::manual_seed(3);
  const torch::Tensor t = torch::tensor({0L, 30L, 300L, 900L});
  const torch::Tensor x0 = torch::randn({4, 1, 3, 3}, torch::kDouble);
  const torch::Tensor eps = torch::randn({4, 1, 3, 3}, torch::kDouble);
  const torch::Tensor noise_in_prediction = 0.1 * torch::randn({4, 1, 3, 3}, torch::kDouble);
  const torch::Tensor a = schedule.alpha_bars().index_select(0, t).reshape({4, 1, 1, 1});
  const torch::Tensor x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps;
  const torch::Tensor snr = (a / (1 - a)).flatten();
  const torch::Tensor min_snr = snr.clamp_max(5.0);

  const torch::Tensor eps_hat = eps + noise_in_prediction;
  const torch::Tensor x0_from_eps = (x_t - (1 - a).sqrt() * eps_hat) / a.sqrt();
  const torch::Tensor v_target = a.sqrt() * eps - (1 - a).sqrt() * x0;
  const torch::Tensor v_hat = v_target + noise_in_prediction;
  const torch::Tensor x0_from_v = a.sqrt() * x_t - (1 - a).sqrt() * v_hat;
  for (int64_t i = 0; i < 4; ++i) {
    const auto one = [&](const torch::Tensor& x) { return x.narrow(0, i, 1); };
    const double x0_loss_eps = (one(x0) - one(x0_from_eps)).square().mean().item<double>();
    const double x0_loss_v = (one(x0) - one(x0_from_v)).square().mean().item<double>();
    const torch::Tensor w_eps =
        min_snr_weights(schedule, Prediction::kEps, 5.0).index_select(0, t.narrow(0, i, 1));
    const torch::Tensor w_v =
        min_snr_weights(schedule, Prediction::kV, 5.0).index_select(0, t.narrow(0, i, 1));
    const double want = min_snr[i].item<double>();
    EXPECT_NEAR(weighted_mse_loss(one(eps_hat), one(eps), w_eps).item<double>(), want * x0_loss_eps,
                1e-9 * std::max(1.0, want * x0_loss_eps))
        << "t " << t[i].item<int64_t>();
    EXPECT_NEAR(weighted_mse_loss(one(v_hat), one(v_target), w_v).item<double>(), want * x0_loss_v,
                1e-9 * std::max(1.0, want * x0_loss_v))
        << "t " << t[i].item<int64_t>();
  }
}

TEST(MinSnrTest, UnitWeightsGiveLSimpleAndBadGammaIsRefused) {
  torch::manual_seed(4);
  const torch::Tensor a = torch::randn({5, 2, 2});
  const torch::Tensor b = torch::randn({5, 2, 2});
  EXPECT_NEAR(weighted_mse_loss(a, b, torch::ones({5})).item<double>(),
              eps_mse_loss(a, b).item<double>(), 1e-6);
  const NoiseSchedule schedule(BetaSchedule::kLinear, 10);
  EXPECT_THROW(min_snr_weights(schedule, Prediction::kEps, 0.0), std::runtime_error);
}

}  // namespace
}  // namespace difftrain::trainer
