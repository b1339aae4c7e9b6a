// The training loop: set-up, then per step inputs, forward/backward, flags, progress,
// checkpoints and samples, read top to bottom in Trainer::run().
#include "trainer/train/trainer.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <any>
#include <cmath>
#include <filesystem>
#include <limits>

#include "data/file_util.h"
#include "launch/communicator.h"
#include "launch/runtime.h"
#include "monitoring/clock.h"
#include "trainer/checkpoint/resume.h"
#include "trainer/common/rng.h"
#include "trainer/common/step_name.h"
#include "trainer/common/text.h"
#include "trainer/common/version.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/edm.h"
#include "trainer/diffusion/objective.h"
#include "trainer/diffusion/prediction.h"
#include "trainer/optim/precision.h"
#include "trainer/sampling/distributed_sampling.h"
#include "trainer/sampling/image_grid.h"
#include "trainer/train/stop_signal.h"

namespace difftrain::trainer {
namespace {

using monitoring::seconds_since;

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
enum Flag : int64_t { kStop = 0, kTimeLimit = 1, kLog = 2, kCheckpoint = 3, kFlagCount = 4 };

}  // namespace

double learning_rate_at(const Config& config, int64_t step) {
  const Config::Train& train = config.train;
  if (step < train.warmup_steps) {
    return train.lr * static_cast<double>(step + 1) / static_cast<double>(train.warmup_steps);
  }
  if (train.lr_decay == LrDecay::kNone || train.steps <= train.warmup_steps) return train.lr;
  const double progress = static_cast<double>(step - train.warmup_steps) /
                          static_cast<double>(train.steps - train.warmup_steps);
  return train.lr * 0.5 * (1.0 + std::cos(M_PI * std::min(progress, 1.0)));
}

Trainer::Trainer(Config config, TrainerOptions options, launch::Communicator& gradients,
                 launch::Communicator& control, const c10::Device& device)
    : config_(std::move(config)),
      options_(std::move(options)),
      gradients_(gradients),
      control_(control),
      device_(device),
      rank_(control.rank()),
      world_(control.world_size()),
      batch_(config_.train.batch_size),
      accum_(config_.train.grad_accum_steps),
      micro_global_batch_(batch_ * world_),
      global_batch_(micro_global_batch_ * accum_),
      seed_(static_cast<uint64_t>(config_.train.seed)),
      time_limit_s_(parse_time_limit_s(config_.train.time_limit)),
      format_(memory_format(config_)),
      schedule_(noise_schedule(config_)),
      store_(options_.run_dir) {
  if (config_.train.loss_weighting == LossWeighting::kMinSnr) {
    loss_weights_ =
        min_snr_weights(schedule_, config_.model.prediction, config_.train.min_snr_gamma)
            .to(device_, at::kFloat);
  }
}

Trainer::~Trainer() = default;

TrainResult Trainer::run() {
  run_start_ = Clock::now();
  configure_device_math(device_.type());
  open_dataset();
  build_model();
  build_optimization();
  resume();
  prepare_run_dir();
  monitor_ = std::make_unique<RunMonitor>(
      config_, options_.run_dir, control_,
      RankPlace{options_.local_rank, options_.hostname, device_, gradients_.backend()});
  spdlog::info(
      "{} parameters, {} images in {}, global batch {} ({} per rank x {} ranks x {} "
      "micro-steps), {} steps per epoch, device {}, {} threads",
      parameter_count(*model_), dataset_->size(), config_.data.dir, global_batch_, batch_, world_,
      accum_, sampler_->steps_per_epoch() / accum_, device_.str(), at::get_num_threads());
  if (rank_ == 0) log_objective();
  start_prefetching();

  for (int64_t step = result_.first_step; step < config_.train.steps; ++step) {
    const auto step_start = Clock::now();
    StepRecord record;
    record.sample.learning_rate = learning_rate_at(config_, step);
    optimizer_->set_learning_rate(record.sample.learning_rate);
    ema_->begin_update();
    const at::Tensor values = train_step(step, record);
    result_.final_step = step + 1;
    record.sample.step = step + 1;
    record.sample.images = batch_ * accum_;
    record.sample.ema_decay = ema_->decay_for(ema_->updates());
    record.sample.step_s = seconds_since(step_start);
    interval_.add_step(record.sample);
    read_back(values, std::move(record));

    const StepFlags flags = agree_on_flags(step);
    if (flags.log || flags.stop) report_progress(step);
    if (flags.stop) {
      stop_early(step, flags);
      return result_;
    }
    const bool last = step + 1 == config_.train.steps;
    if (!last && ((step + 1) % config_.checkpoint.every_steps == 0 || flags.checkpoint)) {
      write_checkpoint(step + 1);
    }
    if (!last && options_.write_samples && config_.sample.every_steps > 0 &&
        (step + 1) % config_.sample.every_steps == 0) {
      const auto grid_start = Clock::now();
      write_sample_grid(step + 1);
      interval_.start += Clock::now() - grid_start;  // keep the grid out of the img/s figure
    }
  }
  finish();
  return result_;
}

// The training recipe, in one line.
void Trainer::log_objective() const {
  if (config_.diffusion.formulation == Formulation::kEdm) {
    spdlog::info(
        "objective: EDM (sigma_data {}), ln sigma ~ N({}, {}), loss weight lambda(sigma), hflip {}",
        format_double(config_.diffusion.sigma_data), format_double(config_.train.lognormal_mean),
        format_double(config_.train.lognormal_std), config_.data.hflip ? "on" : "off");
    return;
  }
  spdlog::info("objective: {} prediction, loss weighting {}{}, timesteps {}{}, hflip {}",
               setting_name(config_.model.prediction), setting_name(config_.train.loss_weighting),
               config_.train.loss_weighting == LossWeighting::kMinSnr
                   ? " (gamma " + format_double(config_.train.min_snr_gamma) + ")"
                   : "",
               setting_name(config_.train.timestep_sampling),
               config_.train.timestep_sampling == TimestepSampling::kLogNormal
                   ? " (ln sigma ~ N(" + format_double(config_.train.lognormal_mean) + ", " +
                         format_double(config_.train.lognormal_std) + "))"
                   : "",
               config_.data.hflip ? "on" : "off");
  if (config_.train.noise_draws > 1) {
    spdlog::info("noise draws: {} per image (timestep and noise), {} samples per step",
                 config_.train.noise_draws, global_batch_ * config_.train.noise_draws);
  }
}

// Opens the dataset and checks it against the model's image shape and labels, on every rank,
// so that a bad input is reported before any collective.
void Trainer::open_dataset() {
  const Config& cfg = config_;
  dataset_.emplace(cfg.data.dir);
  const data::SampleShape shape = dataset_->manifest().shape;
  if (shape.channels != cfg.model.in_channels || shape.height != cfg.model.image_size ||
      shape.width != cfg.model.image_size) {
    throw std::runtime_error(
        "data.dir " + cfg.data.dir + ": images are " + shape.str() + " but the model wants [" +
        std::to_string(cfg.model.in_channels) + "," + std::to_string(cfg.model.image_size) + "," +
        std::to_string(cfg.model.image_size) +
        "] (model.in_channels, model.image_size); re-run prepare with --pad-to or set the keys");
  }
  if (cfg.model.num_classes > 0 && dataset_->manifest().label_count != cfg.model.num_classes) {
    throw std::runtime_error("model.num_classes = " + std::to_string(cfg.model.num_classes) +
                             ": data.dir " + cfg.data.dir + " has " +
                             std::to_string(dataset_->manifest().label_count) +
                             " labels; set model.num_classes to that (or 0 for unconditional)");
  }
  verify_dataset();
  sampler_.emplace(dataset_->size(), micro_global_batch_, seed_);
}

// data.verify: each rank re-hashes its share of the shards (shard i on rank i mod world); a
// mismatch stops the job on the rank that found it.
void Trainer::verify_dataset() {
  const size_t shards = dataset_->manifest().shards.size();
  if (!config_.data.verify) {
    if (rank_ == 0) {
      spdlog::warn("data.verify is off: the {} shards of {} are not checked against index.json",
                   shards, config_.data.dir);
    }
    return;
  }
  const auto start = Clock::now();
  const std::vector<std::string> problems = dataset_->verify(rank_, world_);
  if (!problems.empty()) {
    throw std::runtime_error("data.verify: " + problems.front() +
                             " (re-run prepare, or set data.verify=false to train anyway)");
  }
  if (rank_ == 0) {
    spdlog::info(
        "data.verify: the images of {} shards match index.json ({} ranks; {:.2f} s on "
        "rank 0)",
        shards, world_, seconds_since(start));
  }
}

// Builds the model identically everywhere, then makes rank 0's weights everyone's; the memory
// format is set before the buckets, the optimizer and the EMA, which take each weight's layout.
void Trainer::build_model() {
  torch::manual_seed(derive_seed(seed_, kInitPurpose, 0, 0));
  model_ = UNet(unet_options(config_));
  model_->to(device_);
  broadcast_module(gradients_, *model_);
  set_memory_format(*model_, format_);
  if (format_ == at::MemoryFormat::ChannelsLast) {
    spdlog::info("train.channels_last: weights, gradients, optimizer moments and EMA in NHWC");
  }
}

// train.cuda_graph: after kStepGraphWarmupSteps eager steps on the graph's stream the whole step
// (one micro-step, reduce, optimizer, EMA) is captured once and replayed; each step's inputs are
// first copied into the fixed buffers graph_inputs_, and the learning rate, EMA weight and
// dropout seed are set outside it. A run whose set-up rules it out says why and trains eagerly;
// a capture that fails stops the run (see StepGraph::capture). The reducer holds the gradient
// accumulators, whose stream must be the capture's, so it is built on the graph's stream.
void Trainer::build_optimization() {
  if (config_.train.cuda_graph) {
    const std::string why = step_graph_unavailable_reason(device_, world_, accum_);
    if (why.empty()) {
      graph_ = std::make_unique<StepGraph>(device_);
      spdlog::info("train.cuda_graph: the step is captured after {} eager steps",
                   kStepGraphWarmupSteps);
    } else {
      spdlog::warn("train.cuda_graph: not used: {}; training without a CUDA graph", why);
    }
  }
  const auto parameters = model_->parameters();
  auto make_reducer = [&] {
    reducer_ = std::make_unique<launch::GradientReducer>(
        gradients_, parameters, static_cast<int64_t>(config_.dist.bucket_mb * 1e6));
  };
  if (graph_) {
    graph_->on_stream(make_reducer);
  } else {
    make_reducer();
  }
  optimizer_ =
      std::make_unique<BucketAdamW>(parameters, reducer_->buckets(), adamw_settings(config_));
  ema_ = std::make_unique<Ema>(*model_, config_.ema.decay, config_.ema.std);
}

// Resumes from the newest good checkpoint of the run directory, or an explicit file.
void Trainer::resume() {
  std::optional<LoadedCheckpoint> checkpoint;
  if (options_.resume == "auto") {
    checkpoint = store_.open_newest_good(device_, [](const std::string& problem) {
      spdlog::warn("skipping bad checkpoint: {}", problem);
    });
  } else if (options_.resume == "never") {
    if (!store_.list().empty()) {
      throw std::runtime_error("--resume never: " + store_.directory() +
                               " already holds checkpoints; use --resume auto or a new --run-dir");
    }
  } else {
    checkpoint = LoadedCheckpoint::open(options_.resume, device_);
  }
  if (!checkpoint) return;
  const auto& info = checkpoint->info();
  check_resume_compatible(config_, parse_config(info.config_yaml, checkpoint->path()),
                          checkpoint->path(), global_batch_, info.global_batch, world_,
                          info.world_size);
  checkpoint->load_model(*model_);
  set_memory_format(*model_, format_);  // load_model hands it back contiguous
  if (checkpoint->has_ema()) checkpoint->load_ema(*ema_);
  if (checkpoint->has_optimizer()) checkpoint->load_optimizer(*optimizer_);
  result_.first_step = result_.final_step = info.step;
  last_checkpoint_step_ = info.step;
  spdlog::info("resumed from {} at step {} (written by {} ranks)", checkpoint->path(), info.step,
               info.world_size);
}

// Rank 0 makes the run's folders and writes the resolved config; every rank waits for it.
void Trainer::prepare_run_dir() {
  if (rank_ == 0) {
    std::filesystem::create_directories(options_.run_dir + "/samples");
    std::filesystem::create_directories(store_.directory());
    const int stale = store_.remove_stale_temp_files();
    if (stale > 0) spdlog::info("removed {} temporary file(s) of an interrupted checkpoint", stale);
    data::write_file_atomic(options_.run_dir + "/config.yaml", to_yaml(config_));
  }
  control_.barrier();
  last_checkpoint_time_ = Clock::now();
}

// The prefetch thread reads each micro-batch and draws its noise, in pinned memory on CUDA.
void Trainer::start_prefetching() {
  model_->train();
  StepInputPlan plan;
  plan.seed = seed_;
  plan.grad_accum_steps = accum_;
  plan.micro_global_batch = micro_global_batch_;
  plan.first_in_rank = rank_ * batch_;
  plan.timesteps = config_.train.timestep_sampling == TimestepSampling::kLogNormal
                       ? TimestepDistribution::log_normal(schedule_, config_.train.lognormal_mean,
                                                          config_.train.lognormal_std)
                       : TimestepDistribution(schedule_.timesteps());
  plan.noise_draws = config_.train.noise_draws;
  plan.hflip = config_.data.hflip;
  plan.sigmas = config_.diffusion.formulation == Formulation::kEdm;
  plan.num_classes = config_.model.num_classes;
  plan.label_dropout = config_.model.label_dropout;
  plan.pin_memory = device_.is_cuda();
  prefetcher_ = std::make_unique<data::Prefetcher>(
      *dataset_, *sampler_, rank_, world_, result_.first_step * accum_,
      static_cast<int>(config_.data.prefetch_batches), step_input_preparer(plan),
      [device = device_] { launch::use_device_on_this_thread(device); });
  interval_.reset();
}

at::Tensor Trainer::train_step(int64_t step, StepRecord& record) {
  return graph_ ? graphed_step(step, record) : eager_step(step, record);
}

at::Tensor Trainer::eager_step(int64_t step, StepRecord& record) {
  reducer_->zero_grad();
  at::Tensor step_loss =
      torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
  std::vector<at::Tensor> sample_losses, sample_timesteps;
  for (int64_t micro = 0; micro < accum_; ++micro) {
    // Fetch this rank's slice of the micro-step's global batch, and its noise.
    auto phase = Clock::now();
    const StepInputs inputs =
        to_device(std::any_cast<const StepInputs&>(prefetcher_->next().prepared), device_);
    record.sample.data_wait_s += seconds_since(phase);
    // Dropout draws from (seed, step, position).
    phase = Clock::now();
    seed_dropout(step, micro * micro_global_batch_ + rank_ * batch_);
    sample_losses.push_back(forward_backward(inputs, micro + 1 == accum_, step_loss));
    sample_timesteps.push_back(inputs.timesteps);
    record.sample.forward_backward_s += seconds_since(phase);
  }
  return finish_step(step_loss, torch::cat(sample_losses), torch::cat(sample_timesteps), record);
}

// Eager warm-up steps on the graph's stream, then one capture, then replays. Host timings mean
// nothing inside a graph: the phases collapse into forward_backward_s.
at::Tensor Trainer::graphed_step(int64_t step, StepRecord& record) {
  auto phase = Clock::now();
  copy_to_device(std::any_cast<const StepInputs&>(prefetcher_->next().prepared), device_,
                 graph_inputs_);
  record.sample.data_wait_s = seconds_since(phase);
  phase = Clock::now();
  seed_dropout(step, rank_ * batch_);
  auto body = [this]() -> at::Tensor {
    StepRecord unused;
    reducer_->zero_grad();
    at::Tensor step_loss =
        torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat).device(device_));
    const at::Tensor per_sample_loss = forward_backward(graph_inputs_, true, step_loss);
    return finish_step(step_loss, per_sample_loss, graph_inputs_.timesteps, unused);
  };
  at::Tensor values;
  if (graph_->captured()) {
    graph_->replay();
    values = graph_values_;
  } else if (graph_warmup_steps_ < kStepGraphWarmupSteps) {
    values = graph_->run_eagerly(body);
    ++graph_warmup_steps_;
  } else {
    try {
      graph_values_ = graph_->capture(body);
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("train.cuda_graph: step " + std::to_string(step + 1) +
                               " could not be captured (" + e.what() +
                               "); resume with --set train.cuda_graph=false");
    }
    graph_->replay();
    values = graph_values_;
    spdlog::info("train.cuda_graph: step {} captured; replaying it from here on", step + 1);
  }
  record.sample.forward_backward_s = seconds_since(phase);
  return values;
}

