// difftrain's side of the single-GPU comparison (bench/gpu_compare/run.sh): the trainer's U-Net
// for a config, one process, the trainer's step (q_sample, forward under AutocastScope, eps-MSE
// in fp32, backward, BucketAdamW with its grad-norm clip, EMA) on random images drawn on the
// device; with --cuda-graph that step captured once in a CUDA graph and replayed (what
// train.cuda_graph does). Then DDIM sampling through trainer::sample. Prints training images/s,
// peak device memory of training and sampling images/s, as a line and as "RESULT {json}" (the
// same keys as unet_bench.py).
//
//   gpu_compare_difftrain --config configs/ddpm-cifar10.yaml [--device cuda] [--batch 128]
//       [--steps 50] [--warmup 10] [--precision bf16] [--sample-steps 50] [--sample-batch 128]
//       [--cuda-graph] [--channels-last]
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "monitoring/clock.h"
#include "trainer/commands/setting_option.h"
#include "trainer/config/config.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/objective.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/optim/bucket_adamw.h"
#include "trainer/optim/ema.h"
#include "trainer/optim/precision.h"
#include "trainer/telemetry/device_memory.h"
#include "trainer/train/step_graph.h"

namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::string config;
  std::string device = "cuda";
  int64_t batch = 128;
  int steps = 50;
  int warmup = 10;
  difftrain::trainer::Precision precision = difftrain::trainer::Precision::kBf16;
  int64_t sample_steps = 50;
  int64_t sample_batch = 128;
  int sample_repeats = 2;
  int threads = 0;
  bool cuda_graph = false;
  bool channels_last = false;
};

using difftrain::monitoring::seconds_since;

void synchronize(const c10::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index() < 0 ? 0 : device.index());
}

