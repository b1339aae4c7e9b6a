// TrainingMetrics: every Prometheus series one training rank exports (loss, throughput, phase
// timings, optimizer state, checkpoints, memory, liveness), held in one prometheus-cpp registry.
// Takes plain numbers; knows nothing of tensors, MPI or the training loop.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>

namespace prometheus {
class Registry;
class Counter;
class Gauge;
class Histogram;
template <typename T>
class Family;
}  // namespace prometheus

namespace difftrain::monitoring {

// Exported once as difftrain_build_info{version,git_commit,torch_version,backend,device} 1.
struct BuildInfo {
  std::string version, git_commit, torch_version, backend, device;
};

// What one rank measured in one optimizer step. Durations in seconds.
struct StepSample {
  int64_t step = 0;
  int64_t images = 0;  // images processed by this rank in this step; >= 0
  double loss = 0;     // this rank's loss
  double data_wait_s = 0, forward_backward_s = 0, allreduce_s = 0, optimizer_s = 0, step_s = 0;
  double grad_norm = 0, learning_rate = 0, ema_decay = 0;
  bool skipped_nonfinite = false;
  std::array<double, 4>
      loss_by_quartile{};  // mean loss of samples whose t fell in quartile q of [0,T)
  std::array<int64_t, 4>
      count_by_quartile{};  // how many samples; 0 = no sample in that quartile this step
};

// Histogram bucket upper bounds (seconds) shared by the step and phase histograms: 1 ms .. 60 s.
inline constexpr std::array<double, 15> kStepSecondsBuckets = {
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60};

// The metrics of one rank of one run. Every series carries the labels run=<run>, rank=<rank>.
// Counters and histograms exist (at zero) from construction; a gauge appears on its first
// record_* call, so a value never recorded (device memory on a CPU, the cross-rank mean on
// rank != 0, a checkpoint time before the first checkpoint) is absent rather than a misleading 0.
// Thread safety: every method may be called from any thread concurrently (prometheus-cpp metrics
// are atomic or locked); the registry may be scraped while steps are recorded.
class TrainingMetrics {
 public:
  // Throws std::runtime_error if run is empty or rank < 0.
  TrainingMetrics(std::string run, int rank, const BuildInfo& build);
  ~TrainingMetrics();
  TrainingMetrics(const TrainingMetrics&) = delete;
  TrainingMetrics& operator=(const TrainingMetrics&) = delete;

  // The registry to hand to an Exporter; it stays valid after this object is destroyed.
  std::shared_ptr<prometheus::Registry> registry() const;

  // Adds one step: steps/images counters, phase and step histograms, loss/grad-norm/lr/EMA/step
  // gauges, per-quartile loss (only quartiles with count > 0), and refreshes the heartbeat.
  // A step with skipped_nonfinite or a non-finite loss increments difftrain_nonfinite_steps_total.
  // Throws std::runtime_error if images or a quartile count is negative.
  void record_step(const StepSample& sample);
  // Rank 0: the loss averaged over all ranks (difftrain_loss_mean).
  void record_mean_loss(double loss);
  // A checkpoint finished: how long it took, and when it finished (unix seconds).
  void record_checkpoint(double duration_s, double unix_time_s);
  void record_images_per_second(double images_per_s);
  // Resident set size from /proc/self/statm. Throws std::runtime_error if it cannot be read.
  void record_process_memory();
  // Device (GPU) memory in use by this process, in bytes. Not called on CPU runs.
  void record_device_memory(double bytes);
  // Sets difftrain_heartbeat_timestamp_seconds to the current unix time. Call it from long
  // non-step work (sampling, evaluation) so that TrainingStalled means "stuck", not "busy".
  void heartbeat();
  // The registry in Prometheus text exposition format (what /metrics serves).
  std::string exposition() const;

 private:
  using GaugeFamily = prometheus::Family<prometheus::Gauge>;

  std::shared_ptr<prometheus::Registry> registry_;
  // Owned by registry_.
  GaugeFamily* loss_;
  GaugeFamily* loss_mean_;
  GaugeFamily* loss_by_timestep_;
  GaugeFamily* images_per_second_;
  GaugeFamily* grad_norm_;
  GaugeFamily* learning_rate_;
  GaugeFamily* ema_decay_;
  GaugeFamily* step_;
  GaugeFamily* checkpoint_duration_;
  GaugeFamily* last_checkpoint_timestamp_;
  GaugeFamily* process_resident_memory_;
  GaugeFamily* device_memory_;
  prometheus::Gauge* heartbeat_;
  prometheus::Counter* steps_total_;
  prometheus::Counter* images_total_;
  prometheus::Counter* nonfinite_steps_total_;
  std::array<prometheus::Histogram*, 4>
      phase_seconds_;  // data_wait, forward_backward, allreduce, optimizer
  prometheus::Histogram* step_seconds_;
};

}  // namespace difftrain::monitoring