// The device work of one micro-step: forward process, prediction, loss and backward (whose
// hooks start the gradient all-reduce on the step's last micro-step).
at::Tensor Trainer::forward_backward(const StepInputs& inputs, bool last_micro,
                                     at::Tensor& step_loss) {
  at::Tensor x0 = inputs.images.to(torch::kFloat).div_(127.5).sub_(1.0);
  const at::Tensor& t = inputs.timesteps;
  const at::Tensor& eps = inputs.eps;
  at::Tensor input, conditioning, target;
  if (config_.diffusion.formulation == Formulation::kEdm) {
    // EDM: F(c_in (x0 + sigma eps), c_noise) against (x0 - c_skip x) / c_out at the continuous
    // sigma drawn (t is only its nearest timestep, for the loss-by-timestep metrics).
    EdmTrainingPair pair = edm_training_pair(x0, eps, inputs.sigmas, config_.diffusion.sigma_data);
    input = pair.input.contiguous(format_);
    conditioning = pair.c_noise;
    target = pair.target;
  } else {
    input = schedule_.q_sample(x0, t, eps).contiguous(format_);
    conditioning = t;
    // The network predicts eps or v (model.prediction); the loss compares like with like.
    target = config_.model.prediction == Prediction::kV ? schedule_.v_target(x0, t, eps) : eps;
  }
  at::Tensor output;
  {
    AutocastScope autocast(config_.train.precision, device_.type());  // bf16: forward only
    // labels: class-conditional models only
    output = model_->forward(input, conditioning, inputs.labels);
  }
  output = output.to(torch::kFloat);  // fp32 loss and gradients
  // train.loss_weighting: per-sample weights by timestep, or plain L_simple.
  at::Tensor loss = loss_weights_.defined()
                        ? weighted_mse_loss(output, target, loss_weights_.index_select(0, t))
                        : eps_mse_loss(output, target);
  reducer_->prepare_for_backward(last_micro);
  (loss / static_cast<double>(accum_)).backward();
  step_loss += loss.detach() / static_cast<double>(accum_);
  return per_sample_mse(output.detach(), target);
}

