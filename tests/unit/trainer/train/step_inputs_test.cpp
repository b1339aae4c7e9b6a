// Step inputs made on the prefetch thread: the noise of the batch's global positions, the
// images as stored, dropped labels marked.
#include "trainer/train/step_inputs.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "trainer/train/step_noise.h"

namespace difftrain::trainer {
namespace {

data::Batch make_batch(int64_t index, int64_t size) {
  data::Batch batch;
  batch.step = index;
  batch.size = size;
  batch.shape = {1, 2, 3};
  for (int64_t i = 0; i < size * 6; ++i) batch.images.push_back(static_cast<uint8_t>(i * 7));
  for (int64_t i = 0; i < size; ++i) batch.labels.push_back(i % 3);
  return batch;
}

TEST(StepInputs, NoiseIsThatOfTheBatchsGlobalPositions) {
  StepInputPlan plan;
  plan.seed = 11;
  plan.grad_accum_steps = 2;
  plan.micro_global_batch = 12;  // 3 ranks x 4
  plan.first_in_rank = 8;        // rank 2
  plan.timesteps = 1000;
  // Micro-batch 5: optimizer step 2, second micro-step, positions 12 + 8 .. 12 + 11.
  const StepInputs inputs = prepare_step_inputs(make_batch(5, 4), plan);
  const StepNoise expected = draw_step_noise(11, 2, 20, 4, 1000, {1, 2, 3});
  EXPECT_TRUE(torch::equal(inputs.eps, expected.eps));
  EXPECT_TRUE(torch::equal(inputs.timesteps, expected.timesteps));
  EXPECT_FALSE(inputs.labels.defined());  // unconditional
  ASSERT_EQ(inputs.images.sizes(), (std::vector<int64_t>{4, 1, 2, 3}));
  EXPECT_EQ(inputs.images.dtype(), torch::kByte);
  EXPECT_EQ(inputs.images.flatten()[5].item<int64_t>(), 35);
}

TEST(StepInputs, NoiseDrawsRepeatEachImageWithItsOwnNoise) {
  StepInputPlan plan;
  plan.seed = 11;
  plan.micro_global_batch = 8;  // 2 ranks x 4
  plan.first_in_rank = 4;       // rank 1
  plan.timesteps = 1000;
  plan.noise_draws = 3;
  plan.num_classes = 3;
  const data::Batch batch = make_batch(2, 4);
  const StepInputs inputs = prepare_step_inputs(batch, plan);
  // Sample positions are 3 x image positions: rank 1's images 4..7 are samples 12..23.
  const StepNoise expected = draw_step_noise(11, 2, 12, 12, 1000, {1, 2, 3});
  EXPECT_TRUE(torch::equal(inputs.eps, expected.eps));
  EXPECT_TRUE(torch::equal(inputs.timesteps, expected.timesteps));
  ASSERT_EQ(inputs.images.sizes(), (std::vector<int64_t>{12, 1, 2, 3}));
  const torch::Tensor stored =
      torch::from_blob(const_cast<uint8_t*>(batch.images.data()), {4, 1, 2, 3}, torch::kByte);
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_TRUE(torch::equal(inputs.images[i], stored[i / 3])) << i;
    EXPECT_EQ(inputs.labels[i].item<int64_t>(), (i / 3) % 3) << i;
  }
  EXPECT_FALSE(torch::equal(inputs.eps[0], inputs.eps[1]));  // the same image, new noise
  // One draw is exactly the plan without draws.
  plan.noise_draws = 1;
  plan.num_classes = 0;
  EXPECT_TRUE(torch::equal(prepare_step_inputs(batch, plan).eps,
                           draw_step_noise(11, 2, 4, 4, 1000, {1, 2, 3}).eps));
}

TEST(StepInputs, DroppedLabelsBecomeNoLabel) {
  StepInputPlan plan;
  plan.seed = 3;
  plan.micro_global_batch = 64;
  plan.timesteps = 1000;
  plan.num_classes = 3;
  plan.label_dropout = 0.5;
  const StepInputs inputs = prepare_step_inputs(make_batch(0, 64), plan);
  const StepNoise expected = draw_step_noise(3, 0, 0, 64, 1000, {1, 2, 3}, 0.5);
  ASSERT_TRUE(inputs.labels.defined());
  for (int64_t i = 0; i < 64; ++i) {
    const int64_t want = expected.drop_label[i].item<bool>() ? 3 : i % 3;
    EXPECT_EQ(inputs.labels[i].item<int64_t>(), want) << "sample " << i;
  }
  const int64_t dropped = expected.drop_label.sum().item<int64_t>();
  EXPECT_GT(dropped, 0);
  EXPECT_LT(dropped, 64);
}

TEST(StepInputs, HflipMirrorsExactlyTheImagesItsDrawSays) {
  StepInputPlan plan;
  plan.seed = 5;
  plan.micro_global_batch = 64;
  plan.timesteps = 1000;
  plan.hflip = true;
  const data::Batch batch = make_batch(0, 64);
  const StepInputs inputs = prepare_step_inputs(batch, plan);
  const StepNoise expected = draw_step_noise(5, 0, 0, 64, 1000, {1, 2, 3}, 0.0, false, true);
  const torch::Tensor stored =
      torch::from_blob(const_cast<uint8_t*>(batch.images.data()), {64, 1, 2, 3}, torch::kByte);
  int64_t flipped = 0;
  for (int64_t i = 0; i < 64; ++i) {
    const bool flip = expected.flip[i].item<bool>();
    flipped += flip ? 1 : 0;
    // Columns reversed within each row: pixel (r, c) comes from (r, 2 - c).
    EXPECT_TRUE(torch::equal(inputs.images[i], flip ? stored[i].flip({-1}) : stored[i])) << i;
  }
  EXPECT_GT(flipped, 16);
  EXPECT_LT(flipped, 48);
  // The flips come after every other draw: timesteps and noise are those of hflip off.
  const StepNoise plain = draw_step_noise(5, 0, 0, 64, 1000, {1, 2, 3});
  EXPECT_TRUE(torch::equal(inputs.eps, plain.eps));
  EXPECT_TRUE(torch::equal(inputs.timesteps, plain.timesteps));
  EXPECT_FALSE(plain.flip.any().item<bool>());
}

TEST(StepInputs, ToDeviceOnCpuKeepsValues) {
  StepInputPlan plan;
  plan.micro_global_batch = 2;
  plan.timesteps = 10;
  const StepInputs inputs = prepare_step_inputs(make_batch(0, 2), plan);
  const StepInputs moved = to_device(inputs, torch::kCPU);
  EXPECT_TRUE(torch::equal(moved.eps, inputs.eps));
  EXPECT_TRUE(torch::equal(moved.images, inputs.images));
  EXPECT_FALSE(moved.labels.defined());
}

}  // namespace
}  // namespace difftrain::trainer
