// RunMonitor: turns the training loop's tensors and timings into monitoring's numbers, and
// owns the exporter, the file_sd targets file, metrics.jsonl and loss-curve.png of a run.
#include "trainer/telemetry/run_monitor.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "data/png_io.h"
#include "launch/communicator.h"
#include "monitoring/clock.h"
#include "monitoring/exporter.h"
#include "monitoring/file_sd.h"
#include "monitoring/loss_curve.h"
#include "monitoring/metrics_log.h"
#include "trainer/common/version.h"
#include "trainer/config/config.h"
#include "trainer/telemetry/device_memory.h"

namespace difftrain::trainer {
namespace {

constexpr int kLossCurveWidthPx = 800;
constexpr int kLossCurveHeightPx = 450;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string this_hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "localhost";
  return name;
}

bool is_wildcard(const std::string& bind_host) {
  return bind_host == "0.0.0.0" || bind_host == "::" || bind_host == "[::]";
}

// [sum of losses in q1..q4, sample count in q1..q4] as float64 on the inputs' device.
at::Tensor quartile_sums(const at::Tensor& per_sample_loss, const at::Tensor& timesteps,
                         int64_t num_timesteps) {
  if (per_sample_loss.dim() != 1 || timesteps.dim() != 1 ||
      per_sample_loss.size(0) != timesteps.size(0)) {
    throw std::runtime_error("loss by timestep: per_sample_loss has shape " +
                             c10::str(per_sample_loss.sizes()) + " and timesteps " +
                             c10::str(timesteps.sizes()) + "; want two [B] tensors");
  }
  if (num_timesteps <= 0) {
    throw std::runtime_error("loss by timestep: T = " + std::to_string(num_timesteps) +
                             "; want > 0");
  }
  const at::Tensor losses = per_sample_loss.detach().to(torch::kDouble);
  const at::Tensor quartile =
      timesteps.detach().to(torch::kLong).mul(4).div(num_timesteps, "floor").clamp(0, 3);
  at::Tensor sums = torch::zeros({2, 4}, losses.options());
  sums[0].index_add_(0, quartile, losses);
  sums[1].index_add_(0, quartile, torch::ones_like(losses));
  return sums.reshape({8});
}

TimestepQuartiles quartiles_from(const double* sums_then_counts) {
  TimestepQuartiles result;
  for (size_t q = 0; q < 4; ++q) {
    result.count[q] = static_cast<int64_t>(std::llround(sums_then_counts[4 + q]));
    result.mean_loss[q] =
        result.count[q] > 0 ? sums_then_counts[q] / static_cast<double>(result.count[q]) : 0.0;
  }
  return result;
}

nlohmann::json mean_or_null(double sum, int64_t count) {
  return count > 0 ? nlohmann::json(sum / static_cast<double>(count)) : nlohmann::json(nullptr);
}

}  // namespace

TimestepQuartiles timestep_quartiles(const at::Tensor& per_sample_loss, const at::Tensor& timesteps,
                                     int64_t num_timesteps) {
  const at::Tensor sums =
      quartile_sums(per_sample_loss, timesteps, num_timesteps).to(torch::kCPU).contiguous();
  return quartiles_from(sums.data_ptr<double>());
}

std::vector<std::string> all_gather_strings(launch::Communicator& comm, const std::string& mine,
                                            int64_t row_bytes) {
  if (static_cast<int64_t>(mine.size()) > row_bytes || mine.find('\0') != std::string::npos) {
    throw std::runtime_error("gather '" + mine + "': want at most " + std::to_string(row_bytes) +
                             " bytes and no NUL byte");
  }
  at::Tensor rows = torch::zeros({comm.world_size(), row_bytes}, torch::kByte);
  auto* base = rows.data_ptr<uint8_t>();
  std::memcpy(base + comm.rank() * row_bytes, mine.data(), mine.size());
  comm.all_reduce_sum(rows);  // every other row is zero here, so the sum is a gather
  std::vector<std::string> all;
  for (int r = 0; r < comm.world_size(); ++r) {
    const char* row = reinterpret_cast<const char*>(base + r * row_bytes);
    all.emplace_back(row, strnlen(row, static_cast<size_t>(row_bytes)));
  }
  return all;
}