// Averages gradients over ranks; clips, steps the optimizer at the learning rate set before
// and updates the EMA with the weight set before. A non-finite gradient norm makes the
// optimizer step change nothing (decided on the device, the same on every rank, since every
// rank holds the same averaged gradient); the EMA still takes its step, towards the unchanged
// weights. Returns, on the device: [loss, loss sums and counts by timestep quartile, grad
// norm, skipped].
at::Tensor Trainer::finish_step(const at::Tensor& step_loss, const at::Tensor& per_sample_loss,
                                const at::Tensor& timesteps, StepRecord& record) {
  auto phase = Clock::now();
  reducer_->reduce();
  record.sample.allreduce_s = seconds_since(phase);
  phase = Clock::now();
  const at::Tensor outcome = optimizer_->step();  // [grad norm, skipped]
  ema_->apply_update(*model_);
  record.sample.optimizer_s = seconds_since(phase);
  StepRecord losses;
  losses.loss = step_loss;
  losses.per_sample_loss = per_sample_loss;
  losses.timesteps = timesteps;
  return torch::cat({monitor_->step_values(losses), outcome});
}

void Trainer::seed_dropout(int64_t step, int64_t first_position) const {
  torch::manual_seed(derive_seed(seed_, kDropoutPurpose, static_cast<uint64_t>(step),
                                 static_cast<uint64_t>(first_position)));
}

