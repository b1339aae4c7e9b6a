// The training loop, read top to bottom as an outline of one step.
#include "trainer/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <filesystem>

#include "data/dataset.h"
#include "data/distributed_sampler.h"
#include "data/file_util.h"
#include "data/prefetcher.h"
#include "launch/communicator.h"
#include "launch/gradient_reducer.h"
#include "trainer/checkpoint.h"
#include "trainer/diffusion/objective.h"
#include "trainer/ema.h"
#include "trainer/image_grid.h"
#include "trainer/model_builder.h"
#include "trainer/rng.h"
#include "trainer/step_noise.h"
#include "trainer/version.h"

namespace difftrain::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(seconds);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", static_cast<long long>(s / 3600),
                  static_cast<long long>(s % 3600 / 60));
  } else {
    std::snprintf(text, sizeof(text), "%lldm%02llds", static_cast<long long>(s / 60),
                  static_cast<long long>(s % 60));
  }
  return text;
}

// Collective: every rank calls this, in the same order.
// Copies rank 0's parameters and buffers to every rank (staging through the host for MPI).
void broadcast_module(launch::Communicator& comm, torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  auto tensors = module.parameters();
  for (auto& b : module.buffers()) tensors.push_back(b);
  for (auto& t : tensors) {
    const bool stage = t.is_cuda() && comm.backend() == "mpi";
    at::Tensor buffer = stage ? t.to(at::kCPU).contiguous() : t;
    comm.broadcast(buffer, 0);
    if (stage) t.copy_(buffer);
  }
}

// Refuses a checkpoint whose model or data shape differs from the config's; logs other changes.
void check_resume_compatible(const Config& now, const Config& then, const std::string& path) {
  auto section = [](const Config& c) {
    return std::vector<std::string>{
        std::to_string(c.model.in_channels), std::to_string(c.model.image_size),
        std::to_string(c.model.channels), std::to_string(c.model.num_res_blocks),
        std::to_string(c.model.channel_mult.size()),
        std::to_string(c.model.attention_resolutions.size())};
  };
  if (section(now) != section(then) || now.model.channel_mult != then.model.channel_mult ||
      now.model.attention_resolutions != then.model.attention_resolutions) {
    throw CheckpointError("checkpoint " + path +
                          ": was written for a different model (model.* keys differ from the "
                          "config); resume with the original model settings or use a new run dir");
  }
  if (now.diffusion.timesteps != then.diffusion.timesteps ||
      now.diffusion.schedule != then.diffusion.schedule) {
    throw CheckpointError("checkpoint " + path + ": was written with diffusion." +
                          then.diffusion.schedule + "/T=" +
                          std::to_string(then.diffusion.timesteps) +
                          ", the config asks for a different schedule");
  }
  if (now.train.lr != then.train.lr) {
    spdlog::info("resume: train.lr changed from {} to {}", then.train.lr, now.train.lr);
  }
  if (now.train.steps != then.train.steps) {
    spdlog::info("resume: train.steps changed from {} to {}", then.train.steps, now.train.steps);
  }
}

}  // namespace

double learning_rate_at(const Config& config, int64_t step) {
  if (config.train.warmup_steps <= 0 || step >= config.train.warmup_steps) return config.train.lr;
  return config.train.lr * static_cast<double>(step + 1) /
         static_cast<double>(config.train.warmup_steps);
}

Trainer::Trainer(Config config, TrainerOptions options, launch::Communicator& gradients,
                 launch::Communicator& control, const c10::Device& device)
    : config_(std::move(config)), options_(std::move(options)), gradients_(gradients),
      control_(control), device_(device) {}