std::string run_label(const Config& config, const std::string& run_dir) {
  if (!config.monitoring.run_name.empty()) return config.monitoring.run_name;
  std::filesystem::path dir = std::filesystem::absolute(run_dir).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();  // "runs/a/" and "." have no filename
  return dir.filename().string();
}

std::string targets_path(const Config& config, const std::string& run_dir) {
  return config.monitoring.targets_file.empty() ? run_dir + "/prometheus-targets.json"
                                                : config.monitoring.targets_file;
}

RunMonitor::RunMonitor(const Config& config, const std::string& run_dir,
                       launch::Communicator& control, const RankPlace& place)
    : rank_(control.rank()),
      num_timesteps_(config.diffusion.timesteps),
      device_(place.device),
      run_dir_(run_dir),
      run_(run_label(config, run_dir)),
      targets_path_(targets_path(config, run_dir)),
      uncaught_at_start_(std::uncaught_exceptions()) {
  last_quartile_loss_.fill(kNaN);
  const monitoring::BuildInfo build{difftrain_version(), git_commit(), torch_version(),
                                    place.gradient_backend, place.device.str()};
  metrics_ = std::make_unique<monitoring::TrainingMetrics>(run_, rank_, build);
  metrics_->record_process_memory();  // fails here, at start-up, where /proc is missing

  // The same config on every rank, so every rank takes the same branch into the collective.
  if (config.monitoring.port >= 0) {
    const int64_t port =
        config.monitoring.port == 0 ? 0 : config.monitoring.port + place.local_rank;
    if (port > 65535) {
      throw std::runtime_error("monitoring.port " + std::to_string(config.monitoring.port) +
                               " + local rank " + std::to_string(place.local_rank) +
                               " is above 65535; pick a lower base port or 0 for any free port");
    }
    exporter_ = std::make_unique<monitoring::Exporter>(metrics_->registry(), config.monitoring.bind,
                                                       static_cast<int>(port));
    const std::string host = !is_wildcard(config.monitoring.bind) ? config.monitoring.bind
                             : place.hostname.empty()             ? this_hostname()
                                                                  : place.hostname;
    target_ = host + ":" + std::to_string(exporter_->port());
    targets_ = all_gather_strings(control, target_);
  }

  if (rank_ != 0) return;
  load_history();
  log_ = std::make_unique<monitoring::MetricsLog>(run_dir_ + "/metrics.jsonl");
  if (exporter_) {
    const std::filesystem::path folder = std::filesystem::path(targets_path_).parent_path();
    std::error_code error;
    if (!folder.empty()) std::filesystem::create_directories(folder, error);
    if (error) {
      throw std::runtime_error("monitoring.targets_file " + targets_path_ +
                               ": cannot create its folder: " + error.message());
    }
    std::map<std::string, std::string> labels = {{"run", run_}};
    const char* slurm_job = std::getenv("SLURM_JOB_ID");
    if (slurm_job != nullptr && *slurm_job != '\0') labels["slurm_job_id"] = slurm_job;
    monitoring::write_file_sd(targets_path_, targets_, labels);
    spdlog::info("monitoring: run '{}', {} /metrics targets (rank 0 at {}) listed in {}", run_,
                 targets_.size(), target_, targets_path_);
  }
}

RunMonitor::~RunMonitor() {
  // A normal end takes the run out of Prometheus' service discovery; an exception in flight
  // (or a crash, which never gets here) leaves it, so that TrainingStalled reports the run.
  if (rank_ == 0 && exporter_ && std::uncaught_exceptions() <= uncaught_at_start_) {
    std::error_code error;
    std::filesystem::remove(targets_path_, error);
    if (error) spdlog::warn("monitoring: cannot remove {}: {}", targets_path_, error.message());
  }
}

at::Tensor RunMonitor::step_values(const StepRecord& record) const {
  const at::Tensor loss =
      record.loss.defined() ? record.loss.detach() : record.per_sample_loss.detach().mean();
  return torch::cat({loss.to(torch::kDouble).reshape({1}),
                     quartile_sums(record.per_sample_loss, record.timesteps, num_timesteps_)});
}

