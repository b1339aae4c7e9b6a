// NcclCommunicator on real GPUs: sums, broadcast, barrier, the overlapped GradientReducer and
// the deadline (kept by the all-reduce watchdog). Run by the `gpu` CTest entries (one rank per
// GPU); every test skips, with the reason, where the node has no GPU or too few.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include <chrono>
#include <string>
#include <thread>

#include "launch/communicator.h"
#include "launch/gradient_reducer.h"
#include "launch/runtime.h"

namespace difftrain::launch {
namespace {

// Why NCCL tests cannot run here, or "" when they can. The same answer on every rank.
std::string skip_reason() {
  if (!torch::cuda::is_available()) return "no CUDA device";
  MPI_Comm node = MPI_COMM_NULL;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
  int local_size = 1;
  MPI_Comm_size(node, &local_size);
  MPI_Comm_free(&node);
  int too_few = local_size > static_cast<int>(torch::cuda::device_count()) ? 1 : 0;
  int any = 0;
  MPI_Allreduce(&too_few, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any) return "fewer GPUs than ranks on a node (NCCL needs one GPU per rank)";
  return "";
}

class Nccl : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string reason = skip_reason();
    if (!reason.empty()) GTEST_SKIP() << reason;
    runtime_ = std::make_unique<Runtime>(nullptr, nullptr, DeviceRequest::kCuda);
  }
  std::unique_ptr<Communicator> make(double timeout_s = 60.0) {
    return make_communicator(Backend::kNccl, *runtime_, timeout_s);
  }
  std::unique_ptr<Runtime> runtime_;
};

TEST_F(Nccl, AllReduceBroadcastBarrier) {
  auto comm = make();
  ASSERT_EQ(comm->backend(), "nccl");
  const int rank = comm->rank(), world = comm->world_size();
  const auto device = runtime_->device();
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kLong, torch::kBFloat16}) {
    auto x = torch::full({1000}, rank + 1, torch::TensorOptions().dtype(dtype).device(device));
    comm->all_reduce_sum(x);
    EXPECT_EQ(x.to(torch::kCPU).to(torch::kDouble).max().item<double>(), world * (world + 1) / 2)
        << dtype;
  }
  auto y = torch::full({77}, static_cast<double>(rank), torch::TensorOptions().device(device));
  comm->broadcast(y, world - 1);
  EXPECT_EQ(y.min().item<float>(), static_cast<float>(world - 1));
  comm->barrier();
  EXPECT_NO_THROW(comm->check_health());
}

// Rank r's model and batch: the same on every rank that rebuilds them, so each rank can work
// out every other rank's gradients by itself.
torch::nn::Sequential reducer_model(int r, const c10::Device& device) {
  torch::manual_seed(1 + r);
  torch::nn::Sequential model(torch::nn::Linear(32, 512), torch::nn::ReLU(),
                              torch::nn::Linear(512, 512), torch::nn::ReLU(),
                              torch::nn::Linear(512, 4));
  model->to(device);
  return model;
}
torch::Tensor reducer_batch(int r, const c10::Device& device) {
  torch::manual_seed(100 + r);
  return torch::randn({16, 32}).to(device);
}

TEST_F(Nccl, OverlappedReducerEqualsMeanOfEveryRanksGradients) {
  auto comm = make();
  const int rank = comm->rank(), world = comm->world_size();
  const auto device = runtime_->device();
  // The expectation comes from no collective: each rank recomputes every rank's local
  // gradients and averages them in double on the host.
  std::vector<torch::Tensor> expected;
  for (int r = 0; r < world; ++r) {
    auto model = reducer_model(r, device);
    model->forward(reducer_batch(r, device)).square().mean().backward();
    const auto params = model->parameters();
    for (size_t i = 0; i < params.size(); ++i) {
      auto g = params[i].grad().to(torch::kCPU, torch::kDouble) / world;
      if (r == 0) {
        expected.push_back(g);
      } else {
        expected[i] += g;
      }
    }
  }

  auto model = reducer_model(rank, device);
  GradientReducer reducer(*comm, model->parameters(), /*bucket_bytes=*/256 * 1024);
  reducer.zero_grad();
  reducer.prepare_for_backward(/*sync=*/true);
  model->forward(reducer_batch(rank, device)).square().mean().backward();
  reducer.reduce();
  const auto params = model->parameters();
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_TRUE(
        torch::allclose(params[i].grad().to(torch::kCPU, torch::kDouble), expected[i], 1e-5, 1e-6))
        << i;
  }
  if (world > 1) {
    EXPECT_GT(reducer.last_overlapped_buckets(), 0u);
  }
}

TEST_F(Nccl, SkippedCollectiveTimesOutAndAborts) {
  auto comm = make(/*timeout_s=*/3.0);
  if (comm->world_size() < 2) GTEST_SKIP() << "needs two ranks";
  auto x = torch::ones({1 << 20}, torch::TensorOptions().device(runtime_->device()));
  if (comm->rank() == 0) {
    const auto start = std::chrono::steady_clock::now();
    try {
      // Returns at once (the host does not wait for an NCCL all-reduce); the watchdog keeps the
      // deadline, aborts, and check_health() reports it.
      comm->all_reduce_sum(x);
      while (std::chrono::steady_clock::now() - start < std::chrono::seconds(10)) {
        comm->check_health();
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      ADD_FAILURE() << "no timeout reported although rank 1 never joined";
    } catch (const CollectiveTimeout& e) {
      EXPECT_NE(std::string(e.what()).find("all_reduce_sum #0 of 4.19 MB on rank 0/"),
                std::string::npos)
          << e.what();
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(10));
  }
  MPI_Barrier(MPI_COMM_WORLD);  // rank 1 skipped the all-reduce; its communicator dies unused
}

}  // namespace
}  // namespace difftrain::launch
