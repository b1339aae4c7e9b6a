// GradientReducer's scheduling, without MPI: buckets start during backward in bucket order,
// accumulation micro-steps stay silent, unused parameters cannot hang a step, and hooks launch
// only from threads the communicator allows.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <thread>

#include "launch/gradient_reducer.h"
#include "tests/unit/launch/fake_communicator.h"

namespace difftrain::launch {
namespace {

torch::nn::Sequential make_model() {
  torch::manual_seed(7);
  return torch::nn::Sequential(torch::nn::Linear(8, 64), torch::nn::ReLU(),
                               torch::nn::Linear(64, 64), torch::nn::ReLU(),
                               torch::nn::Linear(64, 2));
}

torch::Tensor loss_of(torch::nn::Sequential& model, int64_t seed) {
  torch::manual_seed(seed);
  return model->forward(torch::randn({16, 8})).square().mean();
}

// Gradients of the sum of the given micro-steps' losses, computed without a reducer.
std::vector<torch::Tensor> reference_grads(torch::nn::Sequential& model,
                                           const std::vector<int64_t>& seeds) {
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  for (int64_t seed : seeds) loss_of(model, seed).backward();
  std::vector<torch::Tensor> grads;
  for (auto& p : model->parameters()) {
    grads.push_back(p.grad().clone());
    p.mutable_grad() = torch::Tensor();
  }
  return grads;
}

void expect_grads(torch::nn::Sequential& model, const std::vector<torch::Tensor>& expected) {
  const auto params = model->parameters();
  ASSERT_EQ(params.size(), expected.size());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_TRUE(torch::allclose(params[i].grad(), expected[i], 1e-6, 1e-7)) << "parameter " << i;
  }
}

std::vector<int64_t> launched_sizes(const FakeCommunicator& comm) {
  std::vector<int64_t> sizes;
  for (const auto& launch : comm.launches) sizes.push_back(launch.numel);
  return sizes;
}

TEST(GradientReducerUnit, LaunchesEveryBucketDuringBackwardInBucketOrder) {
  auto model = make_model();
  const auto expected = reference_grads(model, {1});
  FakeCommunicator comm(/*world_size=*/4);
  GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1);  // one per tensor
  ASSERT_EQ(reducer.bucket_count(), 6u);
  reducer.zero_grad();
  reducer.prepare_for_backward(/*sync=*/true);
  loss_of(model, 1).backward();
  // All six were launched by the hooks, before reduce(), in bucket (= reverse parameter) order.
  EXPECT_EQ(launched_sizes(comm), reducer.bucket_sizes());
  EXPECT_EQ(reducer.bucket_sizes(), (std::vector<int64_t>{2, 128, 64, 4096, 64, 512}));
  EXPECT_EQ(comm.waits, 0);
  reducer.reduce();
  EXPECT_EQ(comm.waits, 6);
  EXPECT_EQ(comm.launches.size(), 6u) << "reduce() launched a bucket twice";
  EXPECT_EQ(reducer.last_overlapped_buckets(), 6u);
  EXPECT_GE(reducer.last_reduce_seconds(), reducer.last_wait_seconds());
  expect_grads(model, expected);  // the mean over 4 identical ranks is the local gradient
}

TEST(GradientReducerUnit, AccumulationMicroStepsDoNotCommunicate) {
  auto model = make_model();
  const auto expected = reference_grads(model, {1, 2, 3});
  FakeCommunicator comm(/*world_size=*/2);
  GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/4096);
  reducer.zero_grad();
  for (int64_t micro_step : {1, 2}) {
    reducer.prepare_for_backward(/*sync=*/false);
    loss_of(model, micro_step).backward();
  }
  EXPECT_TRUE(comm.launches.empty()) << "a non-sync micro-step communicated";
  reducer.prepare_for_backward(/*sync=*/true);
  loss_of(model, 3).backward();
  EXPECT_EQ(comm.launches.size(), reducer.bucket_count());
  reducer.reduce();
  expect_grads(model, expected);  // the sum of the three micro-steps' gradients
  // The next step starts from zero and stays bound to the buckets.
  reducer.zero_grad();
  for (const auto& p : model->parameters()) EXPECT_EQ(p.grad().abs().max().item<float>(), 0.0f);
}

TEST(GradientReducerUnit, UnusedParameterHoldsLaterBucketsUntilReduce) {
  torch::manual_seed(3);
  torch::nn::Linear a(4, 16), unused(16, 16), c(16, 1);
  std::vector<torch::Tensor> params = a->parameters();
  for (auto& p : unused->parameters()) params.push_back(p);
  for (auto& p : c->parameters()) params.push_back(p);
  FakeCommunicator comm(/*world_size=*/2);
  GradientReducer reducer(comm, params, /*bucket_bytes=*/1);
  reducer.zero_grad();
  reducer.prepare_for_backward(/*sync=*/true);
  c->forward(a->forward(torch::randn({5, 4}))).sum().backward();
  // Buckets: c.bias, c.weight, unused.bias, unused.weight, a.bias, a.weight. The unused ones
  // never become ready, so neither they nor a's may go out during backward.
  EXPECT_EQ(launched_sizes(comm), (std::vector<int64_t>{1, 16}));
  reducer.reduce();
  EXPECT_EQ(launched_sizes(comm), reducer.bucket_sizes());
  EXPECT_EQ(reducer.last_overlapped_buckets(), 2u);
  EXPECT_EQ(unused->weight.grad().abs().max().item<float>(), 0.0f);
  EXPECT_GT(a->weight.grad().abs().max().item<float>(), 0.0f);
}

