// difftrain's side of the PyTorch DDP comparison: the trainer's U-Net, GradientReducer (buckets
// launched during backward), BucketAdamW (grad-norm clip and AdamW) and EMA, on random images, one
// MPI rank per process: the same step as bench/ddp_compare/ddp_unet.py takes. Rank 0 prints
// images/s and the share of each step spent waiting for gradients after backward (communication not
// hidden), for steps with buckets launched during backward and, interleaved with them, after it.
//
//   mpirun -np 2 --bind-to none ddp_compare_difftrain --config configs/fmnist-tiny.yaml
//       --batch 8 [--overlap alternate|on|off] [--steps 20] [--threads 1]
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
#include "trainer/commands/setting_option.h"
#include "trainer/config/config.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/objective.h"
#include "trainer/optim/bucket_adamw.h"
#include "trainer/optim/ema.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string config;
  int64_t batch = 8;
  int steps = 20;
  int warmup = 3;
  int threads = 1;
  std::string overlap = "alternate";
  difftrain::launch::DeviceRequest device = difftrain::launch::DeviceRequest::kCpu;
  difftrain::launch::Backend backend = difftrain::launch::Backend::kAuto;
};

// Sums over the timed steps of one mode (buckets launched during backward, or after it).
struct Totals {
  int steps = 0;
  double step_s = 0, backward_s = 0, wait_s = 0, reduce_s = 0, rest_s = 0;
  size_t overlapped = 0;
};

double max_over_ranks(double value) {
  MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return value;
}

double seconds_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
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
  launch::GradientReducer reducer(*gradients, parameters,
                                  static_cast<int64_t>(cfg.dist.bucket_mb * 1e6));
  const trainer::AdamWSettings adamw = trainer::adamw_settings(cfg);
  trainer::BucketAdamW optimizer(parameters, reducer.buckets(), adamw);
  trainer::Ema ema(*model, cfg.ema.decay);
  const int64_t channels = cfg.model.in_channels, size = cfg.model.image_size;
  const std::vector<int64_t> shape = {args.batch, channels, size, size};

  // One training step as the trainer takes it; `overlap` decides whether the buckets go out
  // during backward (prepare_for_backward) or only in reduce().
  Totals totals[2];  // [0]: launched after backward, [1]: during backward
  auto step = [&](bool overlap) {
    const auto start = Clock::now();
    const at::Tensor images = torch::randint(0, 256, shape, torch::kByte);
    const at::Tensor x0 = images.to(device).to(torch::kFloat).div_(127.5).sub_(1.0);
    const at::Tensor t = torch::randint(0, schedule.timesteps(), {args.batch},
                                        torch::TensorOptions().dtype(torch::kLong).device(device));
    const at::Tensor eps = torch::randn(shape, torch::TensorOptions().device(device));
    reducer.zero_grad();
    if (overlap) reducer.prepare_for_backward(/*sync=*/true);
    const at::Tensor loss =
        trainer::eps_mse_loss(model->forward(schedule.q_sample(x0, t, eps), t), eps);
    loss.backward();
    const auto backward_end = Clock::now();
    reducer.reduce();
    optimizer.step(cfg.train.lr);  // clips
    ema.update(*model);
    if (device.is_cuda()) torch::cuda::synchronize();
    const auto end = Clock::now();
    Totals& sum = totals[overlap ? 1 : 0];
    ++sum.steps;
    sum.step_s += seconds_between(start, end);
    sum.backward_s += seconds_between(start, backward_end);
    sum.rest_s += seconds_between(backward_end, end);
    sum.wait_s += reducer.last_wait_seconds();
    sum.reduce_s += reducer.last_reduce_seconds();
    sum.overlapped += reducer.last_overlapped_buckets();
  };
  // "alternate" interleaves the two modes step by step, so that both see the same machine
  // load: the fair way to tell whether overlap helps on a shared or noisy host.
  auto overlap_at = [&](int i) {
    return args.overlap == "on" || (args.overlap == "alternate" && i % 2 == 0);
  };

  model->train();
  for (int i = 0; i < args.warmup; ++i) step(overlap_at(i));
  totals[0] = totals[1] = Totals();
  gradients->barrier();
  MPI_Barrier(MPI_COMM_WORLD);
  for (int i = 0; i < args.steps; ++i) step(overlap_at(i));

  const int world = runtime.world_size();
  for (int mode : {1, 0}) {
    const Totals& sum = totals[mode];
    // Every rank takes part (the sums are collectives); modes without steps print nothing.
    const double step_s = max_over_ranks(sum.step_s);
    const double wait_s = max_over_ranks(sum.wait_s);
    if (runtime.rank() != 0 || sum.steps == 0) continue;
    const double n = sum.steps;
    std::printf(
        "difftrain: %s, %lld parameters, %d ranks x %lld images, %d threads/rank, %d steps, "
        "overlap %s: %.1f img/s, %.0f ms/step | wait %.1f ms/step (%.1f%% of step), reduce span "
        "%.1f ms, %.1f of %zu buckets launched in backward, backend %s | rank 0: data+fwd+bwd "
        "%.0f ms, wait+clip+opt+ema %.0f ms\n",
        std::filesystem::path(args.config).stem().c_str(),
        static_cast<long long>(trainer::parameter_count(*model)), world,
        static_cast<long long>(args.batch), args.threads, sum.steps, mode ? "on" : "off",
        n * static_cast<double>(args.batch * world) / step_s, 1000 * step_s / n, 1000 * wait_s / n,
        100 * wait_s / step_s, 1000 * sum.reduce_s / n, static_cast<double>(sum.overlapped) / n,
        reducer.bucket_count(), gradients->backend().c_str(), 1000 * sum.backward_s / n,
        1000 * sum.rest_s / n);
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
  app.add_option("--overlap", args.overlap,
                 "launch buckets during backward (on), after it (off), or alternate step by step")
      ->check(CLI::IsMember({"on", "off", "alternate"}));
  difftrain::trainer::add_setting_option(&app, "--device", &args.device, "Device");
  difftrain::trainer::add_setting_option(&app, "--backend", &args.backend, "Gradient backend");
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
