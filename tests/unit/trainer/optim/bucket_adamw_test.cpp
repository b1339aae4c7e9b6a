// BucketAdamW: the same updates as torch::optim::AdamW after clip_grad_norm_, non-finite
// gradients change nothing, and checkpoints interchange with torch::optim::AdamW's format.
#include "trainer/optim/bucket_adamw.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

namespace difftrain::trainer {
namespace {

struct Net : torch::nn::Module {
  Net() {
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(2, 4, 3)));
    fc = register_module("fc", torch::nn::Linear(4 * 3 * 3, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    return fc->forward(torch::silu(conv->forward(x)).flatten(1));
  }
  torch::nn::Conv2d conv{nullptr};
  torch::nn::Linear fc{nullptr};
};

// Two buckets, as the gradient reducer makes them: the last parameters first, each .grad() a
// view into its bucket's flat tensor.
std::vector<launch::GradientBucket> bind_buckets(const std::vector<torch::Tensor>& parameters) {
  std::vector<launch::GradientBucket> buckets(2);
  const size_t split = parameters.size() / 2;
  for (size_t b = 0; b < 2; ++b) {
    std::vector<torch::Tensor> members;
    for (size_t k = parameters.size(); k-- > 0;) {
      if ((k >= split) == (b == 0)) members.push_back(parameters[k]);
    }
    int64_t numel = 0;
    for (const auto& p : members) numel += p.numel();
    buckets[b].flat = torch::zeros({numel});
    int64_t offset = 0;
    for (auto p : members) {
      p.mutable_grad() = buckets[b].flat.narrow(0, offset, p.numel()).view(p.sizes());
      offset += p.numel();
    }
    buckets[b].parameters = members;
  }
  return buckets;
}

void backward(Net& net, const torch::Tensor& x, double scale = 1.0) {
  for (auto& p : net.parameters()) {
    if (p.grad().defined()) p.mutable_grad().zero_();
  }
  (net.forward(x).pow(2).sum() * scale).backward();
}

void copy_parameters(Net& from, Net& to) {
  torch::NoGradGuard no_grad;
  auto a = from.parameters();
  auto b = to.parameters();
  for (size_t i = 0; i < a.size(); ++i) b[i].copy_(a[i]);
}

void expect_close(Net& a, Net& b, const char* when) {
  auto pa = a.parameters();
  auto pb = b.parameters();
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_TRUE(torch::allclose(pa[i], pb[i], 1e-5, 1e-6))
        << when << ": parameter " << i << " differs by "
        << (pa[i] - pb[i]).abs().max().item<double>();
  }
}

AdamWSettings settings(double max_grad_norm) {
  AdamWSettings s;
  s.beta1 = 0.9;
  s.beta2 = 0.99;
  s.eps = 1e-8;
  s.weight_decay = 0.05;
  s.max_grad_norm = max_grad_norm;
  return s;
}

torch::optim::AdamWOptions torch_options(const AdamWSettings& s, double lr) {
  return torch::optim::AdamWOptions(lr)
      .betas(std::make_tuple(s.beta1, s.beta2))
      .eps(s.eps)
      .weight_decay(s.weight_decay);
}

void set_lr(torch::optim::AdamW& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) {
    static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
  }
}

// A reference step: torch's clip_grad_norm_ then torch's AdamW. Returns the norm.
double reference_step(Net& net, torch::optim::AdamW& optimizer, double max_norm, double lr) {
  const double norm = torch::nn::utils::clip_grad_norm_(
      net.parameters(), max_norm > 0 ? max_norm : std::numeric_limits<double>::infinity());
  set_lr(optimizer, lr);
  optimizer.step();
  return norm;
}

class BucketAdamWTest : public ::testing::TestWithParam<double> {};