TEST(GradientReducerUnit, WithoutPrepareReduceLaunchesEverything) {
  auto model = make_model();
  const auto expected = reference_grads(model, {5});
  FakeCommunicator comm(/*world_size=*/2);
  GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1);
  reducer.zero_grad();
  loss_of(model, 5).backward();
  EXPECT_TRUE(comm.launches.empty());
  reducer.reduce();
  EXPECT_EQ(launched_sizes(comm), reducer.bucket_sizes());
  EXPECT_EQ(reducer.last_overlapped_buckets(), 0u);
  expect_grads(model, expected);
}

TEST(GradientReducerUnit, StolenGradientIsFoldedBackIntoItsBucket) {
  auto model = make_model();
  const auto expected = reference_grads(model, {6});
  FakeCommunicator comm(/*world_size=*/2);
  GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1 << 20);
  reducer.zero_grad();
  // As LibTorch 2.x's optimizer zero_grad does: autograd then steals a fresh tensor.
  for (auto& p : model->parameters()) p.mutable_grad() = torch::Tensor();
  reducer.prepare_for_backward(/*sync=*/true);
  loss_of(model, 6).backward();
  reducer.reduce();
  expect_grads(model, expected);
  // The gradients are bucket views again: one zero_grad clears them all.
  reducer.zero_grad();
  for (const auto& p : model->parameters()) EXPECT_EQ(p.grad().abs().max().item<float>(), 0.0f);
}

TEST(GradientReducerUnit, ZeroGradZeroesAReplacedGradient) {
  auto model = make_model();
  const auto expected = reference_grads(model, {4});
  FakeCommunicator comm(/*world_size=*/2);
  GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1 << 20);
  for (auto& p : model->parameters()) p.mutable_grad() = torch::full_like(p, 5.0);
  reducer.zero_grad();
  for (const auto& p : model->parameters()) EXPECT_EQ(p.grad().abs().max().item<float>(), 0.0f);
  reducer.prepare_for_backward(/*sync=*/true);
  loss_of(model, 4).backward();
  reducer.reduce();
  expect_grads(model, expected);
}

TEST(GradientReducerUnit, RefusesANewStepWhileBucketsAreInFlight) {
  auto model = make_model();
  FakeCommunicator comm(/*world_size=*/2);
  GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1);
  reducer.zero_grad();
  reducer.prepare_for_backward(/*sync=*/true);
  loss_of(model, 1).backward();
  EXPECT_THROW(reducer.zero_grad(), std::logic_error);
  EXPECT_THROW(reducer.prepare_for_backward(true), std::logic_error);
  reducer.reduce();
  EXPECT_NO_THROW(reducer.zero_grad());
}

TEST(GradientReducerUnit, HooksLaunchOnlyFromThreadsTheBackendAllows) {
  for (const bool any_thread : {false, true}) {
    auto model = make_model();
    FakeCommunicator comm(/*world_size=*/2, any_thread);
    GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1);
    reducer.zero_grad();
    reducer.prepare_for_backward(/*sync=*/true);
    // CPU autograd runs the backward on the calling thread, here not the training thread
    // (as CUDA autograd does on its device thread).
    std::thread backward([&] { loss_of(model, 1).backward(); });
    backward.join();
    EXPECT_EQ(comm.launches.size(), any_thread ? reducer.bucket_count() : 0u) << any_thread;
    reducer.reduce();
    ASSERT_EQ(comm.launches.size(), reducer.bucket_count());
    if (!any_thread) {
      for (const auto& launch : comm.launches) EXPECT_EQ(launch.thread, std::this_thread::get_id());
    }
  }
}

TEST(GradientReducerUnit, SingleRankNeverCommunicates) {
  auto model = make_model();
  const auto expected = reference_grads(model, {1});
  FakeCommunicator comm(/*world_size=*/1);
  GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1);
  reducer.zero_grad();
  reducer.prepare_for_backward(/*sync=*/true);
  loss_of(model, 1).backward();
  reducer.reduce();
  EXPECT_TRUE(comm.launches.empty());
  expect_grads(model, expected);
}

TEST(GradientReducerUnit, DestroyedReducerLeavesNoHookBehind) {
  auto model = make_model();
  FakeCommunicator comm(/*world_size=*/2);
  torch::Tensor loss;
  {
    GradientReducer reducer(comm, model->parameters(), /*bucket_bytes=*/1);
    reducer.prepare_for_backward(/*sync=*/true);
    loss = loss_of(model, 1);  // this graph holds the accumulators the reducer hooked
  }
  loss.backward();  // would call into the dead reducer if its hooks remained (ASan build)
  EXPECT_TRUE(comm.launches.empty());
}

}  // namespace
}  // namespace difftrain::launch
