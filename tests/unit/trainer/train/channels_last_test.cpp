// train.channels_last: NHWC weights keep their layout inside the gradient buckets, the
// optimizer and the EMA; a channels-last step equals the contiguous one up to rounding; optimizer
// state and model weights cross between the layouts through checkpoints.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "launch/gradient_reducer.h"
#include "tests/unit/trainer/test_util.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/objective.h"
#include "trainer/optim/bucket_adamw.h"
#include "trainer/optim/ema.h"

namespace difftrain::trainer {
namespace {

constexpr auto kNhwc = at::MemoryFormat::ChannelsLast;
constexpr auto kNchw = at::MemoryFormat::Contiguous;

// The trainer's objects for one process: the model's gradients in one bucket, the optimizer
// over it and the EMA, made after the model's memory format was set.
struct Training {
  Training(int64_t image_size, at::MemoryFormat format)
      : format(format), model(options(image_size)) {
    torch::manual_seed(11);
    test_util::randomise_parameters(model, 0.05);
    set_memory_format(*model, format);
    bucket_list = single_gradient_bucket(model->parameters());
    AdamWSettings settings;
    settings.max_grad_norm = 1.0;
    // Large: the update is nearly linear in the gradient, so that rounding differences between
    // the layouts stay rounding-sized instead of being amplified to ~lr for weights whose
    // gradient is a near-cancelling sum (Adam's per-weight normalisation), while a moment
    // stored in the wrong place still moves a weight by ~lr.
    settings.eps = 0.1;
    optimizer = std::make_unique<BucketAdamW>(model->parameters(), bucket_list, settings);
    ema = std::make_unique<Ema>(*model, 0.9);
  }
  static UNetOptions options(int64_t image_size) {
    return test_util::small_unet_options(image_size, /*in_channels=*/3);
  }
  // One training step on (x_t, t, eps); returns the loss.
  double step(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& eps, double lr) {
    bucket_list.front().flat.zero_();
    const at::Tensor loss = eps_mse_loss(model->forward(x_t.contiguous(format), t), eps);
    loss.backward();
    optimizer->step(lr);
    ema->update(*model);
    return loss.item<double>();
  }

  at::MemoryFormat format;
  UNet model;
  std::vector<launch::GradientBucket> bucket_list;
  std::unique_ptr<BucketAdamW> optimizer;
  std::unique_ptr<Ema> ema;
};

double max_difference(const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, (a[i] - b[i]).abs().max().item<double>());
  }
  return worst;
}

std::vector<at::Tensor> ema_weights(const Training& training) {
  UNet copy(Training::options(training.model->options().image_size));
  training.ema->copy_to(*copy);
  return copy->parameters();
}

TEST(ChannelsLast, BucketViewsFollowTheWeightsLayout) {
  const at::Tensor flat = torch::zeros({300});
  const at::Tensor weight = torch::randn({4, 3, 3, 3}).contiguous(kNhwc);
  const at::Tensor view = launch::bucket_view(flat, 10, weight);
  EXPECT_EQ(view.strides(), weight.strides());
  EXPECT_TRUE(view.is_alias_of(flat));
  view.copy_(weight);
  // The bucket holds the weight's memory, byte for byte: no transpose between them.
  EXPECT_TRUE(torch::equal(flat.narrow(0, 10, weight.numel()), launch::memory_order_flat(weight)));
  EXPECT_TRUE(launch::memory_order_flat(weight).is_alias_of(weight));

  // A tensor that is not dense (every other column) gets contiguous strides, and its
  // memory-order flattening is the same logical order.
  const at::Tensor strided = torch::randn({5, 8}).slice(1, 0, 8, 2);
  ASSERT_FALSE(strided.is_non_overlapping_and_dense());
  const at::Tensor packed = launch::bucket_view(flat, 100, strided);
  EXPECT_TRUE(packed.is_contiguous());
  packed.copy_(strided);
  EXPECT_TRUE(
      torch::equal(flat.narrow(0, 100, strided.numel()), launch::memory_order_flat(strided)));
}

TEST(ChannelsLast, SetMemoryFormatConvertsOnlyFourDimensionalTensorsInPlace) {
  UNet model(Training::options(16));
  const std::vector<at::Tensor> before = model->parameters();
  std::vector<at::Tensor> values;
  for (const auto& p : before) values.push_back(p.detach().clone());
  set_memory_format(*model, kNhwc);
  const std::vector<at::Tensor> after = model->parameters();
  int converted = 0;
  for (size_t i = 0; i < after.size(); ++i) {
    EXPECT_TRUE(after[i].is_same(before[i])) << "parameter " << i << " lost its identity";
    EXPECT_TRUE(torch::equal(after[i], values[i])) << "parameter " << i << " changed value";
    if (after[i].dim() == 4) {
      EXPECT_TRUE(after[i].is_contiguous(kNhwc)) << "parameter " << i;
      converted += after[i].size(1) > 1 ? 1 : 0;
    } else {
      EXPECT_TRUE(after[i].is_contiguous()) << "parameter " << i;
    }
  }
  EXPECT_GT(converted, 5) << "the test model has too few convolutions to prove anything";
  set_memory_format(*model, kNchw);
  for (const auto& p : model->parameters()) EXPECT_TRUE(p.is_contiguous());
}

