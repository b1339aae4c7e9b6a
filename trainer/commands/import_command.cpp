// `difftrain import --diffusers`: a local diffusers UNet2DModel of the DDPM family as a
// difftrain checkpoint (the weights as both raw and EMA weights, no optimizer state, step 0)
// that `sample`, `eval` and `train --resume` accept.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "data/file_util.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/commands/commands.h"
#include "trainer/commands/sampling_setup.h"
#include "trainer/common/version.h"
#include "trainer/config/model_builder.h"
#include "trainer/export/diffusers_folder.h"
#include "trainer/optim/ema.h"

namespace difftrain::trainer {

void add_import_command(CLI::App& app) {
  struct ImportArgs {
    std::string diffusers, config, out;
    std::vector<std::string> overrides;
  };
  auto args = std::make_shared<ImportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "import", "Turn a local diffusers UNet2DModel folder into a difftrain checkpoint");
  cmd->add_option("--diffusers", args->diffusers,
                  "diffusers pipeline folder (with unet/) or UNet2DModel folder")
      ->required();
  cmd->add_option("--config", args->config,
                  "YAML config describing the same model (checked against the weights)")
      ->required();
  cmd->add_option("--set", args->overrides, "Override a config key")->take_all();
  cmd->add_option("--out", args->out, "Checkpoint file to write (must not exist)")->required();
  cmd->callback([args] {
    require_output_folder("--out", args->out);
    if (std::filesystem::exists(args->out)) {
      throw std::runtime_error("--out " + args->out + ": already exists; import writes a new file");
    }
    const Config config = load_config(args->config, args->overrides);
    const std::string unet_dir = find_diffusers_unet_folder(args->diffusers);
    UNet model(unet_options(config));
    read_diffusers_unet(unet_dir, *model);
    // A fresh EMA starts as the weights themselves: `sample` (EMA by default) uses them as they
    // are, and fine-tuning warms the average up from here.
    const Ema ema(*model, config.ema.decay);
    CheckpointInfo info;
    info.step = 0;
    info.world_size = 1;
    info.global_batch = config.train.batch_size * config.train.grad_accum_steps;
    info.config_yaml = to_yaml(config);
    info.versions = version_string();
    data::write_file_atomic(args->out, encode_checkpoint(info, *model, &ema, nullptr));
    std::cout << "wrote " << args->out << ": " << parameter_count(*model) << " parameters from "
              << unet_dir << " (raw and EMA weights, step 0, config " << args->config << ")\n";
  });
}

}  // namespace difftrain::trainer