void run(const Args& args) {
  namespace trainer = difftrain::trainer;

  const trainer::Config cfg = trainer::load_config(args.config);
  const std::string preset = std::filesystem::path(args.config).stem().string();
  if (args.threads > 0) torch::set_num_threads(args.threads);
  const c10::Device device(args.device);
  const trainer::Precision precision = args.precision;
  trainer::configure_device_math(device.type());

  torch::manual_seed(0);
  trainer::UNet model(trainer::unet_options(cfg));
  model->to(device);
  const at::MemoryFormat format =
      args.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  trainer::set_memory_format(*model, format);  // before the buckets, optimizer and EMA
  const int64_t parameters = trainer::parameter_count(*model);
  const trainer::NoiseSchedule schedule = trainer::noise_schedule(cfg);
  const trainer::AdamWSettings adamw = trainer::adamw_settings(cfg);
  const std::vector<difftrain::launch::GradientBucket> buckets =
      trainer::single_gradient_bucket(model->parameters());
  trainer::BucketAdamW optimizer(model->parameters(), buckets, adamw);
  trainer::Ema ema(*model, cfg.ema.decay);
  const int64_t channels = cfg.model.in_channels, size = cfg.model.image_size;
  const std::vector<int64_t> shape = {args.batch, channels, size, size};

  // Training: the trainer's step on one device, its inputs drawn there (so that a graph can
  // capture the draws too); learning rate and EMA weight set outside the step.
  const at::TensorOptions on_device = torch::TensorOptions().device(device);
  auto step = [&]() -> at::Tensor {
    const at::Tensor x0 = torch::randint(0, 256, shape, on_device.dtype(torch::kByte))
                              .to(torch::kFloat)
                              .div_(127.5)
                              .sub_(1.0);
    const at::Tensor t =
        torch::randint(0, schedule.timesteps(), {args.batch}, on_device.dtype(torch::kLong));
    const at::Tensor eps = torch::randn(shape, on_device);
    buckets.front().flat.zero_();
    at::Tensor eps_hat;
    {
      trainer::AutocastScope autocast(precision, device.type());  // forward only
      eps_hat = model->forward(schedule.q_sample(x0, t, eps).contiguous(format), t);
    }
    trainer::eps_mse_loss(eps_hat, eps).backward();
    const at::Tensor outcome = optimizer.step();  // clips; never waits for the device
    ema.apply_update(*model);
    return outcome;
  };
  std::unique_ptr<trainer::StepGraph> graph;
  if (args.cuda_graph) {
    const std::string why = trainer::step_graph_unavailable_reason(device, 1, 1);
    if (!why.empty()) throw std::runtime_error("--cuda-graph: " + why);
    graph = std::make_unique<trainer::StepGraph>(device);
  }
  auto timed_step = [&] {
    ema.begin_update();
    if (!graph) {
      step();
    } else if (graph->captured()) {
      graph->replay();
    } else {
      graph->run_eagerly(step);
    }
  };
  optimizer.set_learning_rate(cfg.train.lr);
  model->train();
  trainer::reset_peak_device_memory(device);
  for (int i = 0; i < args.warmup; ++i) timed_step();
  if (graph) {
    graph->capture(step);
    ema.begin_update();
    graph->replay();
  }
  synchronize(device);
  auto start = Clock::now();
  for (int i = 0; i < args.steps; ++i) timed_step();
  synchronize(device);
  const double train_images_per_s =
      static_cast<double>(args.steps * args.batch) / seconds_since(start);
  const std::optional<int64_t> peak_bytes = trainer::peak_device_memory_bytes(device);

  // Sampling: DDIM (eta 0, x0 clipped) through the sampler the `sample` command uses.
  trainer::SamplerOptions sampler;
  sampler.kind = trainer::SamplerKind::kDdim;
  sampler.steps = args.sample_steps;
  model->eval();
  const trainer::EpsPredictor predictor = [&](const at::Tensor& x_t, const at::Tensor& t) {
    trainer::AutocastScope autocast(precision, device.type());
    return model->forward(x_t.contiguous(format), t);
  };
  const std::vector<int64_t> sample_shape = {args.sample_batch, channels, size, size};
  trainer::sample(predictor, schedule, sample_shape, sampler, /*seed=*/1, 0, device);  // warm-up
  synchronize(device);
  start = Clock::now();
  for (int i = 0; i < args.sample_repeats; ++i) {
    trainer::sample(predictor, schedule, sample_shape, sampler, /*seed=*/1,
                    static_cast<int64_t>(i) * args.sample_batch, device);
  }
  synchronize(device);
  const double sample_images_per_s =
      static_cast<double>(args.sample_repeats * args.sample_batch) / seconds_since(start);

  const double peak_mib = peak_bytes ? static_cast<double>(*peak_bytes) / (1 << 20) : 0.0;
  const std::string peak_text = peak_bytes ? std::to_string(std::lround(peak_mib)) + " MiB" : "n/a";
  const std::string peak_json = peak_bytes ? std::to_string(peak_mib) : "null";
  const std::string side = std::string(graph ? "difftrain-graph" : "difftrain-eager") +
                           (args.channels_last ? "-cl" : "");
  std::printf(
      "%s: %s, %lld parameters, batch %lld, %s: train %.1f img/s, peak memory %s; "
      "DDIM-%lld batch %lld: %.2f img/s\n",
      side.c_str(), preset.c_str(), static_cast<long long>(parameters),
      static_cast<long long>(args.batch), trainer::setting_name(args.precision).c_str(),
      train_images_per_s, peak_text.c_str(), static_cast<long long>(args.sample_steps),
      static_cast<long long>(args.sample_batch), sample_images_per_s);
  std::printf(
      "RESULT {\"side\": \"%s\", \"config\": \"%s\", \"parameters\": %lld, "
      "\"batch\": %lld, \"precision\": \"%s\", \"device\": \"%s\", \"train_images_per_s\": %.3f, "
      "\"peak_memory_mib\": %s, \"sample_steps\": %lld, \"sample_images_per_s\": %.4f}\n",
      side.c_str(), preset.c_str(), static_cast<long long>(parameters),
      static_cast<long long>(args.batch), trainer::setting_name(args.precision).c_str(),
      args.device.c_str(), train_images_per_s, peak_json.c_str(),
      static_cast<long long>(args.sample_steps), sample_images_per_s);
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  Args args;
  CLI::App app("difftrain's side of the single-GPU comparison (bench/gpu_compare/run.sh)");
  app.add_option("--config", args.config, "difftrain YAML config")->required();
  app.add_option("--device", args.device, "cuda, cuda:N or cpu");
  app.add_option("--batch", args.batch, "training images per step");
  app.add_option("--steps", args.steps, "timed training steps");
  app.add_option("--warmup", args.warmup, "untimed training steps first");
  difftrain::trainer::add_setting_option(&app, "--precision", &args.precision,
                                         "bf16: autocast, fp32 weights");
  app.add_option("--sample-steps", args.sample_steps, "DDIM steps");
  app.add_option("--sample-batch", args.sample_batch, "images per sampling batch");
  app.add_option("--sample-repeats", args.sample_repeats, "timed sampling batches");
  app.add_option("--threads", args.threads, "CPU intra-op threads (0: LibTorch's default)");
  app.add_flag("--cuda-graph", args.cuda_graph,
               "capture the training step in a CUDA graph after the warm-up steps and replay it");
  app.add_flag("--channels-last", args.channels_last,
               "NHWC weights and images, as train.channels_last (side names get -cl)");
  CLI11_PARSE(app, argc, argv);
  try {
    run(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "gpu_compare_difftrain: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