void Trainer::read_back(const at::Tensor& values, StepRecord record) {
  readback_.push(values, [this, record](const double* numbers) mutable {
    const double loss = numbers[0];
    record.sample.grad_norm = numbers[RunMonitor::kStepValueCount];
    record.sample.skipped_nonfinite = numbers[RunMonitor::kStepValueCount + 1] > 0;
    monitor_->record_step(record, numbers);
    if (!record.sample.skipped_nonfinite) {
      bad_in_a_row_ = 0;
      interval_.add_good_loss(loss);
      return;
    }
    ++result_.skipped_steps;
    ++bad_in_a_row_;
    spdlog::warn(
        "step {}: non-finite gradient norm ({}), local loss {}; update skipped ({} in a row)",
        record.sample.step, record.sample.grad_norm, loss, bad_in_a_row_);
    if (bad_in_a_row_ >= config_.train.max_bad_steps) {
      throw std::runtime_error(
          "step " + std::to_string(record.sample.step) + ": " + std::to_string(bad_in_a_row_) +
          " non-finite steps in a row (train.max_bad_steps) on rank " + std::to_string(rank_) +
          "; stopping without a checkpoint of them: the newest is " + newest_checkpoint() +
          " (lower train.lr?)");
    }
  });
}

// Any rank may have received a stop signal; rank 0 decides logging, the time limit and
// time-based checkpoints by its clock.
Trainer::StepFlags Trainer::agree_on_flags(int64_t step) {
  const bool last = step + 1 == config_.train.steps;
  at::Tensor flags = torch::zeros({kFlagCount}, torch::kLong);
  auto* f = flags.data_ptr<int64_t>();
  if (stop_signal_received() != 0) f[kStop] = 1;
  if (rank_ == 0) {
    if (time_limit_s_ > 0 && seconds_since(run_start_) >= time_limit_s_) {
      f[kStop] = 1;
      f[kTimeLimit] = 1;
    }
    if (last || seconds_since(interval_.start) >= config_.train.log_interval_s) f[kLog] = 1;
    if (config_.checkpoint.every_minutes > 0 &&
        seconds_since(last_checkpoint_time_) >= config_.checkpoint.every_minutes * 60) {
      f[kCheckpoint] = 1;
    }
  }
  control_.all_reduce_sum(flags);
  return StepFlags{f[kStop] > 0, f[kTimeLimit] > 0, f[kLog] > 0, f[kCheckpoint] > 0};
}

