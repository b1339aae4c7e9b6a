// Classifier-free guidance: the formula's convention (w = 0 conditional, w = -1 unconditional),
// the doubled-batch model call, and that a guided v-model samples like the guided eps-model.
#include "trainer/diffusion/guidance.h"

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

namespace difftrain::trainer {
namespace {

TEST(GuidanceTest, FormulaReducesToConditionalAndUnconditionalAtTheDocumentedValues) {
  const torch::Tensor conditional = torch::randn({3, 2, 4});
  const torch::Tensor unconditional = torch::randn({3, 2, 4});
  EXPECT_TRUE(torch::allclose(guided_prediction(conditional, unconditional, 0.0), conditional));
  EXPECT_TRUE(torch::allclose(guided_prediction(conditional, unconditional, -1.0), unconditional));
  EXPECT_TRUE(torch::allclose(guided_prediction(conditional, unconditional, 2.0),
                              3 * conditional - 2 * unconditional, 1e-5, 1e-5));
  EXPECT_THROW(guided_prediction(conditional, unconditional.narrow(0, 0, 2), 1.0),
               std::runtime_error);
}

TEST(GuidanceTest, ModelIsCalledOnceOnTheDoubledBatchWithClassAndNoLabel) {
  // A stand-in network whose output encodes the label: x + 10 * label.
  std::vector<torch::Tensor> seen_labels;
  const ConditionalModelFunction model = [&](const torch::Tensor& x, const torch::Tensor& t,
                                             const torch::Tensor& labels) {
    EXPECT_EQ(t.size(0), x.size(0));
    seen_labels.push_back(labels.clone());
    return x + 10 * labels.to(x.scalar_type()).reshape({-1, 1});
  };
  const torch::Tensor x = torch::randn({2, 3});
  const torch::Tensor t = torch::tensor({5, 5});
  const torch::Tensor guided = classifier_free_guidance(model, 1, 4, 0.5)(x, t);
  ASSERT_EQ(seen_labels.size(), 1u);
  EXPECT_TRUE(torch::equal(seen_labels[0], torch::tensor({1, 1, 4, 4}).to(torch::kLong)));
  // 1.5 (x + 10) - 0.5 (x + 40) = x - 5.
  EXPECT_TRUE(torch::allclose(guided, x - 5, 1e-5, 1e-5));
  // w = 0: a single conditional call on the plain batch.
  seen_labels.clear();
  EXPECT_TRUE(torch::allclose(classifier_free_guidance(model, 2, 4, 0.0)(x, t), x + 20));
  ASSERT_EQ(seen_labels.size(), 1u);
  EXPECT_TRUE(torch::equal(seen_labels[0], torch::tensor({2, 2}).to(torch::kLong)));
}

// Per label l the exact predictor of data N(l - 1, 0.5^2) per element (label 2, "no label",
// stands for N(1, 0.5^2)), computed in float64 and returned as eps or, converted exactly, as v.
ConditionalModelFunction gaussian_class_model(const NoiseSchedule& schedule, Prediction output) {
  return [&schedule, output](const torch::Tensor& x, const torch::Tensor& t,
                             const torch::Tensor& labels) {
    const torch::Tensor a = schedule.alpha_bars().index_select(0, t).reshape({-1, 1});
    const torch::Tensor mu = labels.to(torch::kDouble).reshape({-1, 1}) - 1.0;
    const torch::Tensor xd = x.to(torch::kDouble);
    const torch::Tensor eps = (1 - a).sqrt() * (xd - a.sqrt() * mu) / (a * 0.25 + 1 - a);
    if (output == Prediction::kEps) return eps.to(x.scalar_type());
    const torch::Tensor x0 = (xd - (1 - a).sqrt() * eps) / a.sqrt();
    return (a.sqrt() * eps - (1 - a).sqrt() * x0).to(x.scalar_type());
  };
}

TEST(GuidanceTest, AGuidedVModelSamplesLikeTheGuidedEpsModel) {
  // Guidance is linear with weights summing to 1, so guiding v and then taking eps and x0 from it
  // is guiding eps and x0: every sampler must give the same images to float32 rounding.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor via_eps = as_eps_predictor(
      classifier_free_guidance(gaussian_class_model(schedule, Prediction::kEps), 0, 2, 1.5),
      schedule, Prediction::kEps);
  const EpsPredictor via_v = as_eps_predictor(
      classifier_free_guidance(gaussian_class_model(schedule, Prediction::kV), 0, 2, 1.5), schedule,
      Prediction::kV);
  const torch::Tensor x_T = torch::randn({256, 3}, at::make_generator<at::CPUGeneratorImpl>(1));
  for (const SamplerKind kind :
       {SamplerKind::kDdpm, SamplerKind::kDdim, SamplerKind::kDpmSolverPP2M}) {
    SamplerOptions options;
    options.kind = kind;
    options.steps = 20;
    options.clip_x0 = false;
    at::Generator g1 = at::make_generator<at::CPUGeneratorImpl>(2);
    at::Generator g2 = at::make_generator<at::CPUGeneratorImpl>(2);
    const torch::Tensor a = sample_from(via_eps, schedule, x_T, options, g1);
    const torch::Tensor b = sample_from(via_v, schedule, x_T, options, g2);
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4))
        << setting_name(kind) << ": max |diff| " << (a - b).abs().max().item<float>();
    // Guided towards class 0 (mean -1) away from "no label" (mean 1): mean -1 - 1.5 * 2.
    EXPECT_LT(a.mean().item<float>(), -2.0) << setting_name(kind);
  }
}

}  // namespace
}  // namespace difftrain::trainer
