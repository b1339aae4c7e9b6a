// `difftrain export --format diffusers`: a checkpoint's U-Net and schedule as a diffusers
// DDPMPipeline folder that `DDPMPipeline.from_pretrained(DIR)` loads without a network.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "trainer/commands/commands.h"
#include "trainer/commands/sampling_setup.h"
#include "trainer/export/diffusers_folder.h"

namespace difftrain::trainer {

void add_export_command(CLI::App& app) {
  struct ExportArgs {
    std::string run_dir, checkpoint, format, out, weights = "ema";
  };
  auto args = std::make_shared<ExportArgs>();
  CLI::App* cmd = app.add_subcommand(
      "export", "Write a checkpoint as a diffusers DDPMPipeline folder (UNet2DModel + scheduler)");
  auto* source = cmd->add_option_group("source", "where the weights come from");
  source->add_option("--run-dir", args->run_dir, "Run directory: its newest checkpoint");
  source->add_option("--checkpoint", args->checkpoint, "A checkpoint file");
  source->require_option(1);
  cmd->add_option("--format", args->format, "Output format: diffusers")
      ->required()
      ->check(CLI::IsMember({"diffusers"}));
  cmd->add_option("--out", args->out, "Folder to create (must not exist)")->required();
  cmd->add_option("--weights", args->weights, "ema (default) or raw")
      ->check(CLI::IsMember({"ema", "raw"}));
  cmd->callback([args] {
    const std::string path = resolve_checkpoint(args->run_dir, args->checkpoint);
    const SamplingModel loaded = load_sampling_model(path, args->weights, torch::kCPU);
    UNet model = loaded.model;  // a shared handle; the export only reads the weights
    write_diffusers_pipeline(args->out, *model, loaded.config);
    std::cout << "wrote " << args->out << ": diffusers DDPMPipeline (UNet2DModel, "
              << parameter_count(*loaded.model) << " parameters; DDPMScheduler) from the "
              << args->weights << " weights of " << path << " (step " << loaded.step << ")\n";
  });
}

}  // namespace difftrain::trainer
