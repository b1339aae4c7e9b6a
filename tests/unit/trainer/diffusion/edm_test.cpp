// EDM tests against facts derived apart from the code's formulas: the preconditioned input and
// target have unit variance for data of std sigma_data (the paper's design rule), the ideal
// network minimises the training loss, the probability-flow ODE of Gaussian data has a closed
// form that heun must follow, and every sampler reaches Gaussian data's moments.
#include "trainer/diffusion/edm.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "trainer/diffusion/guidance.h"

namespace difftrain::trainer {
namespace {

constexpr double kSigmaData = 0.5;

// Gaussian data N(mu, s^2) per element: the ideal denoiser D(x; sigma) = mu + s^2 / (s^2 +
// sigma^2) (x - mu) (the posterior mean of x0 given x = x0 + sigma n).
struct GaussianData {
  double mu = 0.3;
  double s = 0.8;

  Denoiser denoiser(int* calls = nullptr) const {
    return [*this, calls](const at::Tensor& x, const at::Tensor& sigma) {
      if (calls != nullptr) ++*calls;
      const at::Tensor s2 = sigma.to(torch::kDouble).square().reshape({-1, 1, 1, 1});
      return ((x.to(torch::kDouble) - mu) * (s * s / (s * s + s2)) + mu).to(torch::kFloat);
    };
  }
  // F* = (D* - c_skip x) / c_out, called as EDM calls networks: with c_in x and c_noise.
  EdmNetwork ideal_network() const {
    return [*this](const at::Tensor& input, const at::Tensor& c_noise) {
      const at::Tensor sigma = (c_noise.to(torch::kDouble) * 4.0).exp();
      const EdmScalings c = edm_scalings(sigma, kSigmaData, input.to(torch::kDouble));
      const at::Tensor x = input.to(torch::kDouble) / c.c_in;
      const at::Tensor d = denoiser()(x, sigma).to(torch::kDouble);
      return ((d - c.c_skip * x) / c.c_out).to(torch::kFloat);
    };
  }
};

ContinuousDenoiser continuous(Denoiser denoise) {
  ContinuousDenoiser d;
  d.denoise = std::move(denoise);
  return d;  // EDM's sigma_min 0.002, sigma_max 80, rho 7
}

SamplerOptions heun_options(int64_t steps, double churn = 0.0) {
  SamplerOptions options;
  options.kind = SamplerKind::kHeun;
  options.steps = steps;
  options.churn = churn;
  options.clip_x0 = false;
  return options;
}

torch::Tensor randn(at::IntArrayRef shape, uint64_t seed) {
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::randn(shape, generator, torch::kFloat);
}

TEST(EdmTest, ScalingsFollowTableOne) {
  const torch::Tensor sigma = torch::tensor({0.002, 0.5, 3.0, 80.0}, torch::kDouble);
  const EdmScalings c = edm_scalings(sigma, kSigmaData, torch::zeros({4, 1, 2, 2}));
  ASSERT_EQ(c.c_skip.sizes(), (std::vector<int64_t>{4, 1, 1, 1}));
  ASSERT_EQ(c.c_noise.sizes(), (std::vector<int64_t>{4}));
  for (int64_t i = 0; i < 4; ++i) {
    const double s = sigma[i].item<double>();
    const double total = s * s + kSigmaData * kSigmaData;
    EXPECT_NEAR(c.c_skip[i].item<double>(), kSigmaData * kSigmaData / total, 1e-6);
    EXPECT_NEAR(c.c_out[i].item<double>() / (s * kSigmaData / std::sqrt(total)), 1.0, 1e-6);
    EXPECT_NEAR(c.c_in[i].item<double>() * std::sqrt(total), 1.0, 1e-6);
    EXPECT_NEAR(c.c_noise[i].item<double>(), std::log(s) / 4.0, 1e-6);
  }
}

// EDM's rule for c_in and c_out (appendix B.6): for data of std sigma_data, the network's
// input and its training target have unit variance at every noise level.
TEST(EdmTest, InputAndTargetHaveUnitVarianceForDataOfSigmaData) {
  const int64_t n = 20000;
  for (const double s : {0.01, 0.3, 1.0, 5.0, 60.0}) {
    const torch::Tensor x0 = randn({n, 1, 1, 1}, 1) * kSigmaData;
    const torch::Tensor eps = randn({n, 1, 1, 1}, 2);
    const EdmTrainingPair pair =
        edm_training_pair(x0, eps, torch::full({n}, s, torch::kFloat), kSigmaData);
    EXPECT_NEAR(pair.input.var().item<double>(), 1.0, 0.04) << "sigma " << s;
    EXPECT_NEAR(pair.target.var().item<double>(), 1.0, 0.04) << "sigma " << s;
    EXPECT_NEAR(pair.c_noise[0].item<double>(), std::log(s) / 4.0, 1e-6);
  }
}

// The loss is minimised by the network whose denoiser is the posterior mean: moving F* in any
// direction raises it (a wrong c_skip or c_out in the target would move the minimum).
TEST(EdmTest, TheIdealNetworkMinimisesTheTrainingLoss) {
  const GaussianData data;
  const EdmNetwork ideal = data.ideal_network();
  const int64_t n = 40000;
  for (const double s : {0.05, 0.5, 2.0, 20.0}) {
    const torch::Tensor x0 = randn({n, 1, 1, 1}, 3) * data.s + data.mu;
    const torch::Tensor eps = randn({n, 1, 1, 1}, 4);
    const torch::Tensor sigma = torch::full({n}, s, torch::kFloat);
    const EdmTrainingPair pair = edm_training_pair(x0, eps, sigma, kSigmaData);
    const torch::Tensor f = ideal(pair.input, pair.c_noise);
    const auto loss = [&](const torch::Tensor& out) {
      return (out - pair.target).square().mean().item<double>();
    };
    const double best = loss(f);
    for (const double shift : {-0.1, 0.1}) {
      EXPECT_LT(best, loss(f + shift)) << "sigma " << s << " shift " << shift;
      EXPECT_LT(best, loss(f * (1.0 + shift))) << "sigma " << s << " scale " << 1.0 + shift;
    }
    // And its denoiser is the posterior mean itself.
    const Denoiser d = edm_denoiser(ideal, kSigmaData);
    const torch::Tensor x = x0 + eps * s;
    EXPECT_LT((d(x, sigma) - data.denoiser()(x, sigma)).abs().max().item<double>(), 1e-4);
  }
}

TEST(EdmTest, KarrasSigmasAreEvenInSigmaToTheOneOverRho) {
  const std::vector<double> sigmas = karras_sigmas(18, 0.002, 80.0, 7.0);
  ASSERT_EQ(sigmas.size(), 19u);
  EXPECT_EQ(sigmas.front(), 80.0);
  EXPECT_EQ(sigmas[17], 0.002);
  EXPECT_EQ(sigmas.back(), 0.0);
  const double step = std::pow(80.0, 1.0 / 7.0) - std::pow(sigmas[1], 1.0 / 7.0);
  for (size_t i = 1; i < 18; ++i) {
    EXPECT_LT(sigmas[i], sigmas[i - 1]);
    EXPECT_NEAR(std::pow(sigmas[i - 1], 1.0 / 7.0) - std::pow(sigmas[i], 1.0 / 7.0), step, 1e-9);
  }
  EXPECT_EQ(karras_sigmas(1, 0.002, 80.0, 7.0), (std::vector<double>{80.0, 0.0}));
  EXPECT_THROW(karras_sigmas(0, 0.002, 80.0, 7.0), std::runtime_error);
  EXPECT_THROW(karras_sigmas(10, 80.0, 0.002, 7.0), std::runtime_error);
  EXPECT_THROW(karras_sigmas(10, 0.002, 80.0, 0.0), std::runtime_error);
}

// For Gaussian data the probability-flow ODE dx/dsigma = (x - D) / sigma has the solution
// x(sigma) = mu + (x(sigma_max) - mu) sqrt(s^2 + sigma^2) / sqrt(s^2 + sigma_max^2): heun must
// land on it with 2 steps - 1 denoiser calls, its error falling as a second-order method's
// (about 4x per doubling of the steps).
TEST(EdmTest, DeterministicHeunFollowsTheClosedFormFlowToSecondOrder) {
  const GaussianData data;
  int calls = 0;
  const ContinuousDenoiser denoiser = continuous(data.denoiser(&calls));
  const torch::Tensor x_T = randn({64, 1, 2, 2}, 5);
  const double s = data.s, top = 80.0;
  const torch::Tensor exact =
      (x_T.to(torch::kDouble) * top - data.mu) * (s / std::sqrt(s * s + top * top)) + data.mu;
  const torch::Tensor fine = sample_from(
      EpsPredictor::with_denoiser(
          [](const at::Tensor&, const at::Tensor&) { return PredictorOutput{}; }, denoiser),
      NoiseSchedule(BetaSchedule::kLinear, 1000), x_T, heun_options(256),
      [] { return torch::Tensor(); });
  EXPECT_EQ(calls, 2 * 256 - 1);
  EXPECT_LT((fine.to(torch::kDouble) - exact).abs().max().item<double>(), 2e-3);
  const auto error = [&](int64_t steps) {
    const torch::Tensor x0 = heun_sample(denoiser, x_T, heun_options(steps), {});
    return (x0.to(torch::kDouble) - exact).abs().max().item<double>();
  };
  const double e16 = error(16), e32 = error(32), e64 = error(64);
  EXPECT_GT(e16 / e32, 3.0) << e16 << " " << e32;
  EXPECT_GT(e32 / e64, 3.0) << e32 << " " << e64;
}

TEST(EdmTest, StochasticHeunReachesTheDataMomentsAndDrawsNoisePerLevel) {
  const GaussianData data;
  const ContinuousDenoiser denoiser = continuous(data.denoiser());
  const torch::Tensor x_T = randn({4096, 1, 2, 2}, 6);
  int draws = 0;
  at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(7);
  const torch::Tensor x0 = heun_sample(denoiser, x_T, heun_options(128, 40.0), [&] {
    ++draws;
    return torch::randn({4096, 1, 2, 2}, generator, torch::kFloat);
  });
  EXPECT_EQ(draws, 128);
  EXPECT_NEAR(x0.mean().item<double>(), data.mu, 0.02);
  EXPECT_NEAR(x0.std().item<double>(), data.s, 0.02);
  const torch::Tensor deterministic = heun_sample(denoiser, x_T, heun_options(128), {});
  EXPECT_GT((x0 - deterministic).abs().mean().item<double>(), 0.05);
}

// The bridge: at timestep t the VP state x_t is x = x_t / sqrt(abar) at sigma_t, so the
// timestep samplers reach the data through an EDM model too.
TEST(EdmTest, TimestepSamplersDriveAnEdmModel) {
  const GaussianData data;
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor =
      edm_predictor(continuous(edm_denoiser(data.ideal_network(), kSigmaData)), schedule);
  ASSERT_NE(predictor.denoiser(), nullptr);
  const torch::Tensor t = torch::tensor({0L, 250L, 999L});
  const torch::Tensor x_t = randn({3, 1, 2, 2}, 8);
  const PredictorOutput out = predictor.predict(x_t, t);
  for (int64_t i = 0; i < 3; ++i) {
    const double a = schedule.alpha_bar(t[i].item<int64_t>());
    const double sigma = std::sqrt((1.0 - a) / a);
    const torch::Tensor x = x_t[i].unsqueeze(0) / std::sqrt(a);
    const torch::Tensor expected = data.denoiser()(x, torch::full({1}, sigma, torch::kFloat));
    EXPECT_LT((out.x0[i] - expected[0]).abs().max().item<double>(), 1e-4) << "t " << i;
    EXPECT_LT((out.x0[i] * std::sqrt(a) + out.eps[i] * std::sqrt(1.0 - a) - x_t[i])
                  .abs()
                  .max()
                  .item<double>(),
              1e-4);
  }
  for (const SamplerKind kind : {SamplerKind::kDdim, SamplerKind::kDpmSolverPP2M}) {
    SamplerOptions options;
    options.kind = kind;
    options.steps = 200;
    options.clip_x0 = false;
    const torch::Tensor x0 =
        sample(predictor, schedule, {4096, 1, 2, 2}, options, 9, 0, torch::kCPU);
    EXPECT_NEAR(x0.mean().item<double>(), data.mu, 0.02) << setting_name(kind);
    EXPECT_NEAR(x0.std().item<double>(), data.s, 0.02) << setting_name(kind);
  }
}

// Classifier-free guidance wraps the network (c_noise in place of t): guiding F guides D by
// the same rule, D_w = (1 + w) D(label) - w D(no label).
TEST(EdmTest, GuidanceOnTheNetworkIsGuidanceOnTheDenoiser) {
  const ConditionalModelFunction network = [](const at::Tensor& input, const at::Tensor& c_noise,
                                              const at::Tensor& labels) {
    return input * (labels.to(torch::kFloat) + 1.0).reshape({-1, 1, 1, 1}) +
           c_noise.reshape({-1, 1, 1, 1});
  };
  const auto denoiser_for = [&](int64_t label, double w) {
    return edm_denoiser(classifier_free_guidance(network, label, /*no_label=*/5, w), kSigmaData);
  };
  const torch::Tensor x = randn({3, 1, 2, 2}, 10);
  const torch::Tensor sigma = torch::tensor({0.1f, 1.0f, 10.0f});
  const torch::Tensor guided = denoiser_for(2, 1.5)(x, sigma);
  const torch::Tensor expected =
      denoiser_for(2, 0.0)(x, sigma) * 2.5 - denoiser_for(2, -1.0)(x, sigma) * 1.5;
  EXPECT_LT((guided - expected).abs().max().item<double>(), 1e-5);
  EXPECT_GT((guided - denoiser_for(2, 0.0)(x, sigma)).abs().max().item<double>(), 0.1);
}

TEST(EdmTest, HeunRefusesTimestepModelsAndTimestepStarts) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  const EpsPredictor eps_model = [](const at::Tensor& x, const at::Tensor&) {
    return torch::zeros_like(x);
  };
  try {
    sample(eps_model, schedule, {1, 1, 2, 2}, heun_options(10), 0, 0, torch::kCPU);
    FAIL() << "heun sampled a model of discrete timesteps";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("diffusion.formulation = edm"), std::string::npos)
        << e.what();
  }
  try {
    run_reverse_process(eps_model, schedule, torch::zeros({1, 1, 2, 2}), {0, 50}, heun_options(2),
                        [] { return torch::Tensor(); });
    FAIL() << "heun ran from a timestep";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("use ddpm, ddim or dpmpp2m"), std::string::npos)
        << e.what();
  }
  SamplerOptions negative = heun_options(10, -1.0);
  EXPECT_THROW(validate(negative, 100), std::runtime_error);
}

}  // namespace
}  // namespace difftrain::trainer
