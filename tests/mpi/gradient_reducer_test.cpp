// GradientReducer against a plain per-tensor all-reduce, over several bucket sizes, with
// parameters that get no gradient on some ranks; with buckets launched during backward; with
// gradient accumulation against one big batch; and the deadline's message.
#include "launch/gradient_reducer.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <chrono>
#include <thread>

#include "launch/mpi_communicator.h"

namespace difftrain::launch {
namespace {

std::vector<torch::Tensor> make_parameters() {
  std::vector<torch::Tensor> params;
  for (int64_t n : {3, 1000, 17, 40000, 5, 300000, 64}) {
    params.push_back(torch::zeros({n}, torch::kFloat).requires_grad_(true));
  }
  params.push_back(torch::zeros({4, 4}, torch::kFloat));  // frozen: must be ignored
  return params;
}

// Integer-valued gradients: sums are exact in any order, so comparisons can be exact.
// Parameter 2 gets a gradient on rank 0 only; parameter 4 on no rank.
std::vector<torch::Tensor> make_gradients(const std::vector<torch::Tensor>& params, int rank) {
  std::vector<torch::Tensor> grads;
  for (size_t i = 0; i + 1 < params.size(); ++i) {
    const bool has_grad = !(i == 2 && rank != 0) && i != 4;
    torch::Tensor g =
        torch::randint(-50, 50, params[i].sizes(), torch::TensorOptions().dtype(torch::kFloat))
            .add_(rank * 7 + static_cast<int64_t>(i));
    grads.push_back(has_grad ? g : torch::Tensor());
  }
  return grads;
}

std::vector<torch::Tensor> expected_means(Communicator& comm,
                                          const std::vector<torch::Tensor>& params,
                                          const std::vector<torch::Tensor>& grads) {
  std::vector<torch::Tensor> expected;
  for (size_t i = 0; i < grads.size(); ++i) {
    torch::Tensor summed = grads[i].defined() ? grads[i].clone() : torch::zeros_like(params[i]);
    comm.all_reduce_sum(summed);
    expected.push_back(summed / comm.world_size());
  }
  return expected;
}

TEST(GradientReducer, EqualsPerTensorAllReduce) {
  MpiCommunicator comm(60.0);
  const int rank = comm.rank();
  for (int64_t bucket_bytes : {int64_t{64}, int64_t{4096}, int64_t{200000}, int64_t{25'000'000}}) {
    auto params = make_parameters();
    GradientReducer reducer(comm, params, bucket_bytes);
    reducer.zero_grad();
    const auto grads = make_gradients(params, rank);
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].defined()) params[i].mutable_grad().add_(grads[i]);
    }
    const auto expected = expected_means(comm, params, grads);
    reducer.reduce();
    for (size_t i = 0; i + 1 < params.size(); ++i) {
      EXPECT_TRUE(torch::equal(params[i].grad(), expected[i]))
          << "parameter " << i << " bucket_bytes " << bucket_bytes;
    }
    EXPECT_FALSE(params.back().grad().defined()) << "frozen parameter got a gradient";
    if (bucket_bytes == 64) {
      EXPECT_EQ(reducer.bucket_count(), 7u);
    }
    if (bucket_bytes == 25'000'000) {
      // First bucket small (1 MB cap): the last parameters, in reverse order.
      EXPECT_EQ(reducer.bucket_count(), 2u);
      // Reverse order 64, 300000, 5, ...: 64 + 300000 floats exceed 1 MB, so the first bucket
      // holds only the last parameter and the second everything else.
      EXPECT_EQ(reducer.bucket_sizes(),
                (std::vector<int64_t>{64, 300000 + 5 + 40000 + 17 + 1000 + 3}));
    }
  }
}

TEST(GradientReducer, OverlappedWithBackwardEqualsPerTensorAllReduce) {
  MpiCommunicator comm(60.0);
  const int rank = comm.rank();
  for (int64_t bucket_bytes : {int64_t{64}, int64_t{200000}, int64_t{25'000'000}}) {
    auto params = make_parameters();
    const auto grads = make_gradients(params, rank);
    // Expected sums first: once backward has launched buckets, nothing else may use `comm`
    // until reduce() (ranks may have launched different numbers of buckets by then).
    const auto expected = expected_means(comm, params, grads);
    GradientReducer reducer(comm, params, bucket_bytes);
    reducer.zero_grad();
    reducer.prepare_for_backward(/*sync=*/true);
    // d/dp sum(p * g) = g: backward delivers exactly the chosen gradients, through the hooks.
    torch::Tensor loss = torch::zeros({});
    for (size_t i = 0; i < grads.size(); ++i) {
      if (grads[i].defined()) loss = loss + (params[i] * grads[i]).sum();
    }
    loss.backward();
    reducer.reduce();
    for (size_t i = 0; i + 1 < params.size(); ++i) {
      EXPECT_TRUE(torch::equal(params[i].grad(), expected[i]))
          << "parameter " << i << " bucket_bytes " << bucket_bytes;
    }
    if (bucket_bytes == 64 && comm.world_size() > 1) {
      // Buckets (one per tensor) 6, 5 go out during backward; 4 never gets a gradient and holds
      // back the rest until reduce().
      EXPECT_EQ(reducer.last_overlapped_buckets(), 2u);
    }
  }
}

