// `difftrain denoise`: partial diffusion of one image (SDEdit): noise it to the timestep that
// --strength names, run the reverse process from there, and write the result at the model's
// resolution (and optionally input | output side by side).
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <iostream>

#include "data/png_io.h"
#include "trainer/commands/commands.h"
#include "trainer/commands/sampling_setup.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/denoise.h"
#include "trainer/sampling/image_grid.h"

namespace difftrain::trainer {

void add_denoise_command(CLI::App& app) {
  struct Args : GenerationArgs {
    std::string input, out = "denoised.png", compare;
    double strength = 0.5;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "denoise", "Denoise or re-imagine an image: noise it to --strength, then run the sampler");
  cmd->add_option("--input", args->input, "PNG of the model's size and channels")->required();
  cmd->add_option("--strength", args->strength,
                  "In (0, 1]: start at timestep round(S (T-1)); small = stay close to the input, "
                  "1 = from pure noise");
  cmd->add_option("--out", args->out, "Output PNG (the model's resolution)");
  cmd->add_option("--compare", args->compare, "Also write input | output side by side");
  add_generation_options(cmd, args.get(),
                         "Steps of the full sampler grid; a run visits those below its start",
                         "Seed of the noise");
  cmd->callback([args] {
    require_output_folder("--out", args->out);
    const c10::Device device = resolve_device(args->device);
    const std::string path = resolve_checkpoint(args->run_dir, args->checkpoint);
    const SamplingModel loaded = load_sampling_model(path, args->weights, device);
    const Config& config = loaded.config;
    const int64_t t_start = denoise_start_timestep(args->strength, config.diffusion.timesteps);
    const at::Tensor input =
        read_model_image("--input", args->input, config.model.in_channels, config.model.image_size)
            .unsqueeze(0);
    const SamplerOptions options = sampler_options(*args, config.diffusion.timesteps);
    const NoiseSchedule schedule = noise_schedule(config);
    torch::NoGradGuard no_grad;

    const at::Tensor output = denoise(model_predictor(loaded), schedule, input.to(device),
                                      args->strength, options, static_cast<uint64_t>(args->seed), 0)
                                  .to(torch::kCPU);
    const at::Tensor pixels = to_uint8_hwc(output)[0];
    data::write_png(args->out, pixels.data_ptr<uint8_t>(), pixels.size(0), pixels.size(1),
                    pixels.size(2));
    std::cout << "wrote " << args->out << ": " << args->input << " from timestep " << t_start
              << " (strength " << args->strength << "), "
              << denoise_timesteps(schedule, options, t_start).size() << " "
              << setting_name(args->sampler) << " steps, " << args->weights << " weights of "
              << path << " (step " << loaded.step << ")\n";
    if (!args->compare.empty()) {
      write_image_grid(args->compare, torch::cat({input, output}), /*columns=*/2);
      std::cout << "wrote " << args->compare << ": input | output\n";
    }
  });
}

}  // namespace difftrain::trainer