TEST_P(BucketAdamWTest, MatchesTorchAdamWAfterClipGradNorm) {
  const double max_norm = GetParam();
  torch::manual_seed(3);
  Net ours, theirs;
  copy_parameters(ours, theirs);
  BucketAdamW optimizer(ours.parameters(), bind_buckets(ours.parameters()), settings(max_norm));
  torch::optim::AdamW reference(theirs.parameters(), torch_options(settings(max_norm), 0.0));
  int clipped = 0;
  for (int step = 0; step < 12; ++step) {
    const torch::Tensor x = torch::randn({5, 2, 5, 5});
    const double lr = 1e-2 * (step + 1) / 4.0;  // a warm-up: the rate changes every step
    backward(ours, x);
    backward(theirs, x);
    const torch::Tensor outcome = optimizer.step(lr);
    const double norm = reference_step(theirs, reference, max_norm, lr);
    if (max_norm > 0 && norm > max_norm) ++clipped;
    EXPECT_NEAR(outcome[0].item<double>(), norm, 1e-4 * norm) << "step " << step;
    EXPECT_EQ(outcome[1].item<double>(), 0.0);
    expect_close(ours, theirs, ("step " + std::to_string(step)).c_str());
  }
  EXPECT_EQ(optimizer.step_count(), 12);
  if (max_norm > 0) {
    EXPECT_GT(clipped, 0) << "the test never clipped";
  }
}

INSTANTIATE_TEST_SUITE_P(Clipping, BucketAdamWTest, ::testing::Values(0.0, 1.0));

