// sample_across_ranks on 2 and 4 ranks equals a one-rank run with the same chunk size bit for
// bit: with a row-wise predictor and with a tiny U-Net that every rank builds from the same seed,
// for shares that are uneven or empty; and no chunk is drawn by two ranks.
#include "trainer/sampling/distributed_sampling.h"

#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/torch.h>

#include "launch/mpi_communicator.h"
#include "tests/unit/trainer/test_util.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/model/unet.h"

namespace difftrain::trainer {
namespace {

torch::Tensor row_wise_eps(const torch::Tensor& x, const torch::Tensor& t) {
  return 0.5 * torch::tanh(x) - 1e-4 * t.to(x.scalar_type()).reshape({-1, 1, 1, 1});
}

SamplerOptions options_for(SamplerKind kind, int64_t steps, double eta = 0.0) {
  SamplerOptions options;
  options.kind = kind;
  options.steps = steps;
  options.eta = eta;
  return options;
}

TEST(DistributedSampling, EqualsOneRankForEverySamplerAndSplit) {
  launch::MpiCommunicator comm(60.0);
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  for (const SamplerOptions& options :
       {options_for(SamplerKind::kDdpm, 6), options_for(SamplerKind::kDdim, 6, 0.5),
        options_for(SamplerKind::kDpmSolverPP2M, 6)}) {
    for (const int64_t n : {3, 7, 19}) {  // 3 < 4 ranks: some ranks draw nothing
      const torch::Tensor gathered = sample_across_ranks(row_wise_eps, schedule, n, {2, 4, 4},
                                                         options, 42, 2, torch::kCPU, &comm);
      const torch::Tensor alone =
          sample(row_wise_eps, schedule, {n, 2, 4, 4}, options, 42, 0, torch::kCPU);
      EXPECT_TRUE(torch::equal(gathered, alone)) << setting_name(options.kind) << " n " << n;
    }
  }
}

TEST(DistributedSampling, TinyUNetFromTheSameSeedEqualsOneRank) {
  launch::MpiCommunicator comm(60.0);
  const EpsPredictor predictor = test_util::random_unet_eps(3);
  const NoiseSchedule schedule(BetaSchedule::kLinear, 50);
  const SamplerOptions options = options_for(SamplerKind::kDdim, 4, 1.0);
  for (const int64_t chunk : {3, 8}) {
    const torch::Tensor gathered = sample_across_ranks(predictor, schedule, 10, {1, 8, 8}, options,
                                                       9, chunk, torch::kCPU, &comm);
    const torch::Tensor alone = sample_across_ranks(predictor, schedule, 10, {1, 8, 8}, options, 9,
                                                    chunk, torch::kCPU, nullptr);
    EXPECT_TRUE(torch::equal(gathered, alone))
        << "chunk " << chunk << ": " << (gathered - alone).abs().max().item<float>();
  }
}

TEST(DistributedSampling, EveryChunkIsDrawnByExactlyOneRank) {
  launch::MpiCommunicator comm(60.0);
  const int64_t n = 23, chunk = 4;  // 6 chunks, the last one cut at 23
  torch::Tensor draws = torch::zeros({n}, torch::kFloat);
  const torch::Tensor images =
      gather_across_ranks(n, {1}, chunk, &comm, [&](int64_t begin, int64_t end) {
        EXPECT_EQ(begin % chunk, 0);
        EXPECT_EQ(end, std::min(begin + chunk, n));
        draws.narrow(0, begin, end - begin).add_(1.0);
        return torch::arange(begin, end, torch::kFloat).reshape({end - begin, 1});
      });
  comm.all_reduce_sum(draws);
  EXPECT_TRUE(torch::equal(draws, torch::ones({n}))) << draws;
  EXPECT_TRUE(torch::equal(images, torch::arange(n, torch::kFloat).reshape({n, 1})));
}

}  // namespace
}  // namespace difftrain::trainer
