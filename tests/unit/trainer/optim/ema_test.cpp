// EMA with warm-up: after k updates the shadow equals the closed form
// s_k = prod_{j<=k} d_j * s_0 + sum_{i<=k} (1 - d_i) p_i prod_{i<j<=k} d_j, d_j = min(decay,
// (1+j)/(10+j)).
#include "trainer/optim/ema.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

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

}  // namespace
}  // namespace difftrain::trainer