void RunMonitor::record_step(const StepRecord& record) {
  // One copy to the host: [loss, quartile loss sums, quartile counts].
  const at::Tensor numbers = step_values(record).to(torch::kCPU).contiguous();
  record_step(record, numbers.data_ptr<double>());
}

void RunMonitor::record_step(const StepRecord& record, const double* values) {
  const TimestepQuartiles quartiles = quartiles_from(values + 1);

  monitoring::StepSample& sample = last_sample_;
  sample = record.sample;
  sample.loss = values[0];
  sample.loss_by_quartile = quartiles.mean_loss;
  sample.count_by_quartile = quartiles.count;
  metrics_->record_step(sample);

  for (size_t q = 0; q < 4; ++q) {
    if (quartiles.count[q] > 0) last_quartile_loss_[q] = quartiles.mean_loss[q];
  }
  ++interval_.steps;
  if (sample.skipped_nonfinite || !std::isfinite(sample.loss)) ++interval_.nonfinite_steps;
  interval_.data_wait_s += sample.data_wait_s;
  interval_.forward_backward_s += sample.forward_backward_s;
  interval_.allreduce_s += sample.allreduce_s;
  interval_.optimizer_s += sample.optimizer_s;
  interval_.step_s += sample.step_s;
}

void RunMonitor::record_interval(int64_t step, double mean_loss, double images_per_s) {
  metrics_->record_images_per_second(images_per_s);
  metrics_->record_process_memory();
  if (device_.is_cuda() && torch::cuda::is_available()) {
    const std::optional<int64_t> bytes = device_memory_allocated_bytes(device_);
    if (bytes) metrics_->record_device_memory(static_cast<double>(*bytes));
  }
  const Interval interval = interval_;
  interval_ = Interval{};
  if (rank_ != 0) return;

  metrics_->record_mean_loss(mean_loss);
  loss_history_.emplace_back(static_cast<double>(step), mean_loss);
  const int64_t n = interval.steps;
  log_->append({
      {"time_s", monitoring::unix_now_s()},
      {"step", step},
      {"loss", mean_loss},
      {"images_per_s", images_per_s},
      {"learning_rate", last_sample_.learning_rate},
      {"grad_norm", last_sample_.grad_norm},
      {"ema_decay", last_sample_.ema_decay},
      {"nonfinite_steps", interval.nonfinite_steps},
      {"step_s", mean_or_null(interval.step_s, n)},
      {"data_wait_s", mean_or_null(interval.data_wait_s, n)},
      {"forward_backward_s", mean_or_null(interval.forward_backward_s, n)},
      {"allreduce_s", mean_or_null(interval.allreduce_s, n)},
      {"optimizer_s", mean_or_null(interval.optimizer_s, n)},
      {"loss_by_timestep", last_quartile_loss_},  // NaN (never seen) is written as null
  });
}

void RunMonitor::record_checkpoint(double duration_s) {
  if (rank_ != 0) return;
  metrics_->record_checkpoint(duration_s, monitoring::unix_now_s());
  write_loss_curve();
}

void RunMonitor::heartbeat() { metrics_->heartbeat(); }

void RunMonitor::load_history() {
  std::ifstream in(run_dir_ + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line)) {
    // A torn last line (a crash mid-write) or a foreign line is skipped, not fatal.
    const nlohmann::json record = nlohmann::json::parse(line, nullptr, false);
    if (!record.is_object() || !record.contains("step") || !record["step"].is_number()) continue;
    const auto loss = record.find("loss");
    loss_history_.emplace_back(
        record["step"].get<double>(),
        loss != record.end() && loss->is_number() ? loss->get<double>() : kNaN);
  }
}

void RunMonitor::write_loss_curve() const {
  const std::vector<uint8_t> rgb =
      monitoring::render_loss_curve(loss_history_, kLossCurveWidthPx, kLossCurveHeightPx);
  data::write_png(run_dir_ + "/loss-curve.png", rgb.data(), kLossCurveHeightPx, kLossCurveWidthPx,
                  3);
}

}  // namespace difftrain::trainer
