// `difftrain sample`: load a checkpoint, run DDPM, DDIM or DPM-Solver++ (optionally for one
// class, with classifier-free guidance), write a PNG grid and optionally a reverse-process strip.
#include <CLI/CLI.hpp>
#include <torch/torch.h>

#include <iostream>
#include <sstream>

#include "trainer/checkpoint.h"
#include "trainer/commands/commands.h"
#include "trainer/config.h"
#include "trainer/diffusion/guidance.h"
#include "trainer/diffusion/prediction.h"
#include "trainer/ema.h"
#include "trainer/image_grid.h"
#include "trainer/model_builder.h"

namespace difftrain::trainer {

void add_sample_command(CLI::App& app) {
  struct Args {
    std::string run_dir, checkpoint, sampler = "ddim", variance = "beta", out = "samples.png";
    std::string progression, weights = "ema", device = "auto";
    int64_t steps = 50, n = 64, seed = 0, strip_frames = 10, strip_images = 8;
    double eta = 0.0, guidance = 0.0;
    int64_t label = -1;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand("sample", "Generate images from a checkpoint into a PNG grid");
  auto* source = cmd->add_option_group("source", "where the weights come from");
  source->add_option("--run-dir", args->run_dir, "Run directory: its newest checkpoint");
  source->add_option("--checkpoint", args->checkpoint, "A checkpoint file");
  source->require_option(1);
  cmd->add_option("--sampler", args->sampler, "ddpm, ddim or dpmpp2m (DPM-Solver++(2M))")
      ->check(CLI::IsMember({"ddpm", "ddim", "dpmpp2m"}));
  cmd->add_option("--steps", args->steps, "Reverse steps (DDPM: T is the classic sampler)");
  cmd->add_option("--eta", args->eta, "DDIM eta in [0,1]; 0 = deterministic");
  cmd->add_option("--class", args->label,
                  "Class label in [0, model.num_classes) of a class-conditional model; -1 "
                  "(default) = unconditional");
  cmd->add_option("--guidance", args->guidance,
                  "Classifier-free guidance w (Ho & Salimans): (1+w) eps_class - w eps_uncond; "
                  "0 = plain conditional (needs --class)");
  cmd->add_option("--variance", args->variance, "DDPM variance: beta or posterior")
      ->check(CLI::IsMember({"beta", "posterior"}));
  cmd->add_option("--n", args->n, "Number of images")->check(CLI::Range(1, 4096));
  cmd->add_option("--seed", args->seed, "Seed of the initial noise");
  cmd->add_option("--out", args->out, "Output PNG grid");
  cmd->add_option("--progression", args->progression,
                  "Also write a strip PNG of x_T -> x_0 for the first images");
  cmd->add_option("--weights", args->weights, "ema (default) or raw")
      ->check(CLI::IsMember({"ema", "raw"}));
  cmd->add_option("--device", args->device, "auto, cpu or cuda")
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  cmd->callback([args] {
    std::string path = args->checkpoint;
    if (path.empty()) {
      const auto latest = CheckpointStore(args->run_dir).latest();
      if (!latest) {
        throw std::runtime_error("--run-dir " + args->run_dir +
                                 ": no checkpoints/LATEST (has training written a checkpoint?)");
      }
      path = *latest;
    }
    const bool cuda = args->device != "cpu" && torch::cuda::is_available();
    if (args->device == "cuda" && !cuda) throw std::runtime_error("--device cuda: no CUDA device");
    const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);

    LoadedCheckpoint checkpoint = LoadedCheckpoint::open(path, device);
    const Config config = parse_config(checkpoint.info().config_yaml, path);
    UNet model(unet_options(config));
    model->to(device);
    checkpoint.load_model(*model);
    if (args->weights == "ema") {
      Ema ema(*model, config.ema.decay);
      checkpoint.load_ema(ema);
      ema.copy_to(*model);
    }
    model->eval();
    const int64_t num_classes = config.model.num_classes;
    if (args->label < -1 || (args->label >= 0 && args->label >= num_classes)) {
      throw std::runtime_error("--class " + std::to_string(args->label) + ": the model has " +
                               std::to_string(num_classes) +
                               " classes (model.num_classes); want -1 or a label below that");
    }
    if (args->guidance != 0.0 && args->label < 0) {
      std::ostringstream message;
      message << "--guidance " << args->guidance
              << ": needs --class K (guidance is towards a class)";
      throw std::runtime_error(message.str());
    }
    torch::NoGradGuard no_grad;

    SamplerOptions options;
    options.kind = parse_sampler_kind(args->sampler);
    options.steps = args->steps;
    options.eta = args->eta;
    options.variance = parse_ddpm_variance(args->variance);
    validate(options, config.diffusion.timesteps);
    const NoiseSchedule schedule = noise_schedule(config);

    // Progression: x_T and evenly spaced intermediate x_t of the first images, ending at x_0.
    std::vector<at::Tensor> frames;
    const int64_t strip_images = std::min(args->strip_images, args->n);
    const int64_t frame_every = std::max<int64_t>(1, options.steps / (args->strip_frames - 1));
    StepCallback on_step;
    if (!args->progression.empty()) {
      on_step = [&](int64_t index, int64_t, const at::Tensor& x) {
        if (index == 0 || (index + 1) % frame_every == 0 || index + 1 == options.steps) {
          frames.push_back(x.narrow(0, 0, strip_images).to(torch::kCPU).clone());
        }
      };
    }
    at::Generator generator = at::detail::createCPUGenerator(static_cast<uint64_t>(args->seed));
    const auto start = std::chrono::steady_clock::now();
    const at::Tensor images = sample(
        as_eps_predictor(
            args->label < 0
                ? ModelFunction([&](const at::Tensor& x, const at::Tensor& t) {
                    return model->forward(x, t);
                  })
                : classifier_free_guidance(
                      [&](const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) {
                        return model->forward(x, t, labels);
                      },
                      args->label, num_classes, args->guidance),
            schedule, parse_prediction(config.model.prediction)),
        schedule,
        {args->n, config.model.in_channels, config.model.image_size, config.model.image_size},
        options, generator, device, on_step);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    write_image_grid(args->out, images);
    std::cout << "wrote " << args->out << ": " << args->n << " images, " << args->sampler << " "
              << options.steps << " steps, " << args->weights << " weights of " << path
              << " (step " << checkpoint.info().step << ") in " << seconds << " s\n";
    if (!args->progression.empty()) {
      write_progression_strip(args->progression, frames);
      std::cout << "wrote " << args->progression << ": " << frames.size() << " frames of "
                << strip_images << " images\n";
    }
  });
}

}  // namespace difftrain::trainer