// Collective. The progress line, with the mean loss over all ranks since the last line.
void Trainer::report_progress(int64_t step) {
  readback_.drain();  // every step of the interval counted
  at::Tensor sums = torch::tensor({interval_.loss_sum, static_cast<double>(interval_.good_steps)},
                                  torch::kDouble);
  control_.all_reduce_sum(sums);
  // NaN when every step of the interval was skipped as non-finite: there is no good loss.
  const double mean_loss = sums[1].item<double>() > 0
                               ? sums[0].item<double>() / sums[1].item<double>()
                               : std::numeric_limits<double>::quiet_NaN();
  const double elapsed = seconds_since(interval_.start);
  const double steps = static_cast<double>(interval_.steps);
  const double step_s = elapsed / steps;
  const double ms = 1000.0 / steps;
  const double images_per_s = steps * static_cast<double>(global_batch_) / elapsed;
  if (rank_ == 0) {
    spdlog::info(
        "step {}/{} epoch {:.2f} loss {:.4f} | {:.1f} img/s | {:.0f} ms/step (data {:.0f}, "
        "fwd+bwd {:.0f}, allreduce {:.0f}, opt {:.0f}) | lr {:.2e} | skipped {} | ETA {}",
        step + 1, config_.train.steps,
        static_cast<double>((step + 1) * global_batch_) / static_cast<double>(dataset_->size()),
        mean_loss, images_per_s, step_s * 1000, interval_.data_s * ms,
        interval_.forward_backward_s * ms, interval_.reduce_s * ms, interval_.optimizer_s * ms,
        learning_rate_at(config_, step), result_.skipped_steps,
        format_duration(step_s * static_cast<double>(config_.train.steps - step - 1)));
  }
  monitor_->record_interval(step + 1, mean_loss, images_per_s);
  result_.last_loss = mean_loss;
  interval_.reset();
}

