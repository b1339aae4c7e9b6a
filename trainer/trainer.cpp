// The training loop, read top to bottom as an outline of one step.
#include "trainer/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <any>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <limits>

#include "data/dataset.h"
#include "data/distributed_sampler.h"
#include "data/file_util.h"
#include "data/prefetcher.h"
#include "launch/communicator.h"
#include "launch/gradient_reducer.h"
#include "launch/runtime.h"
#include "trainer/bucket_adamw.h"
#include "trainer/checkpoint.h"
#include "trainer/diffusion/objective.h"
#include "trainer/diffusion/prediction.h"
#include "trainer/distributed_sampling.h"
#include "trainer/ema.h"
#include "trainer/image_grid.h"
#include "trainer/model_builder.h"
#include "trainer/precision.h"
#include "trainer/resume.h"
#include "trainer/rng.h"
#include "trainer/run_monitor.h"
#include "trainer/step_graph.h"
#include "trainer/step_inputs.h"
#include "trainer/step_readback.h"
#include "trainer/stop_signal.h"
#include "trainer/version.h"

namespace difftrain::trainer {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", s / 3600, s % 3600 / 60);
  } else {
    std::snprintf(text, sizeof(text), "%lldm%02llds", s / 60, s % 60);
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

// Flags every rank contributes to once per step; summed over ranks.
enum Flag : int64_t { kStop = 0, kLog = 1, kCheckpoint = 2, kFlagCount = 3 };

}  // namespace

double learning_rate_at(const Config& config, int64_t step) {
  if (config.train.warmup_steps <= 0 || step >= config.train.warmup_steps) return config.train.lr;
  return config.train.lr * static_cast<double>(step + 1) /
         static_cast<double>(config.train.warmup_steps);
}

Trainer::Trainer(Config config, TrainerOptions options, launch::Communicator& gradients,
                 launch::Communicator& control, const c10::Device& device)
    : config_(std::move(config)),
      options_(std::move(options)),
      gradients_(gradients),
      control_(control),
      device_(device) {}

