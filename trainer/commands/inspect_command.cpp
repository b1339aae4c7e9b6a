// `difftrain inspect data|model|schedule|checkpoint|forward`: look inside datasets, model
// configs, noise schedules and checkpoints, and run a checkpoint's network on given inputs.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "data/dataset.h"
#include "data/manifest.h"
#include "data/sha256.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/commands/commands.h"
#include "trainer/commands/sampling_setup.h"
#include "trainer/commands/setting_option.h"
#include "trainer/config/config.h"
#include "trainer/config/model_builder.h"
#include "trainer/export/safetensors.h"

namespace difftrain::trainer {

// SHA-256 over the model's parameters as float32 bytes, in registration order: equal weights
// give equal hashes, so two runs can be compared exactly.
std::string params_sha256(const torch::nn::Module& module) {
  data::Sha256 hash;
  for (const auto& p : module.parameters()) {
    const at::Tensor bytes = p.detach().to(torch::kCPU, torch::kFloat).contiguous();
    hash.update(reinterpret_cast<const uint8_t*>(bytes.data_ptr<float>()),
                bytes.numel() * static_cast<int64_t>(sizeof(float)));
  }
  return hash.hex_digest();
}

void add_inspect_command(CLI::App& app) {
  CLI::App* cmd =
      app.add_subcommand("inspect", "Look inside datasets, models, schedules, checkpoints");
  cmd->require_subcommand(1);

  auto data_dir = std::make_shared<std::string>();
  auto verify = std::make_shared<bool>(false);
  CLI::App* data_cmd = cmd->add_subcommand("data", "Summarise a prepared dataset");
  data_cmd->add_option("dir", *data_dir, "Dataset directory")->required();
  data_cmd->add_flag("--verify", *verify, "Re-read every shard and check its checksum");
  data_cmd->callback([data_dir, verify] {
    data::Dataset dataset(*data_dir);
    std::cout << data::describe(dataset.manifest(), *data_dir);
    if (*verify) {
      const auto problems = dataset.verify();
      for (const auto& p : problems) std::cout << "FAILED: " << p << "\n";
      if (!problems.empty()) {
        throw std::runtime_error(*data_dir + ": " + std::to_string(problems.size()) +
                                 " shard(s) failed verification");
      }
      std::cout << "verify: all " << dataset.manifest().shards.size()
                << " shards match their checksums\n";
    }
  });

  struct ModelArgs {
    std::string config;
    std::vector<std::string> overrides;
  };
  auto model_args = std::make_shared<ModelArgs>();
  CLI::App* model_cmd = cmd->add_subcommand("model", "Parameter count and layer plan of a config");
  model_cmd->add_option("--config", model_args->config, "YAML config")->required();
  model_cmd->add_option("--set", model_args->overrides, "Override a config key")->take_all();
  model_cmd->callback([model_args] {
    const Config config = load_config(model_args->config, model_args->overrides);
    UNet model(unet_options(config));
    std::cout << "parameters: " << parameter_count(*model) << "\n" << model->layer_plan();
  });

  struct ScheduleArgs {
    BetaSchedule schedule = BetaSchedule::kLinear;
    int64_t timesteps = 1000;
    double beta_start = 1e-4, beta_end = 0.02;
  };
  auto schedule_args = std::make_shared<ScheduleArgs>();
  CLI::App* schedule_cmd =
      cmd->add_subcommand("schedule", "Noise schedule as CSV: t,beta_t,alpha_bar_t,snr");
  add_setting_option(schedule_cmd, "--schedule", &schedule_args->schedule, "Schedule");
  schedule_cmd->add_option("--timesteps", schedule_args->timesteps, "T")
      ->check(CLI::Range(1, 100000));
  schedule_cmd->add_option("--beta-start", schedule_args->beta_start, "linear: beta_1");
  schedule_cmd->add_option("--beta-end", schedule_args->beta_end, "linear: beta_T");
  schedule_cmd->callback([schedule_args] {
    const NoiseSchedule schedule(schedule_args->schedule, schedule_args->timesteps,
                                 schedule_args->beta_start, schedule_args->beta_end);
    std::cout << schedule.to_csv();
  });

  CLI::App* config_cmd =
      cmd->add_subcommand("config", "Every config key with its default (Markdown)");
  config_cmd->callback([] { std::cout << config_markdown_table(); });

  auto checkpoint_path = std::make_shared<std::string>();
  CLI::App* checkpoint_cmd =
      cmd->add_subcommand("checkpoint", "Step, config and weight hash of a checkpoint");
  checkpoint_cmd->add_option("file", *checkpoint_path, "Checkpoint file")->required();
  checkpoint_cmd->callback([checkpoint_path] {
    LoadedCheckpoint checkpoint = LoadedCheckpoint::open(*checkpoint_path, torch::kCPU);
    const Config config = parse_config(checkpoint.info().config_yaml, *checkpoint_path);
    UNet model(unet_options(config));
    checkpoint.load_model(*model);
    const auto& info = checkpoint.info();
    std::cout << "file: " << *checkpoint_path << "\n"
              << "step: " << info.step << "\n"
              << "world_size: " << info.world_size << "\n"
              << "global_batch: " << info.global_batch << "\n"
              << "versions: " << info.versions << "\n"
              << "model: " << config.model.in_channels << "x" << config.model.image_size << "x"
              << config.model.image_size << ", channels " << config.model.channels << ", "
              << config.model.channel_mult.size() << " levels, " << parameter_count(*model)
              << " parameters\n"
              << "ema: " << (checkpoint.has_ema() ? "yes" : "no") << "\n"
              << "params_sha256: " << params_sha256(*model) << "\n";
  });

  // The raw network output, for comparing an exported model with another implementation.
  struct ForwardArgs {
    std::string checkpoint, inputs, out, weights = "ema";
  };
  auto forward_args = std::make_shared<ForwardArgs>();
  CLI::App* forward_cmd = cmd->add_subcommand(
      "forward", "Run a checkpoint's U-Net once on given inputs (CPU, float32)");
  forward_cmd->add_option("--checkpoint", forward_args->checkpoint, "Checkpoint file")->required();
  forward_cmd->add_option("--weights", forward_args->weights, "ema (default) or raw")
      ->check(CLI::IsMember({"ema", "raw"}));
  forward_cmd
      ->add_option("--inputs", forward_args->inputs,
                   "safetensors with x float [B, C, H, W], t int64 [B] and, for a "
                   "class-conditional model, labels int64 [B]")
      ->required();
  forward_cmd->add_option("--out", forward_args->out, "safetensors to write: output float32")
      ->required();
  forward_cmd->callback([forward_args] {
    require_output_folder("--out", forward_args->out);
    const SafetensorsContent inputs = read_safetensors(forward_args->inputs);
    const SamplingModel loaded =
        load_sampling_model(forward_args->checkpoint, forward_args->weights, torch::kCPU);
    torch::NoGradGuard no_grad;
    const at::Tensor& x = inputs.at("x", forward_args->inputs);
    const at::Tensor& t = inputs.at("t", forward_args->inputs);
    const at::Tensor labels =
        inputs.contains("labels") ? inputs.at("labels", forward_args->inputs) : at::Tensor();
    UNet model = loaded.model;  // a shared handle: forward() is not const
    const at::Tensor output = model->forward(x.to(torch::kFloat), t, labels);
    write_safetensors(forward_args->out, {{{"output", output}}, {}});
  });
}

}  // namespace difftrain::trainer
