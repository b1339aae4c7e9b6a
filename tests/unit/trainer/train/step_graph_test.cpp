// train.cuda_graph: when the capture is refused, and, on a CUDA device, a captured and replayed
// training step equal to the same steps run eagerly. The pieces a captured step relies on (an
// EMA weight and learning rate set outside it, fixed input buffers) are checked on any device.
#include "trainer/train/step_graph.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <memory>

#include "launch/gradient_reducer.h"
#include "tests/unit/launch/fake_communicator.h"
#include "tests/unit/trainer/test_util.h"
#include "trainer/optim/bucket_adamw.h"
#include "trainer/optim/ema.h"
#include "trainer/train/step_inputs.h"

namespace difftrain::trainer {
namespace {

TEST(StepGraph, ReasonsNameWhatStopsTheCapture) {
  EXPECT_EQ(step_graph_unavailable_reason(torch::Device("cpu"), 1, 1),
            "the device is cpu, not a GPU");
  EXPECT_THROW(StepGraph{torch::Device("cpu")}, std::logic_error);
  const torch::Device gpu("cuda:0");
  EXPECT_EQ(step_graph_unavailable_reason(gpu, 1, 1), "");
  EXPECT_EQ(step_graph_unavailable_reason(gpu, 1, 4),
            "train.grad_accum_steps = 4 (a graph holds one micro-step)");
  EXPECT_EQ(step_graph_unavailable_reason(gpu, 8, 1),
            "8 ranks (the all-reduce watchdog polls events that a replay would not record)");
}

struct Scalar : torch::nn::Module {
  Scalar() { w = register_parameter("w", torch::zeros({2}, torch::kDouble)); }
  torch::Tensor w;
};

TEST(StepGraph, EmaApplyUsesTheWeightSetBefore) {
  // A replayed apply_update() sees only what begin_update() last set: applying twice after one
  // begin_update() is two steps with the same decay.
  Scalar model;
  Ema ema(model, 0.9);
  ema.begin_update();  // update 1: d = min(0.9, 2/11)
  const double d = ema.decay_for(1);
  model.w.data().fill_(1.0);
  ema.apply_update(model);
  model.w.data().fill_(3.0);
  ema.apply_update(model);
  Scalar out;
  ema.copy_to(out);
  const double once = d * 0.0 + (1 - d) * 1.0;
  EXPECT_NEAR(out.w[0].item<double>(), d * once + (1 - d) * 3.0, 1e-14);
  EXPECT_EQ(ema.updates(), 1);
}

TEST(StepGraph, InputsAreCopiedIntoFixedBuffers) {
  StepInputs a{torch::full({2, 1, 2, 2}, 7, torch::kByte),
               {},
               torch::tensor({1, 2}),
               torch::ones({2, 1, 2, 2})};
  StepInputs buffers;
  copy_to_device(a, torch::kCPU, buffers);
  const void* images = buffers.images.data_ptr();
  const void* eps = buffers.eps.data_ptr();
  StepInputs b{torch::full({2, 1, 2, 2}, 9, torch::kByte),
               {},
               torch::tensor({5, 6}),
               torch::zeros({2, 1, 2, 2})};
  copy_to_device(b, torch::kCPU, buffers);
  EXPECT_EQ(buffers.images.data_ptr(), images);
  EXPECT_EQ(buffers.eps.data_ptr(), eps);
  EXPECT_TRUE(torch::equal(buffers.images, b.images));
  EXPECT_TRUE(torch::equal(buffers.timesteps, b.timesteps));
  EXPECT_TRUE(torch::equal(buffers.eps, b.eps));
  EXPECT_FALSE(buffers.labels.defined());

  StepInputs smaller{
      torch::zeros({1, 1, 2, 2}, torch::kByte), {}, torch::tensor({1}), torch::zeros({1, 1, 2, 2})};
  EXPECT_EQ(test_util::error_of([&] { copy_to_device(smaller, torch::kCPU, buffers); }),
            "copy_to_device: images [1, 1, 2, 2] do not fit buffers [2, 1, 2, 2]");
  StepInputs labelled = b;
  labelled.labels = torch::tensor({0, 1});
  EXPECT_EQ(test_util::error_of([&] { copy_to_device(labelled, torch::kCPU, buffers); }),
            "copy_to_device: labels [2] do not fit buffers absent");
}

// A small U-Net with its optimizer and EMA, trained by the same step as the trainer's
// (gradients zeroed, forward, backward, BucketAdamW, EMA) minus the data and the reducer.
// The trainer's step on one rank: gradients in a GradientReducer's buckets (whose hooks sit on
// the parameters' gradient accumulators), BucketAdamW over them, and the EMA. With a graph, the
// reducer is built on the graph's stream, as the trainer does.
struct Trainee {
  Trainee(const torch::Device& device, StepGraph* graph) {
    torch::manual_seed(5);
    model = UNet(test_util::small_unet_options(8));
    test_util::randomise_parameters(model, 0.05);
    model->to(device);
    auto make_reducer = [&] {
      reducer = std::make_unique<launch::GradientReducer>(communicator, model->parameters(),
                                                          /*bucket_bytes=*/1 << 20);
    };
    if (graph != nullptr) {
      graph->on_stream(make_reducer);
    } else {
      make_reducer();
    }
    AdamWSettings settings;
    settings.max_grad_norm = 1.0;
    settings.weight_decay = 0.01;
    optimizer = std::make_unique<BucketAdamW>(model->parameters(), reducer->buckets(), settings);
    ema = std::make_unique<Ema>(*model, 0.99);
  }