// Collective. A stop signal or the time limit: checkpoint this step and leave.
void Trainer::stop_early(int64_t step, const StepFlags& flags) {
  const int signal = stop_signal_received();
  result_.stop_reason = signal != 0        ? signal_name(signal)
                        : flags.time_limit ? "train.time_limit"
                                           : "a stop signal on another rank";
  if (write_checkpoint(step + 1)) {
    spdlog::info("stopping at step {} ({}): checkpoint written; run the same command to resume",
                 step + 1, result_.stop_reason);
  } else {
    spdlog::warn("stopping at step {} ({}); run the same command to resume from {}", step + 1,
                 result_.stop_reason, newest_checkpoint());
  }
}

// Rank 0 writes; all wait for it, so no rank exits (or gets killed) before the checkpoint is
// safe. Only finite state that the last step did not reject is written (so rotation never
// deletes a good checkpoint for a bad one): every rank holds the same state and takes the same
// decision. Returns whether the checkpoint was written.
bool Trainer::write_checkpoint(int64_t step) {
  readback_.drain();  // a run stopping for non-finite steps stops before writing
  // An all-reduce that failed after its step was queued (NCCL: the watchdog aborted it while
  // the host ran ahead) left the weights wrong: throw instead of writing them.
  gradients_.check_health();
  std::string why_not;
  if (bad_in_a_row_ > 0) {
    why_not = "the last " + std::to_string(bad_in_a_row_) + " steps were not finite";
  } else if (const std::string bad = non_finite_state(*model_, ema_.get(), optimizer_.get());
             !bad.empty()) {
    why_not = "its " + bad + " hold NaN or infinite values";
  }
  if (!why_not.empty()) {
    if (rank_ == 0) {
      spdlog::warn("step {}: checkpoint not written ({}); the newest stays {}", step, why_not,
                   newest_checkpoint());
    }
    return false;
  }
  if (rank_ == 0) {
    const auto start = Clock::now();
    CheckpointInfo info;
    info.step = step;
    info.world_size = world_;
    info.global_batch = global_batch_;
    info.config_yaml = to_yaml(config_);
    info.versions = version_string();
    result_.checkpoint_path =
        store_.commit(step, encode_checkpoint(info, *model_, ema_.get(), optimizer_.get()));
    const double checkpoint_s = seconds_since(start);
    spdlog::info("checkpoint {} written in {:.2f} s", result_.checkpoint_path, checkpoint_s);
    monitor_->record_checkpoint(checkpoint_s);
    for (const auto& old : store_.prune(config_.checkpoint.keep, config_.checkpoint.keep_every)) {
      spdlog::info("deleted old checkpoint {}", old);
    }
  }
  control_.barrier();
  last_checkpoint_step_ = step;
  last_checkpoint_time_ = Clock::now();
  return true;
}