TrainResult Trainer::run() {
  const Config& cfg = config_;
  const int rank = control_.rank();
  const int world = control_.world_size();
  const int64_t batch = cfg.train.batch_size;
  const int64_t accum = cfg.train.grad_accum_steps;
  const int64_t micro_global_batch = batch * world;         // images per micro-step over all ranks
  const int64_t global_batch = micro_global_batch * accum;  // images per optimizer step
  const auto seed = static_cast<uint64_t>(cfg.train.seed);
  const double time_limit_s = parse_time_limit_s(cfg.train.time_limit);
  const Precision precision = parse_precision(cfg.train.precision);
  const auto run_start = Clock::now();
  configure_device_math(device_.type());

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
  if (cfg.model.num_classes > 0 && dataset.manifest().label_count != cfg.model.num_classes) {
    throw std::runtime_error("model.num_classes = " + std::to_string(cfg.model.num_classes) +
                             ": data.dir " + cfg.data.dir + " has " +
                             std::to_string(dataset.manifest().label_count) +
                             " labels; set model.num_classes to that (or 0 for unconditional)");
  }
  data::DistributedSampler sampler(dataset.size(), micro_global_batch, seed);

  // Build the model identically everywhere, then make rank 0's weights everyone's.
  torch::manual_seed(derive_seed(seed, kInitPurpose, 0, 0));
  UNet model(unet_options(cfg));
  model->to(device_);
  broadcast_module(gradients_, *model);
  // Before the buckets, the optimizer and the EMA, which take each weight's layout.
  const at::MemoryFormat format = memory_format(cfg);
  set_memory_format(*model, format);
  if (format == at::MemoryFormat::ChannelsLast) {
    spdlog::info("train.channels_last: weights, gradients, optimizer moments and EMA in NHWC");
  }
  const NoiseSchedule schedule = noise_schedule(cfg);
  const Prediction prediction = parse_prediction(cfg.model.prediction);
  // train.cuda_graph: after kStepGraphWarmupSteps eager steps on the graph's stream the whole
  // step (one micro-step, reduce, optimizer, EMA) is captured once and replayed; each step's
  // inputs are first copied into the fixed buffers `graph_inputs`, and the learning rate, EMA
  // weight and dropout seed are set outside it. A run whose set-up rules it out says why and
  // trains eagerly; a capture that fails stops the run (see StepGraph::capture).
  std::unique_ptr<StepGraph> graph;
  if (cfg.train.cuda_graph) {
    const std::string why = step_graph_unavailable_reason(device_, world, accum);
    if (why.empty()) {
      graph = std::make_unique<StepGraph>(device_);
      spdlog::info("train.cuda_graph: the step is captured after {} eager steps",
                   kStepGraphWarmupSteps);
    } else {
      spdlog::warn("train.cuda_graph: not used: {}; training without a CUDA graph", why);
    }
  }
  // The reducer holds the gradient accumulators, whose stream must be the capture's.
  auto parameters = model->parameters();
  std::unique_ptr<launch::GradientReducer> reducer_owner;
  auto make_reducer = [&] {
    reducer_owner = std::make_unique<launch::GradientReducer>(
        gradients_, parameters, static_cast<int64_t>(cfg.dist.bucket_mb * 1e6));
  };
  if (graph) {
    graph->on_stream(make_reducer);
  } else {
    make_reducer();
  }
  launch::GradientReducer& reducer = *reducer_owner;
  const AdamWSettings adamw = adamw_settings(cfg);
  BucketAdamW optimizer(parameters, reducer.buckets(), adamw);
  Ema ema(*model, cfg.ema.decay);
  CheckpointStore store(options_.run_dir);

  // Resume from the newest good checkpoint of the run directory, or an explicit file.
  int64_t start_step = 0;
  std::optional<LoadedCheckpoint> checkpoint;
  if (options_.resume == "auto") {
    checkpoint = store.open_newest_good(device_, [](const std::string& problem) {
      spdlog::warn("skipping bad checkpoint: {}", problem);
    });
  } else if (options_.resume == "never") {
    if (!store.list().empty()) {
      throw std::runtime_error("--resume never: " + store.directory() +
                               " already holds checkpoints; use --resume auto or a new --run-dir");
    }
  } else {
    checkpoint = LoadedCheckpoint::open(options_.resume, device_);
  }
  if (checkpoint) {
    const auto& info = checkpoint->info();
    check_resume_compatible(cfg, parse_config(info.config_yaml, checkpoint->path()),
                            checkpoint->path(), global_batch, info.global_batch, world,
                            info.world_size);
    checkpoint->load_model(*model);
    set_memory_format(*model, format);  // load_model hands it back contiguous
    if (checkpoint->has_ema()) checkpoint->load_ema(ema);
    if (checkpoint->has_optimizer()) checkpoint->load_optimizer(optimizer);
    start_step = info.step;
    spdlog::info("resumed from {} at step {} (written by {} ranks)", checkpoint->path(), start_step,
                 info.world_size);
    checkpoint.reset();
  }

  if (rank == 0) {
    std::filesystem::create_directories(options_.run_dir + "/samples");
    std::filesystem::create_directories(store.directory());
    const int stale = store.remove_stale_temp_files();
    if (stale > 0) spdlog::info("removed {} temporary file(s) of an interrupted checkpoint", stale);
    data::write_file_atomic(options_.run_dir + "/config.yaml", to_yaml(cfg));
  }
  control_.barrier();

  // Serve this rank's metrics and publish every rank's /metrics target for Prometheus.
  RunMonitor monitor(cfg, options_.run_dir, control_,
                     {options_.local_rank, options_.hostname, device_, gradients_.backend()});

  spdlog::info(
      "{} parameters, {} images in {}, global batch {} ({} per rank x {} ranks x {} "
      "micro-steps), {} steps per epoch, device {}, {} threads",
      parameter_count(*model), dataset.size(), cfg.data.dir, global_batch, batch, world, accum,
      sampler.steps_per_epoch() / accum, device_.str(), at::get_num_threads());

  TrainResult result;
  result.first_step = start_step;
  result.final_step = start_step;
  auto last_checkpoint_time = Clock::now();
  int64_t last_checkpoint_step = start_step > 0 ? start_step : -1;

  // Each step's loss, gradient norm and skip flag, read back from the device a step late.
  StepReadback readback;

  // Collective: every rank calls this, in the same order. Rank 0 writes; all wait for it, so
  // no rank exits (or gets killed) before the checkpoint is safe.
  auto write_checkpoint = [&](int64_t step) {
    readback.drain();  // a run stopping for non-finite steps stops before writing
    // An all-reduce that failed after its step was queued (NCCL: the watchdog aborted it while
    // the host ran ahead) left the weights wrong: throw instead of writing them.
    gradients_.check_health();
    if (rank == 0) {
      const auto start = Clock::now();
      CheckpointInfo info;
      info.step = step;
      info.world_size = world;
      info.global_batch = global_batch;
      info.config_yaml = to_yaml(cfg);
      info.versions = version_string();
      result.checkpoint_path =
          store.commit(step, encode_checkpoint(info, *model, &ema, &optimizer));
      const double checkpoint_s = seconds_since(start);
      spdlog::info("checkpoint {} written in {:.2f} s", result.checkpoint_path, checkpoint_s);
      monitor.record_checkpoint(checkpoint_s);
      for (const auto& old : store.prune(cfg.checkpoint.keep, cfg.checkpoint.keep_every)) {
        spdlog::info("deleted old checkpoint {}", old);
      }
    }
    control_.barrier();
    last_checkpoint_step = step;
    last_checkpoint_time = Clock::now();
  };

  // Collective: every rank calls this, in the same order. The ranks draw the grid's images
  // together (each its share, noise fixed by sample.seed and the image index, so the grid is the
  // same for any world size) from a copy of the EMA weights; rank 0 writes the PNG.
  auto write_sample_grid = [&](int64_t step) -> std::string {
    const auto start = Clock::now();
    UNet sampler_model(unet_options(cfg));
    sampler_model->to(device_);
    set_memory_format(*sampler_model, format);
    ema.copy_to(*sampler_model);
    sampler_model->eval();
    torch::NoGradGuard no_grad;
    const at::Tensor images = sample_across_ranks(
        as_eps_predictor(
            [&](const at::Tensor& x, const at::Tensor& tt) {
              monitor.heartbeat();  // busy sampling, not stalled
              return sampler_model->forward(x.contiguous(format), tt);
            },
            schedule, prediction),
        schedule, cfg.sample.n, {shape.channels, shape.height, shape.width}, sampler_options(cfg),
        static_cast<uint64_t>(cfg.sample.seed),
        cfg.sample.batch_size > 0 ? cfg.sample.batch_size : default_sample_chunk(device_), device_,
        &control_);
    if (rank != 0) return "";
    char name[64];
    std::snprintf(name, sizeof(name), "/samples/step-%09lld.png", static_cast<long long>(step));
    const std::string path = options_.run_dir + name;
    write_image_grid(path, images);
    spdlog::info("samples {} ({} images, {} {} steps, EMA weights, {} ranks) in {:.1f} s", path,
                 cfg.sample.n, cfg.sample.sampler, cfg.sample.steps, world, seconds_since(start));
    return path;
  };

  model->train();
  // The prefetch thread reads each micro-batch and draws its noise, in pinned memory on CUDA.
  StepInputPlan input_plan;
  input_plan.seed = seed;
  input_plan.grad_accum_steps = accum;
  input_plan.micro_global_batch = micro_global_batch;
  input_plan.first_in_rank = rank * batch;
  input_plan.timesteps = schedule.timesteps();
  input_plan.num_classes = cfg.model.num_classes;
  input_plan.label_dropout = cfg.model.label_dropout;
  input_plan.pin_memory = device_.is_cuda();
  data::Prefetcher prefetcher(dataset, sampler, rank, world, start_step * accum,
                              static_cast<int>(cfg.data.prefetch_batches),
                              step_input_preparer(input_plan),
                              [device = device_] { launch::use_device_on_this_thread(device); });

  // The device work of one micro-step: forward process, prediction, loss and backward (whose
  // hooks start the gradient all-reduce on the step's last micro-step). Adds loss / accum to
  // step_loss and returns the per-sample losses.
  auto forward_backward = [&](const StepInputs& inputs, bool last_micro,
                              at::Tensor& step_loss) -> at::Tensor {
    at::Tensor x0 = inputs.images.to(torch::kFloat).div_(127.5).sub_(1.0);
    const at::Tensor& t = inputs.timesteps;
    const at::Tensor& eps = inputs.eps;
    at::Tensor x_t = schedule.q_sample(x0, t, eps).contiguous(format);
    // The network predicts eps or v (model.prediction); the loss compares like with like.
    at::Tensor target = prediction == Prediction::kV ? schedule.v_target(x0, t, eps) : eps;
    at::Tensor output;
    {
      AutocastScope autocast(precision, device_.type());  // bf16: forward only
      output = model->forward(x_t, t, inputs.labels);     // labels: class-conditional models only
    }
    output = output.to(torch::kFloat);  // fp32 loss and gradients
    at::Tensor loss = eps_mse_loss(output, target);
    reducer.prepare_for_backward(last_micro);
    (loss / static_cast<double>(accum)).backward();
    step_loss += loss.detach() / static_cast<double>(accum);
    return per_sample_mse(output.detach(), target);
  };

  // After the last micro-step: average gradients over ranks; clip, step the optimizer at the
  // learning rate set before and update the EMA with the weight set before. A non-finite
  // gradient norm makes the optimizer step change nothing (decided on the device, the same on
  // every rank, since every rank holds the same averaged gradient); the EMA still takes its
  // step, towards the unchanged weights. Returns the step's numbers on the device, for the
  // host to read a step later: [loss, loss sums and counts by timestep quartile, grad norm,
  // skipped].
  auto finish_step = [&](const at::Tensor& step_loss, const at::Tensor& per_sample_loss,
                         const at::Tensor& timesteps, StepRecord& record) -> at::Tensor {
    auto phase = Clock::now();
    reducer.reduce();
    record.allreduce_s = seconds_since(phase);
    phase = Clock::now();
    const at::Tensor outcome = optimizer.step();  // [grad norm, skipped]
    ema.apply_update(*model);
    record.optimizer_s = seconds_since(phase);
    StepRecord losses;
    losses.loss = step_loss;
    losses.per_sample_loss = per_sample_loss;
    losses.timesteps = timesteps;
    return torch::cat({monitor.step_values(losses), outcome});
  };

  auto seed_dropout = [&](int64_t step, int64_t first_position) {
    torch::manual_seed(derive_seed(seed, kDropoutPurpose, static_cast<uint64_t>(step),
                                   static_cast<uint64_t>(first_position)));
  };

  StepInputs graph_inputs;  // what a captured step reads
  at::Tensor graph_values;  // and what it writes: finish_step's numbers
  int64_t graph_warmup_steps = 0;
  auto graph_body = [&]() -> at::Tensor {
    StepRecord unused;  // host timings mean nothing inside a graph
    reducer.zero_grad();
    at::Tensor step_loss =
        torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
    const at::Tensor per_sample_loss = forward_backward(graph_inputs, true, step_loss);
    return finish_step(step_loss, per_sample_loss, graph_inputs.timesteps, unused);
  };

  // Interval statistics, reset at each progress line.
  double interval_loss = 0;  // sum of the good steps' losses
  int64_t interval_steps = 0, interval_good_steps = 0, bad_in_a_row = 0;
  double t_data = 0, t_forward_backward = 0, t_reduce = 0, t_optimizer = 0;
  auto interval_start = Clock::now();

  for (int64_t step = start_step; step < cfg.train.steps; ++step) {
    const auto step_start = Clock::now();
    StepRecord record;  // this step's metrics: phase times, learning rate, EMA decay
    const double lr = learning_rate_at(cfg, step);
    optimizer.set_learning_rate(lr);
    ema.begin_update();
    at::Tensor values;  // finish_step's numbers
    if (graph) {
      auto phase = Clock::now();
      copy_to_device(std::any_cast<const StepInputs&>(prefetcher.next().prepared), device_,
                     graph_inputs);
      record.data_wait_s = seconds_since(phase);
      phase = Clock::now();
      seed_dropout(step, rank * batch);
      if (graph->captured()) {
        graph->replay();
        values = graph_values;
      } else if (graph_warmup_steps < kStepGraphWarmupSteps) {
        values = graph->run_eagerly(graph_body);
        ++graph_warmup_steps;
      } else {
        try {
          graph_values = graph->capture(graph_body);
        } catch (const std::runtime_error& e) {
          throw std::runtime_error("train.cuda_graph: step " + std::to_string(step + 1) +
                                   " could not be captured (" + e.what() +
                                   "); resume with --set train.cuda_graph=false");
        }
        graph->replay();
        values = graph_values;
        spdlog::info("train.cuda_graph: step {} captured; replaying it from here on", step + 1);
      }
      record.forward_backward_s = seconds_since(phase);
    } else {
      reducer.zero_grad();
      at::Tensor step_loss =
          torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
      std::vector<at::Tensor> sample_losses, sample_timesteps;
      for (int64_t micro = 0; micro < accum; ++micro) {
        // Fetch this rank's slice of the micro-step's global batch, and its noise.
        auto phase = Clock::now();
        const StepInputs inputs =
            to_device(std::any_cast<const StepInputs&>(prefetcher.next().prepared), device_);
        record.data_wait_s += seconds_since(phase);
        // Dropout draws from (seed, step, position).
        phase = Clock::now();
        seed_dropout(step, micro * micro_global_batch + rank * batch);
        sample_losses.push_back(forward_backward(inputs, micro + 1 == accum, step_loss));
        sample_timesteps.push_back(inputs.timesteps);
        record.forward_backward_s += seconds_since(phase);
      }
      values =
          finish_step(step_loss, torch::cat(sample_losses), torch::cat(sample_timesteps), record);
    }
    ++interval_steps;
    result.final_step = step + 1;

    // The step's numbers reach the host a step later (the device is not waited for here): then
    // its metrics are recorded and a skipped step is counted and reported.
    record.step = step + 1;
    record.images = batch * accum;
    record.learning_rate = lr;
    record.ema_decay = ema.decay_for(ema.updates());
    record.step_s = seconds_since(step_start);
    readback.push(values, [&, record](const double* numbers) mutable {
      const double loss = numbers[0];
      record.grad_norm = numbers[RunMonitor::kStepValueCount];
      record.skipped_nonfinite = numbers[RunMonitor::kStepValueCount + 1] > 0;
      monitor.record_step(record, numbers);
      if (!record.skipped_nonfinite) {
        bad_in_a_row = 0;
        interval_loss += loss;
        ++interval_good_steps;
        return;
      }
      ++result.skipped_steps;
      ++bad_in_a_row;
      spdlog::warn(
          "step {}: non-finite gradient norm ({}), local loss {}; update skipped "
          "({} in a row)",
          record.step, record.grad_norm, loss, bad_in_a_row);
      if (bad_in_a_row >= cfg.train.max_bad_steps) {
        throw std::runtime_error(
            "step " + std::to_string(record.step) + ": " + std::to_string(bad_in_a_row) +
            " non-finite steps in a row (train.max_bad_steps) on rank " + std::to_string(rank) +
            "; stopping with the last good checkpoint untouched (lower train.lr?)");
      }
    });
    t_data += record.data_wait_s;
    t_forward_backward += record.forward_backward_s;
    t_reduce += record.allreduce_s;
    t_optimizer += record.optimizer_s;

    // Agree on stopping, logging and time-based checkpoints: any rank may have received a stop
    // signal; rank 0 decides by its clock.
    const bool last = step + 1 == cfg.train.steps;
    at::Tensor flags = torch::zeros({kFlagCount}, torch::kLong);
    auto* f = flags.data_ptr<int64_t>();
    if (stop_signal_received() != 0) f[kStop] = 1;
    if (rank == 0) {
      if (time_limit_s > 0 && seconds_since(run_start) >= time_limit_s) f[kStop] = 2;
      if (last || seconds_since(interval_start) >= cfg.train.log_interval_s) f[kLog] = 1;
      if (cfg.checkpoint.every_minutes > 0 &&
          seconds_since(last_checkpoint_time) >= cfg.checkpoint.every_minutes * 60) {
        f[kCheckpoint] = 1;
      }
    }
    control_.all_reduce_sum(flags);

    if (f[kLog] > 0 || f[kStop] > 0) {
      // Progress line with the mean loss over all ranks since the last line.
      readback.drain();  // every step of the interval counted
      at::Tensor sums =
          torch::tensor({interval_loss, static_cast<double>(interval_good_steps)}, torch::kDouble);
      control_.all_reduce_sum(sums);
      // NaN when every step of the interval was skipped as non-finite: there is no good loss.
      const double mean_loss = sums[1].item<double>() > 0
                                   ? sums[0].item<double>() / sums[1].item<double>()
                                   : std::numeric_limits<double>::quiet_NaN();
      const double elapsed = seconds_since(interval_start);
      const double step_s = elapsed / static_cast<double>(interval_steps);
      const double ms = 1000.0 / static_cast<double>(interval_steps);
      const double images_per_s = static_cast<double>(interval_steps * global_batch) / elapsed;
      if (rank == 0) {
        spdlog::info(
            "step {}/{} epoch {:.2f} loss {:.4f} | {:.1f} img/s | {:.0f} ms/step (data {:.0f}, "
            "fwd+bwd {:.0f}, allreduce {:.0f}, opt {:.0f}) | lr {:.2e} | skipped {} | ETA {}",
            step + 1, cfg.train.steps,
            static_cast<double>((step + 1) * global_batch) / static_cast<double>(dataset.size()),
            mean_loss, images_per_s, step_s * 1000, t_data * ms, t_forward_backward * ms,
            t_reduce * ms, t_optimizer * ms, learning_rate_at(cfg, step), result.skipped_steps,
            format_duration(step_s * static_cast<double>(cfg.train.steps - step - 1)));
      }
      monitor.record_interval(step + 1, mean_loss, images_per_s);
      result.last_loss = mean_loss;
      interval_loss = 0;
      interval_steps = interval_good_steps = 0;
      t_data = t_forward_backward = t_reduce = t_optimizer = 0;
      interval_start = Clock::now();
    }

    // Stop on a signal or the time limit: checkpoint this step and leave.
    if (f[kStop] > 0) {
      const int signal = stop_signal_received();
      result.stop_reason =
          signal != 0 ? signal_name(signal)
                      : (f[kStop] >= 2 ? "train.time_limit" : "a stop signal on another rank");
      write_checkpoint(step + 1);
      spdlog::info("stopping at step {} ({}): checkpoint written; run the same command to resume",
                   step + 1, result.stop_reason);
      return result;
    }
    if (!last && ((step + 1) % cfg.checkpoint.every_steps == 0 || f[kCheckpoint] > 0)) {
      write_checkpoint(step + 1);
    }
    if (!last && options_.write_samples && cfg.sample.every_steps > 0 &&
        (step + 1) % cfg.sample.every_steps == 0) {
      const auto grid_start = Clock::now();
      write_sample_grid(step + 1);
      interval_start += Clock::now() - grid_start;  // keep the grid out of the img/s figure
    }
  }

  // Final checkpoint and a sample grid from the EMA weights.
  if (last_checkpoint_step != result.final_step) {
    write_checkpoint(result.final_step);
  } else if (rank == 0 && store.latest()) {
    result.checkpoint_path = *store.latest();
  }
  if (options_.write_samples) result.samples_path = write_sample_grid(result.final_step);
  control_.barrier();
  spdlog::info("done: {} steps in {}", result.final_step - result.first_step,
               format_duration(seconds_since(run_start)));
  return result;
}

}  // namespace difftrain::trainer