  // Launches one step on the current stream; returns [loss, grad norm, skipped] on the device.
  at::Tensor step(const at::Tensor& x, const at::Tensor& t, const at::Tensor& target) {
    reducer->zero_grad();
    const at::Tensor loss = (model->forward(x, t) - target).pow(2).mean();
    reducer->prepare_for_backward(/*sync=*/true);
    loss.backward();
    reducer->reduce();
    const at::Tensor outcome = optimizer->step();
    ema->apply_update(*model);
    return torch::cat({loss.detach().to(torch::kDouble).reshape({1}), outcome});
  }

  launch::FakeCommunicator communicator{1};
  UNet model{nullptr};
  std::unique_ptr<launch::GradientReducer> reducer;
  std::unique_ptr<BucketAdamW> optimizer;
  std::unique_ptr<Ema> ema;
};

// 3 warm-up steps, the captured step and 3 replays against the same steps run eagerly. Needs a
// GPU (the suite name puts it under the `gpu` label): without one there is nothing to capture.
TEST(StepGraphGpu, ReplayedStepsEqualEagerSteps) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: nothing to capture";
  const torch::Device device("cuda:0");
  constexpr int kSteps = 7;
  std::vector<StepInputs> inputs;
  torch::manual_seed(11);
  auto host = [](const at::Tensor& t) { return t.pin_memory(); };
  for (int s = 0; s < kSteps; ++s) {
    StepInputs in;
    in.images = host(torch::randn({4, 1, 8, 8}));  // x_t
    in.timesteps = host(torch::randint(0, 1000, {4}, torch::kLong));
    in.eps = host(torch::randn({4, 1, 8, 8}));  // the target
    inputs.push_back(in);
  }
  auto lr = [](int s) { return 1e-3 * (s + 1); };  // changes every step

  Trainee eager(device, nullptr);
  std::vector<at::Tensor> eager_values;
  for (int s = 0; s < kSteps; ++s) {
    eager.optimizer->set_learning_rate(lr(s));
    eager.ema->begin_update();
    const StepInputs in = to_device(inputs[s], device);
    eager_values.push_back(eager.step(in.images, in.timesteps, in.eps).cpu());
  }

  auto graph = std::make_unique<StepGraph>(device);
  Trainee graphed(device, graph.get());
  StepInputs buffers;
  auto body = [&] { return graphed.step(buffers.images, buffers.timesteps, buffers.eps); };
  at::Tensor graph_output;
  for (int s = 0; s < kSteps; ++s) {
    copy_to_device(inputs[s], device, buffers);
    graphed.optimizer->set_learning_rate(lr(s));
    graphed.ema->begin_update();
    at::Tensor values;
    if (s < kStepGraphWarmupSteps) {
      values = graph->run_eagerly(body);
    } else {
      if (!graph->captured()) graph_output = graph->capture(body);
      graph->replay();
      values = graph_output;
    }
    ASSERT_TRUE(torch::allclose(values.cpu(), eager_values[s], 1e-4, 1e-6))
        << "step " << s << ": from the buffers " << values.cpu() << " eager " << eager_values[s];
  }
  EXPECT_TRUE(graph->captured());
  EXPECT_EQ(graphed.optimizer->step_count(), kSteps);
  const auto a = eager.model->parameters(), b = graphed.model->parameters();
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-4, 1e-6)) << "parameter " << i;
  }
  UNet eager_ema(test_util::small_unet_options(8)), graphed_ema(test_util::small_unet_options(8));
  eager.ema->copy_to(*eager_ema);
  graphed.ema->copy_to(*graphed_ema);
  const auto c = eager_ema->parameters(), d = graphed_ema->parameters();
  for (size_t i = 0; i < c.size(); ++i) {
    EXPECT_TRUE(torch::allclose(c[i], d[i], 1e-4, 1e-6)) << "EMA parameter " << i;
  }
}

}  // namespace
}  // namespace difftrain::trainer