std::string Trainer::newest_checkpoint() const {
  const std::optional<std::string> latest = store_.latest();
  return latest ? *latest : "none (no checkpoint was written)";
}

// The ranks draw the grid's images together (each its share, noise fixed by sample.seed and
// the image index, so the grid is the same for any world size) from a copy of the EMA weights;
// rank 0 writes the PNG.
std::string Trainer::write_sample_grid(int64_t step) {
  const auto start = Clock::now();
  UNet sampler_model(unet_options(config_));
  sampler_model->to(device_);
  set_memory_format(*sampler_model, format_);
  ema_->copy_to(*sampler_model);
  sampler_model->eval();
  torch::NoGradGuard no_grad;
  const data::SampleShape shape = dataset_->manifest().shape;
  const at::Tensor images = sample_across_ranks(
      network_predictor(
          [&](const at::Tensor& x, const at::Tensor& t) {
            monitor_->heartbeat();  // busy sampling, not stalled
            // A stop signal (Slurm waits only KillWait, 30 s by default, before SIGKILL) ends the
            // drawing at once; the checkpoint of this step is already written.
            if (stop_signal_received() != 0) throw DrawingStopped{};
            return sampler_model->forward(x.contiguous(format_), t);
          },
          config_),
      schedule_, config_.sample.n, {shape.channels, shape.height, shape.width},
      sampler_options(config_), static_cast<uint64_t>(config_.sample.seed),
      config_.sample.batch_size > 0 ? config_.sample.batch_size : default_sample_chunk(device_),
      device_, &control_);
  // Collective: every rank calls this, in the same order.
  at::Tensor stopped = torch::tensor({stop_signal_received() != 0 ? 1L : 0L}, torch::kLong);
  control_.all_reduce_sum(stopped);
  if (stopped.item<int64_t>() > 0) {
    if (result_.stop_reason.empty()) {
      const int signal = stop_signal_received();
      result_.stop_reason = signal != 0 ? signal_name(signal) : "a stop signal on another rank";
    }
    if (rank_ == 0) {
      spdlog::warn("sample grid of step {} not drawn: stopping ({})", step, result_.stop_reason);
    }
    return "";
  }
  if (rank_ != 0) return "";
  const std::string path = options_.run_dir + "/samples/" + step_file_name(step, ".png");
  write_image_grid(path, images);
  spdlog::info("samples {} ({} images, {} {} steps, EMA weights, {} ranks) in {:.1f} s", path,
               config_.sample.n, setting_name(config_.sample.sampler), config_.sample.steps, world_,
               seconds_since(start));
  return path;
}

// Collective. The final checkpoint (unless the last step was just written) and a sample grid
// from the EMA weights.
void Trainer::finish() {
  if (last_checkpoint_step_ != result_.final_step) {
    write_checkpoint(result_.final_step);
  } else if (rank_ == 0 && store_.latest()) {
    result_.checkpoint_path = *store_.latest();
  }
  if (bad_in_a_row_ > 0) {
    throw std::runtime_error("the run ended with " + std::to_string(bad_in_a_row_) +
                             " non-finite steps in a row, which changed nothing; the newest "
                             "checkpoint is " +
                             newest_checkpoint() + " (lower train.lr?)");
  }
  if (options_.write_samples) result_.samples_path = write_sample_grid(result_.final_step);
  control_.barrier();
  spdlog::info("done: {} steps in {}", result_.final_step - result_.first_step,
               format_duration(seconds_since(run_start_)));
}

}  // namespace difftrain::trainer
