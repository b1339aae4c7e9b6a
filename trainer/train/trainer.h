// The training loop: one data-parallel worker's view of a run. Trainer holds the run's
// components (dataset, model, gradient reducer, optimizer, EMA, checkpoint store, monitor,
// prefetcher), builds them once, and run() reads as an outline of the steps.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "data/dataset.h"
#include "data/distributed_sampler.h"
#include "data/prefetcher.h"
#include "launch/gradient_reducer.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/config/config.h"
#include "trainer/diffusion/schedule.h"
#include "trainer/model/unet.h"
#include "trainer/optim/bucket_adamw.h"
#include "trainer/optim/ema.h"
#include "trainer/telemetry/run_monitor.h"
#include "trainer/train/progress.h"
#include "trainer/train/step_graph.h"
#include "trainer/train/step_inputs.h"
#include "trainer/train/step_readback.h"

namespace difftrain::launch {
class Communicator;
}

namespace difftrain::trainer {

// Where a run ended up.
struct TrainResult {
  int64_t first_step = 0;       // the step training started from (> 0 after a resume)
  int64_t final_step = 0;       // optimizer steps completed
  double last_loss = 0;         // mean loss over all ranks in the last log interval
  std::string checkpoint_path;  // the final checkpoint (rank 0)
  std::string samples_path;     // the final sample grid (rank 0; empty on other ranks)
  std::string stop_reason;      // non-empty when the run stopped early: "SIGTERM", "time limit"
  int64_t skipped_steps = 0;    // non-finite steps skipped
};

struct TrainerOptions {
  std::string run_dir;
  std::string resume = "auto";  // "auto": newest checkpoint in run_dir if any; "never"; or a path
  bool write_samples = true;    // the end-of-run grid
  int local_rank = 0;           // rank on this node: monitoring.port offset
  std::string hostname;         // this node's name: the Prometheus target host
};

// One rank of a run. `gradients` averages gradients (MPI or NCCL), `control` is a host (MPI)
// communicator for small agreements (when to log, mean loss); both span the same ranks, and
// their rank and world size define this worker's slice of every global batch. The
// communicators must outlive the Trainer. Not thread-safe.
class Trainer {
 public:
  Trainer(Config config, TrainerOptions options, launch::Communicator& gradients,
          launch::Communicator& control, const c10::Device& device);
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  // Collective: every rank calls this, in the same order. Once per Trainer.
  TrainResult run();

 private:
  using Clock = std::chrono::steady_clock;
  // What the ranks agree on after each step (summed over ranks).
  struct StepFlags {
    bool stop = false;        // a stop signal on some rank, or the time limit
    bool time_limit = false;  // the time limit (rank 0's clock)
    bool log = false;         // a progress line is due
    bool checkpoint = false;  // checkpoint.every_minutes has passed
  };

  // Set-up, in this order; each collective on every rank.
  void open_dataset();
  void verify_dataset();
  void build_model();
  void build_optimization();
  void resume();
  void prepare_run_dir();
  void start_prefetching();
  void log_objective() const;

  // One optimizer step: its inputs, forward and backward (captured in a CUDA graph or eager),
  // gradient averaging, optimizer and EMA. Returns the step's numbers on the device.
  at::Tensor train_step(int64_t step, StepRecord& record);
  at::Tensor eager_step(int64_t step, StepRecord& record);
  at::Tensor graphed_step(int64_t step, StepRecord& record);
  // One micro-step's forward and backward; adds its loss / accum to step_loss and returns the
  // per-sample losses.
  at::Tensor forward_backward(const StepInputs& inputs, bool last_micro, at::Tensor& step_loss);
  // Gradient averaging, optimizer, EMA: [loss numbers..., grad norm, skipped] on the device.
  at::Tensor finish_step(const at::Tensor& step_loss, const at::Tensor& per_sample_loss,
                         const at::Tensor& timesteps, StepRecord& record);
  void seed_dropout(int64_t step, int64_t first_position) const;
  // Hands the step's numbers to the monitor and the progress interval once they reach the
  // host, a step later; throws when train.max_bad_steps non-finite steps came in a row.
  void read_back(const at::Tensor& values, StepRecord record);

  StepFlags agree_on_flags(int64_t step);
  void report_progress(int64_t step);
  void stop_early(int64_t step, const StepFlags& flags);
  // Collective: every rank calls these, in the same order.
  bool write_checkpoint(int64_t step);
  std::string newest_checkpoint() const;
  std::string write_sample_grid(int64_t step);
  void finish();

  const Config config_;
  const TrainerOptions options_;
  launch::Communicator& gradients_;
  launch::Communicator& control_;
  const c10::Device device_;
  const int rank_, world_;
  const int64_t batch_, accum_;
  const int64_t micro_global_batch_;  // images per micro-step over all ranks
  const int64_t global_batch_;        // images per optimizer step
  const uint64_t seed_;
  const double time_limit_s_;
  const at::MemoryFormat format_;
  const NoiseSchedule schedule_;
  at::Tensor loss_weights_;  // float32 [T] on the device (train.loss_weighting); undefined: none
  Clock::time_point run_start_;

  // The run's components, built once by the set-up functions.
  std::optional<data::Dataset> dataset_;
  std::optional<data::DistributedSampler> sampler_;
  UNet model_{nullptr};
  std::unique_ptr<StepGraph> graph_;  // train.cuda_graph, where it can be used
  std::unique_ptr<launch::GradientReducer> reducer_;
  std::unique_ptr<BucketAdamW> optimizer_;
  std::unique_ptr<Ema> ema_;
  CheckpointStore store_;
  std::unique_ptr<RunMonitor> monitor_;
  std::unique_ptr<data::Prefetcher> prefetcher_;
  StepReadback readback_;

  // Where the loop is.
  TrainResult result_;
  ProgressInterval interval_;
  int64_t bad_in_a_row_ = 0;
  Clock::time_point last_checkpoint_time_;
  int64_t last_checkpoint_step_ = -1;
  // train.cuda_graph: the inputs a captured step reads, what it writes, eager warm-up steps.
  StepInputs graph_inputs_;
  at::Tensor graph_values_;
  int64_t graph_warmup_steps_ = 0;
};

// Learning rate at `step` (0-based): linear warm-up to train.lr over train.warmup_steps, then
// constant (train.lr_decay none) or half a cosine down to 0 at step train.steps (cosine).
double learning_rate_at(const Config& config, int64_t step);

}  // namespace difftrain::trainer