TrainResult Trainer::run() {
  const Config& cfg = config_;
  const int rank = control_.rank();
  const int world = control_.world_size();
  const int64_t batch = cfg.train.batch_size;
  const int64_t global_batch = batch * world;
  const auto seed = static_cast<uint64_t>(cfg.train.seed);

  // Open the dataset and check it against the model's image shape (on every rank, so that a
  // bad input is reported before any collective).
  data::Dataset dataset(cfg.data.dir);
  const data::SampleShape shape = dataset.manifest().shape;
  if (shape.channels != cfg.model.in_channels || shape.height != cfg.model.image_size ||
      shape.width != cfg.model.image_size) {
    throw std::runtime_error(
        "data.dir " + cfg.data.dir + ": images are " + shape.str() + " but the model wants [" +
        std::to_string(cfg.model.in_channels) + "," + std::to_string(cfg.model.image_size) + "," +
        std::to_string(cfg.model.image_size) +
        "] (model.in_channels, model.image_size); re-run prepare with --pad-to or set the keys");
  }
  data::DistributedSampler sampler(dataset.size(), global_batch, seed);

  // Build the model identically everywhere, then make rank 0's weights everyone's.
  torch::manual_seed(derive_seed(seed, kInitPurpose, 0, 0));
  UNet model(unet_options(cfg));
  model->to(device_);
  broadcast_module(gradients_, *model);
  const NoiseSchedule schedule = noise_schedule(cfg);
  auto parameters = model->parameters();
  torch::optim::AdamW optimizer(
      parameters, torch::optim::AdamWOptions(cfg.train.lr)
                      .betas({cfg.train.adam_beta1, cfg.train.adam_beta2})
                      .eps(cfg.train.adam_eps)
                      .weight_decay(cfg.train.weight_decay));
  launch::GradientReducer reducer(gradients_, parameters,
                                  static_cast<int64_t>(cfg.dist.bucket_mb * 1e6));
  Ema ema(*model, cfg.ema.decay);
  CheckpointStore store(options_.run_dir);

  // Resume from the newest checkpoint of the run directory, or an explicit file.
  int64_t start_step = 0;
  std::optional<std::string> resume_path;
  if (options_.resume == "auto") {
    resume_path = store.latest();
  } else if (options_.resume != "never") {
    resume_path = options_.resume;
  }
  if (resume_path) {
    LoadedCheckpoint checkpoint = LoadedCheckpoint::open(*resume_path, device_);
    check_resume_compatible(cfg, parse_config(checkpoint.info().config_yaml, *resume_path),
                            *resume_path);
    checkpoint.load_model(*model);
    if (checkpoint.has_ema()) checkpoint.load_ema(ema);
    if (checkpoint.has_optimizer()) checkpoint.load_optimizer(optimizer);
    start_step = checkpoint.info().step;
    spdlog::info("resumed from {} at step {} (written by {} ranks)", *resume_path, start_step,
                 checkpoint.info().world_size);
  }

  if (rank == 0) {
    std::filesystem::create_directories(options_.run_dir + "/samples");
    data::write_file_atomic(options_.run_dir + "/config.yaml", to_yaml(cfg));
  }
  control_.barrier();

  spdlog::info("{} parameters, {} images in {}, global batch {} ({} per rank x {} ranks), "
               "{} steps per epoch, device {}, {} threads",
               parameter_count(*model), dataset.size(), cfg.data.dir, global_batch, batch, world,
               sampler.steps_per_epoch(), device_.str(), at::get_num_threads());

  auto write_checkpoint = [&](int64_t step) -> std::string {
    std::string path;
    if (rank == 0) {
      const auto start = Clock::now();
      CheckpointInfo info;
      info.step = step;
      info.world_size = world;
      info.global_batch = global_batch;
      info.config_yaml = to_yaml(cfg);
      info.versions = version_string();
      path = store.commit(step, encode_checkpoint(info, *model, &ema, &optimizer));
      spdlog::info("checkpoint {} written in {:.2f} s", path, seconds_since(start));
    }
    return path;
  };

  TrainResult result;
  result.first_step = start_step;
  result.final_step = start_step;
  model->train();
  data::Prefetcher prefetcher(dataset, sampler, rank, world, start_step,
                              static_cast<int>(cfg.data.prefetch_batches));
  const std::vector<int64_t> sample_shape = {shape.channels, shape.height, shape.width};

  // Interval statistics, reset at each progress line.
  at::Tensor interval_loss = torch::zeros({}, torch::TensorOptions().dtype(torch::kDouble).device(device_));
  int64_t interval_steps = 0;
  double t_data = 0, t_forward_backward = 0, t_reduce = 0, t_optimizer = 0;
  auto interval_start = Clock::now();
  const auto run_start = Clock::now();
  int64_t last_checkpoint_step = start_step;

  for (int64_t step = start_step; step < cfg.train.steps; ++step) {
    // Fetch this rank's slice of the global batch.
    auto phase = Clock::now();
    data::Batch host_batch = prefetcher.next();
    at::Tensor x0 = torch::from_blob(host_batch.images.data(),
                                     {batch, shape.channels, shape.height, shape.width}, torch::kByte)
                        .to(device_)
                        .to(torch::kFloat)
                        .div_(127.5)
                        .sub_(1.0);
    StepNoise noise = draw_step_noise(seed, step, rank * batch, batch, schedule.timesteps(),
                                      sample_shape);
    at::Tensor t = noise.timesteps.to(device_);
    at::Tensor eps = noise.eps.to(device_);
    t_data += seconds_since(phase);

    // Forward process, prediction and loss; dropout draws from (seed, step, rank).
    phase = Clock::now();
    torch::manual_seed(derive_seed(seed, kDropoutPurpose, static_cast<uint64_t>(step),
                                   static_cast<uint64_t>(rank)));
    reducer.zero_grad();
    at::Tensor x_t = schedule.q_sample(x0, t, eps);
    at::Tensor loss = eps_mse_loss(model->forward(x_t, t), eps);
    loss.backward();
    t_forward_backward += seconds_since(phase);

    // Average gradients over ranks.
    phase = Clock::now();
    reducer.reduce();
    t_reduce += seconds_since(phase);

    // Clip, step, update the EMA.
    phase = Clock::now();
    if (cfg.train.grad_clip > 0) torch::nn::utils::clip_grad_norm_(parameters, cfg.train.grad_clip);
    const double lr = learning_rate_at(cfg, step);
    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options()).lr(lr);
    }
    optimizer.step();
    ema.update(*model);
    interval_loss += loss.detach().to(torch::kDouble);
    ++interval_steps;
    t_optimizer += seconds_since(phase);
    result.final_step = step + 1;

    // Agree on whether to log: rank 0 decides by the clock, everyone learns it.
    const bool last = step + 1 == cfg.train.steps;
    at::Tensor flags = torch::zeros({1}, torch::kLong);
    if (rank == 0 && (last || seconds_since(interval_start) >= cfg.train.log_interval_s)) {
      flags[0] = 1;
    }
    control_.all_reduce_sum(flags);
    if (flags[0].item<int64_t>() > 0) {
      at::Tensor sums = torch::tensor({interval_loss.item<double>(), static_cast<double>(interval_steps)},
                                      torch::kDouble);
      control_.all_reduce_sum(sums);
      const double mean_loss = sums[0].item<double>() / sums[1].item<double>();
      const double elapsed = seconds_since(interval_start);
      const double images_per_s = static_cast<double>(interval_steps * global_batch) / elapsed;
      const double step_s = elapsed / static_cast<double>(interval_steps);
      const double eta_s = step_s * static_cast<double>(cfg.train.steps - step - 1);
      const double ms = 1000.0 / static_cast<double>(interval_steps);
      if (rank == 0) spdlog::info(
          "step {}/{} epoch {:.2f} loss {:.4f} | {:.1f} img/s | {:.0f} ms/step (data {:.0f}, "
          "fwd+bwd {:.0f}, allreduce {:.0f}, opt {:.0f}) | lr {:.2e} | ETA {}",
          step + 1, cfg.train.steps,
          static_cast<double>((step + 1) * global_batch) / static_cast<double>(dataset.size()),
          mean_loss, images_per_s, step_s * 1000, t_data * ms, t_forward_backward * ms,
          t_reduce * ms, t_optimizer * ms, lr, format_duration(eta_s));
      result.last_loss = mean_loss;
      interval_loss.zero_();
      interval_steps = 0;
      t_data = t_forward_backward = t_reduce = t_optimizer = 0;
      interval_start = Clock::now();
    }

    if ((step + 1) % cfg.checkpoint.every_steps == 0 && !last) {
      write_checkpoint(step + 1);
      last_checkpoint_step = step + 1;
    }
  }

  // Final checkpoint and a sample grid from the EMA weights.
  if (last_checkpoint_step != result.final_step || !store.latest()) {
    result.checkpoint_path = write_checkpoint(result.final_step);
  } else if (rank == 0) {
    result.checkpoint_path = *store.latest();
  }
  if (rank == 0 && options_.write_samples) {
    const auto start = Clock::now();
    UNet sampler_model(unet_options(cfg));
    sampler_model->to(device_);
    ema.copy_to(*sampler_model);
    sampler_model->eval();
    torch::NoGradGuard no_grad;
    at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(cfg.sample.seed));
    const at::Tensor images = sample(
        [&](const at::Tensor& x, const at::Tensor& tt) { return sampler_model->forward(x, tt); },
        schedule, {cfg.sample.n, shape.channels, shape.height, shape.width}, sampler_options(cfg),
        generator, device_);
    char name[64];
    std::snprintf(name, sizeof(name), "/samples/step-%09lld.png",
                  static_cast<long long>(result.final_step));
    result.samples_path = options_.run_dir + name;
    write_image_grid(result.samples_path, images);
    spdlog::info("samples {} ({} images, {} {} steps, EMA weights) in {:.1f} s", result.samples_path,
                 cfg.sample.n, cfg.sample.sampler, cfg.sample.steps, seconds_since(start));
  }
  control_.barrier();
  spdlog::info("done: {} steps in {}", result.final_step - result.first_step,
               format_duration(seconds_since(run_start)));
  return result;
}

}  // namespace difftrain::trainer