// A small conv net: N ranks x 2 accumulation micro-steps x B/2 samples each must give the
// gradients of one rank with the whole batch of N*B samples (losses are per-sample means, so
// each micro-step's loss is scaled by 1/2 and the reducer divides by N).
TEST(GradientReducer, AccumulatedMicroStepsOnNRanksEqualOneBatch) {
  MpiCommunicator comm(60.0);
  const int rank = comm.rank(), world = comm.world_size();
  const int64_t per_rank = 4, micro_steps = 2, micro = per_rank / micro_steps;
  torch::manual_seed(11);
  const torch::Tensor inputs = torch::randn({world * per_rank, 3, 8, 8});
  const torch::Tensor targets = torch::randn({world * per_rank, 2});
  auto make_net = [] {
    torch::manual_seed(5);
    return torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)),
                                 torch::nn::SiLU(), torch::nn::Flatten(),
                                 torch::nn::Linear(8 * 8 * 8, 2));
  };
  auto loss_on = [&](torch::nn::Sequential& net, int64_t first, int64_t count) {
    return (net->forward(inputs.narrow(0, first, count)) - targets.narrow(0, first, count))
        .square()
        .mean();
  };

  auto net = make_net();
  GradientReducer reducer(comm, net->parameters(), /*bucket_bytes=*/8192);
  reducer.zero_grad();
  for (int64_t m = 0; m < micro_steps; ++m) {
    reducer.prepare_for_backward(/*sync=*/m + 1 == micro_steps);
    (loss_on(net, rank * per_rank + m * micro, micro) / micro_steps).backward();
  }
  reducer.reduce();

  auto whole = make_net();
  loss_on(whole, 0, world * per_rank).backward();
  for (size_t i = 0; i < whole->parameters().size(); ++i) {
    EXPECT_TRUE(
        torch::allclose(net->parameters()[i].grad(), whole->parameters()[i].grad(), 1e-4, 1e-6))
        << "parameter " << i << ": max |diff| "
        << (net->parameters()[i].grad() - whole->parameters()[i].grad()).abs().max().item<float>();
  }
}

TEST(GradientReducer, DeadlineNamesTheCollectiveAndTheRank) {
  MpiCommunicator comm(/*timeout_s=*/2.0);
  if (comm.world_size() < 2) GTEST_SKIP() << "needs two ranks";
  auto x = torch::ones({1000});
  // Every rank but 0 arrives 3 s late: rank 0 gives up after 2 s, then waits again and succeeds.
  if (comm.rank() != 0) std::this_thread::sleep_for(std::chrono::seconds(3));
  auto work = comm.all_reduce_sum_async(x);
  if (comm.rank() == 0) {
    try {
      work->wait();
      ADD_FAILURE() << "wait() returned although the other ranks were late";
    } catch (const CollectiveTimeout& e) {
      const std::string expected = "all_reduce_sum #0 of 0.00 MB on rank 0/" +
                                   std::to_string(comm.world_size()) + " did not finish within 2 s";
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
    }
  }
  work->wait();
  EXPECT_EQ(x[0].item<float>(), static_cast<float>(comm.world_size()));
}

TEST(GradientReducer, ZeroGradKeepsBucketViews) {
  MpiCommunicator comm(60.0);
  auto params = make_parameters();
  GradientReducer reducer(comm, params, 4096);
  params[0].mutable_grad().fill_(3.0);
  reducer.zero_grad();
  EXPECT_EQ(params[0].grad().abs().sum().item<float>(), 0.0f);
  // Autograd accumulates into the views.
  (params[1] * 2.0).sum().backward();
  reducer.reduce();
  EXPECT_TRUE(torch::allclose(params[1].grad(), torch::full({1000}, 2.0)));
}

}  // namespace
}  // namespace difftrain::launch
