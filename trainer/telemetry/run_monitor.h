// RunMonitor: the trainer's one handle on monitoring. Each rank serves its Prometheus metrics,
// rank 0 publishes every rank's target in a file_sd JSON, and the run folder gets
// metrics.jsonl and loss-curve.png for looking at a run without Prometheus.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "monitoring/training_metrics.h"

namespace difftrain::launch {
class Communicator;
}
namespace difftrain::monitoring {
class Exporter;
class MetricsLog;
}  // namespace difftrain::monitoring

namespace difftrain::trainer {

struct Config;

// Where this rank runs; labels and the target Prometheus dials.
struct RankPlace {
  int local_rank = 0;    // rank among this node's processes (monitoring.port offset)
  std::string hostname;  // the target host when monitoring.bind is 0.0.0.0 or [::]
                         // (empty: gethostname())
  c10::Device device{c10::kCPU};
  std::string gradient_backend;  // "mpi" or "nccl": the backend label of difftrain_build_info
};

// What one rank measured in one optimizer step: the host numbers of the metrics, and the device
// tensors its loss numbers come from. The tensors may live on the training device and may
// require grad (they are detached); all three are read with one device-to-host copy, which
// fills in sample.loss and the quartiles.
struct StepRecord {
  monitoring::StepSample sample;  // sample.step: steps completed, this one included
  at::Tensor loss;                // scalar: this rank's loss (undefined: mean of per_sample_loss)
  at::Tensor per_sample_loss;     // [B]: each sample's loss (per_sample_mse)
  at::Tensor timesteps;           // [B] integer: each sample's diffusion time t in [0, T)
};

// Mean loss of the samples whose t fell in each quarter of [0, T): q1 = t < T/4 (least noise).
struct TimestepQuartiles {
  std::array<double, 4> mean_loss{};  // 0 where count is 0
  std::array<int64_t, 4> count{};
};

// per_sample_loss [B] and timesteps [B] on one device; num_timesteps = T > 0. A t outside
// [0, T) is counted in the nearest quartile. Throws std::runtime_error naming the shapes if
// they are not two 1-D tensors of one length, or naming T if T <= 0.
TimestepQuartiles timestep_quartiles(const at::Tensor& per_sample_loss, const at::Tensor& timesteps,
                                     int64_t num_timesteps);

// Collective: every rank calls this, in the same order.
// Every rank's `mine`, indexed by rank: each rank fills its row of a zeroed [world, row_bytes]
// uint8 tensor and all_reduce_sum adds the rows up (a gather over a communicator that has only
// sum, broadcast and barrier). Throws std::runtime_error naming the text if it is longer than
// row_bytes or contains a NUL byte.
std::vector<std::string> all_gather_strings(launch::Communicator& comm, const std::string& mine,
                                            int64_t row_bytes = 256);

// The `run` label: monitoring.run_name, else the run directory's last component.
std::string run_label(const Config& config, const std::string& run_dir);
// monitoring.targets_file, else "<run dir>/prometheus-targets.json".
std::string targets_path(const Config& config, const std::string& run_dir);

// Owns this rank's TrainingMetrics and Exporter and, on rank 0, the run folder's files:
//   metrics.jsonl   one object per progress line: time_s, step, loss (mean over ranks),
//                   images_per_s, learning_rate, grad_norm, ema_decay, nonfinite_steps,
//                   step_s, data_wait_s, forward_backward_s, allreduce_s, optimizer_s
//                   (rank 0's means over the interval), loss_by_timestep [q1..q4]
//   loss-curve.png  (step, mean loss) of every line of metrics.jsonl, re-drawn at checkpoints
//   the targets file (file_sd): every rank's "host:port", labels {run, slurm_job_id if set}.
// A normal end of the run (destruction while no exception is in flight) deletes the targets
// file, so Prometheus drops the finished run and TrainingStalled stays quiet; destruction
// during stack unwinding, a crash or a kill leave it, so the dead run's targets go down and
// TrainingStalled fires for them. With monitoring.port = -1 there is no exporter and no
// targets file; the metrics, metrics.jsonl and loss-curve.png remain.
// Not thread-safe: the training thread makes every call; the exporter's threads only read.
class RunMonitor {
 public:
  // Collective: every rank calls this, in the same order.
  // Binds the exporter (monitoring.port + local rank when > 0, any free port when 0), gathers
  // every rank's target, rank 0 writes the targets file (creating its folder) and reads an
  // existing metrics.jsonl so that a resumed run's loss curve keeps its history. The run
  // directory must exist. Throws std::runtime_error naming the port, path or value that failed.
  RunMonitor(const Config& config, const std::string& run_dir, launch::Communicator& control,
             const RankPlace& place);
  ~RunMonitor();
  RunMonitor(const RunMonitor&) = delete;
  RunMonitor& operator=(const RunMonitor&) = delete;

  // Every rank, every optimizer step. One small device-to-host copy.
  void record_step(const StepRecord& record);
  // The same in two halves, so that the training step need not wait for the device:
  // step_values() launches the reductions and returns kStepValueCount float64 numbers on the
  // record's device; record_step(record, values) takes them once they are on the host.
  static constexpr int64_t kStepValueCount = 9;  // loss, quartile loss sums, quartile counts
  at::Tensor step_values(const StepRecord& record) const;
  void record_step(const StepRecord& record, const double* values);
  // Every rank, at each progress line. mean_loss: the loss averaged over ranks and the
  // interval; images_per_s: the run's throughput. Records throughput and memory; rank 0 also
  // sets difftrain_loss_mean and appends a line to metrics.jsonl.
  void record_interval(int64_t step, double mean_loss, double images_per_s);
  // After a checkpoint was written; rank 0 records its duration and re-draws loss-curve.png,
  // other ranks ignore the call.
  void record_checkpoint(double duration_s);
  // For long work outside the steps (sampling), so that TrainingStalled means stuck, not busy.
  void heartbeat();

  // Where this rank's /metrics is served ("" without an exporter).
  const std::string& target() const { return target_; }
  // Every rank's target, by rank (empty without exporters).
  const std::vector<std::string>& targets() const { return targets_; }
  const std::string& run() const { return run_; }

 private:
  // Sums over the steps since the last progress line (for metrics.jsonl).
  struct Interval {
    int64_t steps = 0, nonfinite_steps = 0;
    double data_wait_s = 0, forward_backward_s = 0, allreduce_s = 0, optimizer_s = 0, step_s = 0;
  };

  void load_history();
  void write_loss_curve() const;

  int rank_;
  int64_t num_timesteps_;
  c10::Device device_;
  std::string run_dir_, run_, targets_path_, target_;
  std::vector<std::string> targets_;
  std::unique_ptr<monitoring::TrainingMetrics> metrics_;
  std::unique_ptr<monitoring::Exporter> exporter_;
  std::unique_ptr<monitoring::MetricsLog> log_;          // rank 0
  std::vector<std::pair<double, double>> loss_history_;  // (step, mean loss); rank 0
  Interval interval_;
  monitoring::StepSample last_sample_;
  std::array<double, 4> last_quartile_loss_;  // NaN until a step had samples there
  int uncaught_at_start_;
};

}  // namespace difftrain::trainer
