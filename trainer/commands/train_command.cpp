// `difftrain train`: start MPI, set up logging per rank, run the Trainer; on any rank's error
// print one line with the rank and abort the whole job so no rank waits forever.
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>
#include <optional>

#include "launch/communicator.h"
#include "launch/mpi_communicator.h"
#include "launch/runtime.h"
#include "trainer/checkpoint/run_lock.h"
#include "trainer/commands/commands.h"
#include "trainer/config/config.h"
#include "trainer/train/stop_signal.h"
#include "trainer/train/trainer.h"

namespace difftrain::trainer {
namespace {

// Every line carries the time and "[rank r/N]"; rank 0 also appends to run-dir/train.log.
void setup_logging(const launch::Runtime& runtime) {
  auto console = std::make_shared<spdlog::sinks::stdout_sink_mt>();
  auto logger = std::make_shared<spdlog::logger>("difftrain", console);
  logger->set_pattern("[%Y-%m-%d %H:%M:%S] " + runtime.tag() + " %v");
  logger->flush_on(spdlog::level::info);
  spdlog::set_default_logger(logger);
}

void add_run_log(const std::string& run_dir, const launch::Runtime& runtime) {
  std::filesystem::create_directories(run_dir);
  auto file = std::make_shared<spdlog::sinks::basic_file_sink_mt>(run_dir + "/train.log");
  file->set_pattern("[%Y-%m-%d %H:%M:%S] " + runtime.tag() + " %v");
  spdlog::default_logger()->sinks().push_back(file);
}

// The run directory: --run-dir, else runs/<config file stem>.
std::string resolve_run_dir(const std::string& run_dir, const std::string& config_path) {
  if (!run_dir.empty()) return run_dir;
  if (config_path.empty()) throw std::runtime_error("train: give --config FILE or --run-dir DIR");
  return "runs/" + std::filesystem::path(config_path).stem().string();
}

}  // namespace

void add_train_command(CLI::App& app) {
  struct Args {
    std::string config, run_dir, resume = "auto", backend;
    std::vector<std::string> overrides;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "train", "Train a diffusion model; run under mpirun/srun for data-parallel ranks");
  cmd->add_option("--config", args->config,
                  "YAML config (default: the run dir's config.yaml when resuming)");
  cmd->add_option("--set", args->overrides, "Override a config key: --set train.lr=1e-4")
      ->take_all();
  cmd->add_option("--run-dir", args->run_dir,
                  "Run directory (default runs/<config name>); an existing one is resumed");
  cmd->add_option("--resume", args->resume,
                  "auto (newest checkpoint in the run dir), never, or a checkpoint file");
  cmd->add_option("--backend", args->backend,
                  "Gradient all-reduce: auto (NCCL on GPUs, else MPI), nccl or mpi; the same as "
                  "--set dist.backend=...")
      ->check(CLI::IsMember({"auto", "nccl", "mpi"}));
  cmd->callback([args] {
    // Options first, so a typo fails before MPI starts.
    if (!args->backend.empty()) args->overrides.push_back("dist.backend=" + args->backend);
    const std::string run_dir = resolve_run_dir(args->run_dir, args->config);
    std::string config_path = args->config;
    if (config_path.empty() && std::filesystem::exists(run_dir + "/config.yaml")) {
      config_path = run_dir + "/config.yaml";
    }
    Config config = load_config(config_path, args->overrides);

    // Before MPI starts: a preemption warning that arrives during start-up is kept, not fatal.
    install_stop_signal_handlers();
    launch::Runtime runtime(nullptr, nullptr, config.train.device);
    setup_logging(runtime);
    try {
      // Rank 0 holds the run directory for the life of the run: a second job fails here,
      // before it writes anything there.
      std::optional<RunLock> run_lock;
      if (runtime.rank() == 0) {
        run_lock.emplace(run_dir);
        add_run_log(run_dir, runtime);
      }
      const int64_t threads =
          config.train.threads > 0 ? config.train.threads : runtime.default_threads();
      torch::set_num_threads(static_cast<int>(threads));
      spdlog::info("difftrain on {} (local rank {}/{}), device {}, config {}, run dir {}",
                   runtime.hostname(), runtime.local_rank(), runtime.local_size(),
                   runtime.device().str(), config_path.empty() ? "defaults" : config_path, run_dir);
      const char* restarts = std::getenv("SLURM_RESTART_COUNT");
      if (restarts != nullptr) spdlog::info("SLURM_RESTART_COUNT={}", restarts);

      auto gradients =
          launch::make_communicator(config.dist.backend, runtime, config.dist.timeout_s);
      launch::MpiCommunicator control(config.dist.timeout_s);
      TrainerOptions options;
      options.run_dir = run_dir;
      options.resume = args->resume;
      options.local_rank = runtime.local_rank();
      options.hostname = runtime.hostname();
      Trainer trainer(config, options, *gradients, control, runtime.device());
      const TrainResult result = trainer.run();
      if (runtime.rank() == 0) {
        if (!result.stop_reason.empty()) {
          std::cout << "stopped:    at step " << result.final_step << " (" << result.stop_reason
                    << "); the same command resumes\n";
        }
        std::cout << "run dir:    " << run_dir << "\n"
                  << "checkpoint: " << result.checkpoint_path << "\n"
                  << "samples:    " << result.samples_path << "\n"
                  << "log:        " << run_dir << "/train.log\n";
      }
    } catch (const std::exception& e) {
      runtime.report_error(e.what());
      if (runtime.world_size() > 1) runtime.abort(1);
      throw ReportedError(e.what());
    }
  });
}

}  // namespace difftrain::trainer
