// TrainingMetrics: defines the difftrain_* metric families and records into them.
// Metric names, types and labels are documented in monitoring/README.md; keep the two in step.
#include "monitoring/training_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <stdexcept>
#include <utility>

#include "monitoring/clock.h"

namespace difftrain::monitoring {
namespace {

constexpr std::array<const char*, 4> kPhases = {"data_wait", "forward_backward", "allreduce",
                                                "optimizer"};
constexpr std::array<const char*, 4> kQuartiles = {"q1", "q2", "q3", "q4"};

// Family::Add returns the existing gauge when the labels are already present, so this creates
// the series on first use and afterwards only sets it.
void set_gauge(prometheus::Family<prometheus::Gauge>& family, double value,
               const prometheus::Labels& labels = {}) {
  family.Add(labels).Set(value);
}

}  // namespace

TrainingMetrics::TrainingMetrics(std::string run, int rank, const BuildInfo& build)
    : registry_(std::make_shared<prometheus::Registry>()) {
  if (run.empty()) {
    throw std::runtime_error("monitoring run '': want a non-empty run name");
  }
  if (rank < 0) {
    throw std::runtime_error("monitoring rank " + std::to_string(rank) + ": want >= 0");
  }
  const prometheus::Labels labels = {{"run", std::move(run)}, {"rank", std::to_string(rank)}};
  auto& registry = *registry_;
  auto gauge = [&](const char* name, const char* help) {
    return &prometheus::BuildGauge().Name(name).Help(help).Labels(labels).Register(registry);
  };
  auto counter = [&](const char* name, const char* help) {
    return &prometheus::BuildCounter().Name(name).Help(help).Labels(labels).Register(registry).Add(
        {});
  };
  const prometheus::Histogram::BucketBoundaries buckets(kStepSecondsBuckets.begin(),
                                                        kStepSecondsBuckets.end());

  loss_ = gauge("difftrain_loss", "Training loss of this rank in the last step.");
  loss_mean_ = gauge("difftrain_loss_mean", "Loss averaged over all ranks (exported by rank 0).");
  loss_by_timestep_ = gauge("difftrain_loss_by_timestep",
                            "Mean loss of the last step's samples whose diffusion timestep fell "
                            "in quartile q1..q4 of [0,T).");
  images_per_second_ =
      gauge("difftrain_images_per_second", "Throughput of this rank as measured by the trainer.");
  grad_norm_ = gauge("difftrain_grad_norm", "Global gradient norm before clipping.");
  learning_rate_ = gauge("difftrain_learning_rate", "Learning rate of the last step.");
  ema_decay_ = gauge("difftrain_ema_decay", "EMA decay used in the last step.");
  step_ = gauge("difftrain_step", "Optimizer step most recently completed.");
  checkpoint_duration_ =
      gauge("difftrain_checkpoint_duration_seconds", "Wall time of the last checkpoint write.");
  last_checkpoint_timestamp_ = gauge("difftrain_last_checkpoint_timestamp_seconds",
                                     "Unix time the last checkpoint finished.");
  process_resident_memory_ =
      gauge("difftrain_process_resident_memory_bytes", "Resident memory of this process.");
  device_memory_ = gauge("difftrain_device_memory_bytes", "Device memory in use by this process.");

  heartbeat_ =
      &gauge("difftrain_heartbeat_timestamp_seconds", "Unix time this rank last showed progress.")
           ->Add({});
  heartbeat_->Set(unix_now_s());
  gauge("difftrain_start_timestamp_seconds", "Unix time the metrics of this process were created.")
      ->Add({})
      .Set(unix_now_s());
  gauge("difftrain_build_info", "Build of the trainer; the value is always 1.")
      ->Add({{"version", build.version},
             {"git_commit", build.git_commit},
             {"torch_version", build.torch_version},
             {"backend", build.backend},
             {"device", build.device}})
      .Set(1);

  steps_total_ = counter("difftrain_steps_total", "Optimizer steps run, skipped ones included.");
  images_total_ = counter("difftrain_images_total", "Images processed by this rank.");
  nonfinite_steps_total_ = counter("difftrain_nonfinite_steps_total",
                                   "Steps whose loss or gradients were not finite (skipped).");

  auto& phases = prometheus::BuildHistogram()
                     .Name("difftrain_step_phase_seconds")
                     .Help("Time per step spent in each phase of the training step.")
                     .Labels(labels)
                     .Register(registry);
  for (size_t i = 0; i < kPhases.size(); ++i) {
    phase_seconds_[i] = &phases.Add({{"phase", kPhases[i]}}, buckets);
  }
  step_seconds_ = &prometheus::BuildHistogram()
                       .Name("difftrain_step_seconds")
                       .Help("Wall time of one whole training step.")
                       .Labels(labels)
                       .Register(registry)
                       .Add({}, buckets);
}

TrainingMetrics::~TrainingMetrics() = default;

std::shared_ptr<prometheus::Registry> TrainingMetrics::registry() const { return registry_; }

void TrainingMetrics::record_step(const StepSample& sample) {
  if (sample.images < 0) {
    throw std::runtime_error("monitoring step sample images " + std::to_string(sample.images) +
                             ": want >= 0");
  }
  for (size_t q = 0; q < kQuartiles.size(); ++q) {
    if (sample.count_by_quartile[q] < 0) {
      throw std::runtime_error("monitoring step sample count_by_quartile[" + std::to_string(q) +
                               "] " + std::to_string(sample.count_by_quartile[q]) + ": want >= 0");
    }
  }

  steps_total_->Increment();
  images_total_->Increment(static_cast<double>(sample.images));
  if (sample.skipped_nonfinite || !std::isfinite(sample.loss)) {
    nonfinite_steps_total_->Increment();
  }

  const std::array<double, 4> phase_s = {sample.data_wait_s, sample.forward_backward_s,
                                         sample.allreduce_s, sample.optimizer_s};
  for (size_t i = 0; i < phase_s.size(); ++i) {
    phase_seconds_[i]->Observe(phase_s[i]);
  }
  step_seconds_->Observe(sample.step_s);

  set_gauge(*loss_, sample.loss);
  set_gauge(*grad_norm_, sample.grad_norm);
  set_gauge(*learning_rate_, sample.learning_rate);
  set_gauge(*ema_decay_, sample.ema_decay);
  set_gauge(*step_, static_cast<double>(sample.step));
  for (size_t q = 0; q < kQuartiles.size(); ++q) {
    if (sample.count_by_quartile[q] > 0) {
      set_gauge(*loss_by_timestep_, sample.loss_by_quartile[q], {{"quartile", kQuartiles[q]}});
    }
  }
  heartbeat_->Set(unix_now_s());
}

void TrainingMetrics::record_mean_loss(double loss) { set_gauge(*loss_mean_, loss); }

void TrainingMetrics::record_checkpoint(double duration_s, double unix_time_s) {
  set_gauge(*checkpoint_duration_, duration_s);
  set_gauge(*last_checkpoint_timestamp_, unix_time_s);
}

void TrainingMetrics::record_images_per_second(double images_per_s) {
  set_gauge(*images_per_second_, images_per_s);
}

void TrainingMetrics::record_process_memory() {
  // statm: size resident shared text lib data dt, in pages.
  std::ifstream statm("/proc/self/statm");
  long long size_pages = 0;
  long long resident_pages = -1;
  statm >> size_pages >> resident_pages;
  if (!statm || resident_pages < 0) {
    throw std::runtime_error("/proc/self/statm: cannot read the resident page count");
  }
  const long page_bytes = sysconf(_SC_PAGESIZE);
  set_gauge(*process_resident_memory_,
            static_cast<double>(resident_pages) * static_cast<double>(page_bytes));
}

void TrainingMetrics::record_device_memory(double bytes) { set_gauge(*device_memory_, bytes); }

void TrainingMetrics::heartbeat() { heartbeat_->Set(unix_now_s()); }

std::string TrainingMetrics::exposition() const {
  return prometheus::TextSerializer().Serialize(registry_->Collect());
}

}  // namespace difftrain::monitoring
