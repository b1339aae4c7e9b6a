// difftrain's side of the PyTorch DDP comparison: the trainer's U-Net, GradientReducer (buckets
// launched during backward), grad-norm clip, AdamW and EMA, on random images, one MPI rank per
// process: the same step as bench/ddp_compare/ddp_unet.py takes. Rank 0 prints images/s and the
// share of each step spent waiting for gradients after backward (communication not hidden).
//
//   mpirun -np 2 --bind-to none ddp_compare_difftrain --config configs/fmnist-tiny.yaml --batch 8
#include <mpi.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "launch/communicator.h"
#include "launch/gradient_reducer.h"
#include "launch/runtime.h"
#include "trainer/config.h"
#include "trainer/diffusion/objective.h"
#include "trainer/ema.h"
#include "trainer/model_builder.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string config;
  int64_t batch = 8;
  int steps = 20;
  int warmup = 3;
  int threads = 1;
  bool overlap = true;
  std::string device = "cpu";
  std::string backend = "auto";
};

double max_over_ranks(double value) {
  MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return value;
}

void run(const Args& args, const difftrain::launch::Runtime& runtime) {
  namespace trainer = difftrain::trainer;
  namespace launch = difftrain::launch;
  const trainer::Config cfg = trainer::load_config(args.config);
  torch::set_num_threads(args.threads);
  const c10::Device device = runtime.device();
  auto gradients = launch::make_communicator(args.backend, runtime, cfg.dist.timeout_s);

  torch::manual_seed(0);
  trainer::UNet model(trainer::unet_options(cfg));
  model->to(device);
  const trainer::NoiseSchedule schedule = trainer::noise_schedule(cfg);
  auto parameters = model->parameters();
  torch::optim::AdamW optimizer(parameters, torch::optim::AdamWOptions(cfg.train.lr)
                                                .betas({cfg.train.adam_beta1, cfg.train.adam_beta2})
                                                .eps(cfg.train.adam_eps)
                                                .weight_decay(cfg.train.weight_decay));
  launch::GradientReducer reducer(*gradients, parameters,
                                  static_cast<int64_t>(cfg.dist.bucket_mb * 1e6));
  trainer::Ema ema(*model, cfg.ema.decay);
  const int64_t channels = cfg.model.in_channels, size = cfg.model.image_size;
  const std::vector<int64_t> shape = {args.batch, channels, size, size};

  double wait_s = 0, reduce_s = 0, backward_s = 0, rest_s = 0;
  size_t overlapped = 0;
  auto step = [&] {
    const auto step_start = Clock::now();
    const at::Tensor images = torch::randint(0, 256, shape, torch::kByte);
    const at::Tensor x0 = images.to(device).to(torch::kFloat).div_(127.5).sub_(1.0);
    const at::Tensor t = torch::randint(0, schedule.timesteps(), {args.batch},
                                        torch::TensorOptions().dtype(torch::kLong).device(device));
    const at::Tensor eps = torch::randn(shape, torch::TensorOptions().device(device));
    reducer.zero_grad();
    if (args.overlap) reducer.prepare_for_backward(/*sync=*/true);
    const at::Tensor loss =
        trainer::eps_mse_loss(model->forward(schedule.q_sample(x0, t, eps), t), eps);
    loss.backward();
    const auto backward_end = Clock::now();
    backward_s += std::chrono::duration<double>(backward_end - step_start).count();
    reducer.reduce();
    wait_s += reducer.last_wait_seconds();
    reduce_s += reducer.last_reduce_seconds();
    overlapped += reducer.last_overlapped_buckets();
    if (cfg.train.grad_clip > 0) torch::nn::utils::clip_grad_norm_(parameters, cfg.train.grad_clip);
    optimizer.step();
    ema.update(*model);
    rest_s += std::chrono::duration<double>(Clock::now() - backward_end).count();
  };

  model->train();
  for (int i = 0; i < args.warmup; ++i) step();
  wait_s = reduce_s = backward_s = rest_s = 0;
  overlapped = 0;
  gradients->barrier();
  MPI_Barrier(MPI_COMM_WORLD);
  const auto start = Clock::now();
  for (int i = 0; i < args.steps; ++i) step();
  if (device.is_cuda()) torch::cuda::synchronize();
  const double elapsed_s =
      max_over_ranks(std::chrono::duration<double>(Clock::now() - start).count());
  const double max_wait_s = max_over_ranks(wait_s);
  if (runtime.rank() == 0) {
    const int world = runtime.world_size();
    const double images_per_s = args.steps * args.batch * world / elapsed_s;
    std::printf(
        "difftrain: %s, %lld parameters, %d ranks x %lld images, %d threads/rank, %d steps: "
        "%.1f img/s, %.0f ms/step | wait %.1f ms/step (%.1f%% of step), reduce span %.1f "
        "ms/step, %.1f of %zu buckets launched in backward, backend %s, overlap %s | rank 0: "
        "data+fwd+bwd %.0f ms, wait+clip+opt+ema %.0f ms\n",
        std::filesystem::path(args.config).stem().c_str(),
        static_cast<long long>(trainer::parameter_count(*model)), world,
        static_cast<long long>(args.batch), args.threads, args.steps, images_per_s,
        1000 * elapsed_s / args.steps, 1000 * max_wait_s / args.steps, 100 * max_wait_s / elapsed_s,
        1000 * reduce_s / args.steps, static_cast<double>(overlapped) / args.steps,
        reducer.bucket_count(), gradients->backend().c_str(), args.overlap ? "on" : "off",
        1000 * backward_s / args.steps, 1000 * rest_s / args.steps);
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app("difftrain's side of the PyTorch DDP comparison (bench/ddp_compare/run.sh)");
  app.add_option("--config", args.config, "difftrain YAML config (model, train, dist keys)")
      ->required();
  app.add_option("--batch", args.batch, "images per rank per step");
  app.add_option("--steps", args.steps, "timed steps");
  app.add_option("--warmup", args.warmup, "untimed steps first");
  app.add_option("--threads", args.threads, "intra-op threads per rank");
  app.add_option("--overlap", args.overlap, "launch buckets during backward (1) or after (0)");
  app.add_option("--device", args.device, "cpu, cuda or auto");
  app.add_option("--backend", args.backend, "auto, mpi or nccl");
  CLI11_PARSE(app, argc, argv);
  difftrain::launch::Runtime runtime(&argc, &argv, args.device);
  try {
    run(args, runtime);
  } catch (const std::exception& e) {
    runtime.report_error(e.what());
    if (runtime.world_size() > 1) runtime.abort(1);
    return 1;
  }
  return 0;
}
