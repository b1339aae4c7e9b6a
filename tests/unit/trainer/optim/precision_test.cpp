// Mixed precision: bf16 autocast runs the U-Net's convolutions and matmuls in bfloat16 while
// the parameters and their gradients stay fp32, and the scope restores autocast's state.
#include "trainer/optim/precision.h"

#include <ATen/autocast_mode.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "tests/unit/trainer/test_util.h"
#include "trainer/model/unet.h"

namespace difftrain::trainer {
namespace {

TEST(PrecisionTest, Bf16ScopeCastsMatmulsAndRestoresState) {
  const torch::Tensor a = torch::randn({4, 8});
  const torch::Tensor b = torch::randn({8, 3});
  ASSERT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  {
    AutocastScope scope(Precision::kBf16, torch::kCPU);
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16);
    {
      AutocastScope nested(Precision::kBf16, torch::kCPU);
      EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kBFloat16);  // the outer scope still holds
  }
  EXPECT_FALSE(at::autocast::is_autocast_enabled(at::kCPU));
  EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat);
  {
    AutocastScope scope(Precision::kFp32, torch::kCPU);
    EXPECT_EQ(torch::mm(a, b).scalar_type(), torch::kFloat);
  }
}

// The training step's recipe: forward under the scope, loss in fp32, backward outside.
TEST(PrecisionTest, Bf16ForwardKeepsFp32WeightsAndGradientsAndTracksFp32) {
  torch::manual_seed(3);
  UNet model(test_util::small_unet_options(16));
  test_util::randomise_parameters(model, 0.05);
  const torch::Tensor x = torch::randn({4, 1, 16, 16});
  const torch::Tensor t = torch::tensor({0, 10, 500, 999}, torch::kLong);
  const torch::Tensor target = torch::randn({4, 1, 16, 16});

  const torch::Tensor reference = model->forward(x, t).detach();
  torch::Tensor output;
  {
    AutocastScope scope(Precision::kBf16, torch::kCPU);
    output = model->forward(x, t);
  }
  EXPECT_EQ(output.scalar_type(), torch::kBFloat16);
  output = output.to(torch::kFloat);
  // bfloat16 keeps 8 significant bits (relative rounding 2^-9 per op), compounded over the
  // network's ~20 layers: the RMS error stays within 5% of the output's RMS (measured ~1-2%).
  const double scale = reference.pow(2).mean().sqrt().item<double>();
  const double error = (output.detach() - reference).pow(2).mean().sqrt().item<double>();
  EXPECT_LT(error, 0.05 * scale) << "RMS |bf16 - fp32| " << error << " vs RMS " << scale;
  EXPECT_GT(error, 0.0) << "the forward did not run in bf16";

  torch::mse_loss(output, target).backward();
  for (const auto& p : model->parameters()) {
    EXPECT_EQ(p.scalar_type(), torch::kFloat);
    ASSERT_TRUE(p.grad().defined());
    EXPECT_EQ(p.grad().scalar_type(), torch::kFloat);
    EXPECT_TRUE(torch::isfinite(p.grad()).all().item<bool>());
  }
}

}  // namespace
}  // namespace difftrain::trainer
