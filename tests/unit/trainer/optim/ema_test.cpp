// EMA with warm-up: after k updates the shadow equals the closed form
// s_k = prod_{j<=k} d_j * s_0 + sum_{i<=k} (1 - d_i) p_i prod_{i<j<=k} d_j, d_j = min(decay,
// (1+j)/(10+j)).
#include "trainer/optim/ema.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>
#include <vector>

namespace difftrain::trainer {
namespace {

struct One : torch::nn::Module {
  One() { w = register_parameter("w", torch::zeros({3}, torch::kDouble)); }
  torch::Tensor w;
};

TEST(Ema, MatchesClosedFormWithWarmup) {
  for (double decay : {0.9, 0.9999}) {
    One model;
    model.w.data().fill_(2.0);  // s_0
    Ema ema(model, decay);
    const int k = 25;
    std::vector<double> p(k + 1), d(k + 1);
    for (int j = 1; j <= k; ++j) {
      p[j] = std::sin(j) * 10.0;  // the weights after optimizer step j
      d[j] = std::min(decay, (1.0 + j) / (10.0 + j));
      model.w.data().fill_(p[j]);
      ema.update(model);
      EXPECT_DOUBLE_EQ(ema.decay_for(j), d[j]);
    }
    double expected = 2.0;
    for (int j = 1; j <= k; ++j) expected *= d[j];
    for (int i = 1; i <= k; ++i) {
      double term = (1.0 - d[i]) * p[i];
      for (int j = i + 1; j <= k; ++j) term *= d[j];
      expected += term;
    }
    One out;
    ema.copy_to(out);
    EXPECT_NEAR(out.w[0].item<double>(), expected, 1e-12) << "decay " << decay;
    EXPECT_EQ(ema.updates(), k);
  }
}

TEST(Ema, WarmupFollowsRecentWeightsEarly) {
  // With decay 0.9999 and no warm-up the EMA after 10 steps would still be ~the initial value.
  One model;
  Ema ema(model, 0.9999);
  for (int j = 1; j <= 10; ++j) {
    model.w.data().fill_(1.0);
    ema.update(model);
  }
  One out;
  ema.copy_to(out);
  EXPECT_GT(out.w[0].item<double>(), 0.5);
}

TEST(EmaPower, GammaOfStdFollowsEdm2) {
  // EDM2 (Karras et al. 2024), section 3.1: sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94.
  EXPECT_NEAR(ema_power_gamma(0.05), 16.97, 0.01);
  EXPECT_NEAR(ema_power_gamma(0.10), 6.94, 0.01);
  for (double std : {0.01, 0.05, 0.1, 0.2, 0.28}) {
    const double g = ema_power_gamma(std);
    EXPECT_NEAR((g + 1) / ((g + 2) * (g + 2) * (g + 3)), std * std, 1e-9 * std * std) << std;
  }
  for (double bad : {0.0, -0.1, 0.29, std::nan("")}) {
    EXPECT_THROW(ema_power_gamma(bad), std::invalid_argument) << bad;
  }
}

TEST(EmaPower, DecayIsPowerFunctionAndFirstUpdateCopies) {
  One model;
  model.w.data().fill_(5.0);
  const double g = ema_power_gamma(0.1);
  Ema ema(model, 0.9999, 0.1);
  EXPECT_DOUBLE_EQ(ema.decay_for(1), 0.0);
  for (int n : {2, 10, 400, 100000}) {
    EXPECT_DOUBLE_EQ(ema.decay_for(n), std::pow(1.0 - 1.0 / n, g + 1.0)) << n;
  }
  model.w.data().fill_(-3.0);
  ema.update(model);  // the initial weights are forgotten at once
  One out;
  ema.copy_to(out);
  EXPECT_DOUBLE_EQ(out.w[0].item<double>(), -3.0);
}

TEST(EmaPower, AveragesTheWholeRunWithTheRequestedRelativeWidth) {
  // The weight of the parameters after update i in the average after k updates:
  // (1 - d_i) prod_{i<j<=k} d_j. Their spread over i / k is the requested std, at any k.
  for (double std : {0.05, 0.1, 0.2}) {
    One model;
    Ema ema(model, 0.0, std);
    for (int k : {400, 4000}) {
      std::vector<double> w(k + 1);
      double tail = 1.0;
      for (int i = k; i >= 1; --i) {
        w[i] = (1.0 - ema.decay_for(i)) * tail;
        tail *= ema.decay_for(i);
      }
      double sum = 0, mean = 0, square = 0;
      for (int i = 1; i <= k; ++i) {
        const double x = static_cast<double>(i) / k;
        sum += w[i];
        mean += w[i] * x;
        square += w[i] * x * x;
      }
      mean /= sum;
      EXPECT_NEAR(sum, 1.0, 1e-9);
      EXPECT_NEAR(std::sqrt(square / sum - mean * mean), std, 0.02 * std) << std << " " << k;
    }
  }
}

}  // namespace
}  // namespace difftrain::trainer