TEST(ChannelsLast, TrainingStepsEqualContiguousSteps) {
  Training nchw(16, kNchw), nhwc(16, kNhwc);
  ASSERT_LT(max_difference(nchw.model->parameters(), nhwc.model->parameters()), 1e-12);
  torch::manual_seed(12);
  for (int step = 0; step < 4; ++step) {
    const at::Tensor x_t = torch::randn({4, 3, 16, 16});
    const at::Tensor t = torch::randint(0, 1000, {4}, torch::kLong);
    const at::Tensor eps = torch::randn({4, 3, 16, 16});
    const double lr = 1e-3 * (step + 1);
    const double loss_nchw = nchw.step(x_t, t, eps, lr);
    const double loss_nhwc = nhwc.step(x_t, t, eps, lr);
    EXPECT_NEAR(loss_nhwc, loss_nchw, 1e-5 * loss_nchw) << "step " << step;
    if (step == 0) {
      // The first step's gradients (before any rounding difference is amplified by AdamW's
      // per-weight normalisation) agree closely, and the NHWC ones live in the bucket as NHWC.
      const std::vector<at::Tensor> a = nchw.model->parameters(), b = nhwc.model->parameters();
      for (size_t i = 0; i < a.size(); ++i) {
        EXPECT_TRUE(torch::allclose(b[i].grad(), a[i].grad(), 1e-4, 1e-6)) << "gradient " << i;
        EXPECT_TRUE(b[i].grad().is_alias_of(nhwc.bucket_list.front().flat)) << "gradient " << i;
        if (b[i].dim() == 4) {
          EXPECT_EQ(b[i].grad().strides(), b[i].strides()) << "gradient " << i;
        }
      }
    }
  }
  // Weights move by about lr (1e-3) per step; the layouts differ only by rounding (~1e-8).
  EXPECT_LT(max_difference(nhwc.model->parameters(), nchw.model->parameters()), 1e-6);
  EXPECT_LT(max_difference(ema_weights(nhwc), ema_weights(nchw)), 1e-6);
  for (const auto& p : nhwc.model->parameters()) {
    if (p.dim() == 4) {
      EXPECT_TRUE(p.is_contiguous(kNhwc)) << "the optimizer changed a layout";
    }
  }
}

TEST(ChannelsLast, EmaRefusesAWeightWhoseLayoutChanged) {
  Training training(16, kNchw);
  set_memory_format(*training.model, kNhwc);
  const std::string error = test_util::error_of([&] { training.ema->update(*training.model); });
  EXPECT_NE(error.find("Ema: parameter"), std::string::npos) << error;
  EXPECT_NE(error.find("changed its memory layout"), std::string::npos) << error;
}

// Optimizer state and weights written by a run in one layout resume in a run in the other.
TEST(ChannelsLast, CheckpointsCrossLayouts) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() / ("difftrain-cl-" + std::to_string(getpid()));
  std::filesystem::create_directories(dir);
  for (const at::MemoryFormat written : {kNhwc, kNchw}) {
    const at::MemoryFormat resumed_in = written == kNhwc ? kNchw : kNhwc;
    Training writer(16, written);
    torch::manual_seed(13);
    const at::Tensor x_t = torch::randn({2, 3, 16, 16});
    const at::Tensor t = torch::randint(0, 1000, {2}, torch::kLong);
    const at::Tensor eps = torch::randn({2, 3, 16, 16});
    writer.step(x_t, t, eps, 1e-3);
    writer.step(x_t, t, eps, 1e-3);

    CheckpointInfo info;
    info.step = 2;
    info.config_yaml = "train:\n  steps: 2\n";
    info.versions = "test";
    const std::string path = (dir / "layout.ckpt").string();
    std::ofstream(path, std::ios::binary)
        << encode_checkpoint(info, *writer.model, writer.ema.get(), writer.optimizer.get());

    Training reader(16, resumed_in);
    LoadedCheckpoint checkpoint = LoadedCheckpoint::open(path, torch::kCPU);
    checkpoint.load_model(*reader.model);
    for (const auto& p : reader.model->parameters()) {
      EXPECT_TRUE(p.is_contiguous()) << "load_model hands weights back contiguous";
    }
    set_memory_format(*reader.model, resumed_in);  // as the trainer does after a load
    checkpoint.load_ema(*reader.ema);
    checkpoint.load_optimizer(*reader.optimizer);
    EXPECT_LT(max_difference(reader.model->parameters(), writer.model->parameters()), 1e-12);

    // One more step in each: equal only if the moments came across in the right places.
    writer.step(x_t, t, eps, 1e-3);
    reader.step(x_t, t, eps, 1e-3);
    EXPECT_LT(max_difference(reader.model->parameters(), writer.model->parameters()), 1e-6)
        << "written in " << (written == kNhwc ? "NHWC" : "NCHW");
    EXPECT_LT(max_difference(ema_weights(reader), ema_weights(writer)), 1e-6);
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace difftrain::trainer