TEST(BucketAdamW, NonFiniteGradientChangesNothing) {
  torch::manual_seed(4);
  Net ours, theirs;
  copy_parameters(ours, theirs);
  BucketAdamW optimizer(ours.parameters(), bind_buckets(ours.parameters()), settings(1.0));
  torch::optim::AdamW reference(theirs.parameters(), torch_options(settings(1.0), 0.0));
  for (int step = 0; step < 6; ++step) {
    const torch::Tensor x = torch::randn({5, 2, 5, 5});
    backward(ours, x);
    if (step == 2 || step == 3) {
      // One NaN (step 2) or one inf (step 3) anywhere poisons the norm: the step is skipped.
      ours.fc->weight.mutable_grad()[0][0] = step == 2 ? std::nan("") : HUGE_VAL;
      const torch::Tensor outcome = optimizer.step(1e-2);
      EXPECT_FALSE(std::isfinite(outcome[0].item<double>()));
      EXPECT_EQ(outcome[1].item<double>(), 1.0);
      expect_close(ours, theirs, "after a skipped step");
      continue;
    }
    backward(theirs, x);
    optimizer.step(1e-2);
    reference_step(theirs, reference, 1.0, 1e-2);
    // Equal afterwards only if the moments and step count ignored the skipped steps.
    expect_close(ours, theirs, ("step " + std::to_string(step)).c_str());
  }
  EXPECT_EQ(optimizer.step_count(), 4);
  for (const auto& p : ours.parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

TEST(BucketAdamW, AnUpdateThatOverflowsChangesNothing) {
  // Finite gradients, but a learning rate that makes the update (and, for the second
  // gradients, the squared moment) overflow float32: the step must leave weights and state.
  torch::manual_seed(6);
  Net net;
  BucketAdamW optimizer(net.parameters(), bind_buckets(net.parameters()), settings(0.0));
  backward(net, torch::randn({2, 2, 5, 5}));
  EXPECT_EQ(optimizer.step(1e-3)[1].item<double>(), 0.0);
  std::vector<torch::Tensor> before;
  for (const auto& p : net.parameters()) before.push_back(p.detach().clone());
  for (const double lr : {1e39, std::numeric_limits<double>::infinity()}) {
    backward(net, torch::randn({2, 2, 5, 5}));
    const torch::Tensor outcome = optimizer.step(lr);
    EXPECT_TRUE(std::isfinite(outcome[0].item<double>())) << "the gradients are finite";
    EXPECT_EQ(outcome[1].item<double>(), 1.0) << "lr " << lr;
  }
  backward(net, torch::randn({2, 2, 5, 5}), 1e25);  // g^2 overflows the second moment
  EXPECT_EQ(optimizer.step(1e-3)[1].item<double>(), 1.0);
  const auto after = net.parameters();
  for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(torch::equal(after[i], before[i])) << i;
  EXPECT_EQ(optimizer.step_count(), 1);
  // The state is as it was: a normal step still works.
  backward(net, torch::randn({2, 2, 5, 5}));
  EXPECT_EQ(optimizer.step(1e-3)[1].item<double>(), 0.0);
  for (const auto& p : net.parameters()) EXPECT_TRUE(torch::isfinite(p).all().item<bool>());
}

TEST(BucketAdamW, AFiniteUpdateThatOverflowsTheWeightsChangesNothing) {
  // Weights near float32's largest value and an update of 1e38 per element (Adam's first step
  // moves each weight by about lr): the update is finite, the new weights are not.
  // The gradients come from ordinary weights (large ones would overflow them instead).
  torch::manual_seed(7);
  Net net;
  BucketAdamW optimizer(net.parameters(), bind_buckets(net.parameters()), settings(0.0));
  backward(net, torch::randn({2, 2, 5, 5}));
  {
    torch::NoGradGuard no_grad;
    net.fc->weight.fill_(3e38);
  }
  std::vector<torch::Tensor> before;
  for (const auto& p : net.parameters()) before.push_back(p.detach().clone());
  EXPECT_EQ(optimizer.step(1e38)[1].item<double>(), 1.0);
  const auto after = net.parameters();
  for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(torch::equal(after[i], before[i])) << i;
  EXPECT_EQ(optimizer.step_count(), 0);
}

TEST(BucketAdamW, FirstStepSkippedLeavesFreshState) {
  torch::manual_seed(5);
  Net net;
  const torch::Tensor before = net.fc->weight.detach().clone();
  BucketAdamW optimizer(net.parameters(), bind_buckets(net.parameters()), settings(0.0));
  backward(net, torch::randn({2, 2, 5, 5}), std::numeric_limits<double>::infinity());
  const torch::Tensor outcome = optimizer.step(1e-2);
  EXPECT_EQ(outcome[1].item<double>(), 1.0);
  EXPECT_TRUE(torch::equal(net.fc->weight, before));
  EXPECT_EQ(optimizer.step_count(), 0);
}

// Both directions: torch's AdamW state resumes in ours (checkpoints written before
// BucketAdamW existed), and ours in torch's.
TEST(BucketAdamW, CheckpointsInterchangeWithTorchAdamW) {
  torch::manual_seed(6);
  Net a, b;
  copy_parameters(a, b);
  torch::optim::AdamW torch_optimizer(a.parameters(), torch_options(settings(0.0), 1e-2));
  BucketAdamW ours(b.parameters(), bind_buckets(b.parameters()), settings(0.0));
  for (int step = 0; step < 3; ++step) {
    const torch::Tensor x = torch::randn({4, 2, 5, 5});
    backward(a, x);
    reference_step(a, torch_optimizer, 0.0, 1e-2);
    backward(b, x);
    ours.step(1e-2);
  }

  // torch -> ours
  torch::serialize::OutputArchive from_torch;
  torch_optimizer.save(from_torch);
  std::ostringstream torch_bytes;
  from_torch.save_to(torch_bytes);
  Net c;
  copy_parameters(a, c);
  BucketAdamW resumed(c.parameters(), bind_buckets(c.parameters()), settings(0.0));
  {
    std::istringstream in(torch_bytes.str());
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    resumed.load(archive);
  }
  EXPECT_EQ(resumed.step_count(), 3);

  // ours -> torch
  torch::serialize::OutputArchive from_ours;
  ours.save(from_ours);
  std::ostringstream our_bytes;
  from_ours.save_to(our_bytes);
  Net d;
  copy_parameters(b, d);
  torch::optim::AdamW torch_resumed(d.parameters(), torch_options(settings(0.0), 1e-2));
  {
    std::istringstream in(our_bytes.str());
    torch::serialize::InputArchive archive;
    archive.load_from(in);
    torch_resumed.load(archive);
  }

  // One more step everywhere: all four agree only if the moments and steps came across.
  const torch::Tensor x = torch::randn({4, 2, 5, 5});
  for (Net* net : {&a, &b, &c, &d}) backward(*net, x);
  reference_step(a, torch_optimizer, 0.0, 1e-2);
  ours.step(1e-2);
  resumed.step(1e-2);
  reference_step(d, torch_resumed, 0.0, 1e-2);
  expect_close(c, a, "torch state resumed in BucketAdamW");
  expect_close(d, b, "BucketAdamW state resumed in torch AdamW");
  expect_close(b, a, "BucketAdamW vs torch");
}

}  // namespace
}  // namespace difftrain::trainer
