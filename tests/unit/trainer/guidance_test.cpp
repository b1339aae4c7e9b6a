// Classifier-free guidance: the formula's convention (w = 0 conditional, w = -1 unconditional)
// and the doubled-batch model call.
#include "trainer/diffusion/guidance.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

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

}  // namespace
}  // namespace difftrain::trainer
