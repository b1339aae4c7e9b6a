// Checkpoint loading, predictors and PNG inputs for the generating commands.
#include "trainer/commands/sampling_setup.h"

#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <filesystem>
#include <sstream>
#include <stdexcept>

#include "data/png_io.h"
#include "trainer/checkpoint/checkpoint.h"
#include "trainer/commands/setting_option.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/guidance.h"
#include "trainer/optim/ema.h"

namespace difftrain::trainer {
namespace {

std::string size_of(int64_t channels, int64_t height, int64_t width) {
  return std::to_string(width) + "x" + std::to_string(height) + "x" + std::to_string(channels);
}

// The PNG's pixels as float [C, H, W] in [0, 255].
at::Tensor read_pixels(const std::string& path) {
  data::Image image = data::read_png(path);
  return torch::from_blob(image.pixels.data(), {image.height, image.width, image.channels},
                          torch::kByte)
      .permute({2, 0, 1})
      .to(torch::kFloat);  // copies, so the pixels may go
}

}  // namespace

void add_generation_options(CLI::App* cmd, GenerationArgs* args, const std::string& steps_help,
                            const std::string& seed_help) {
  auto* source = cmd->add_option_group("source", "where the weights come from");
  source->add_option("--run-dir", args->run_dir, "Run directory: its newest checkpoint");
  source->add_option("--checkpoint", args->checkpoint, "A checkpoint file");
  source->require_option(1);
  cmd->add_option("--weights", args->weights, "ema (default) or raw")
      ->check(CLI::IsMember({"ema", "raw"}));
  add_device_option(cmd, &args->device);
  add_setting_option(cmd, "--sampler", &args->sampler, "Sampler (dpmpp2m: DPM-Solver++(2M))");
  cmd->add_option("--steps", args->steps, steps_help);
  cmd->add_option("--eta", args->eta, "DDIM eta in [0,1]; 0 = deterministic");
  cmd->add_option("--churn", args->churn, "heun: EDM's S_churn (>= 0); 0 = deterministic");
  add_setting_option(cmd, "--variance", &args->variance, "DDPM variance");
  cmd->add_option("--seed", args->seed, seed_help);
}

void add_device_option(CLI::App* cmd, DeviceRequest* device) {
  add_setting_option(cmd, "--device", device, "Device (auto: CUDA when present)");
}

SamplerOptions sampler_options(const GenerationArgs& args, int64_t timesteps) {
  SamplerOptions options;
  options.kind = args.sampler;
  options.steps = args.steps;
  options.eta = args.eta;
  options.churn = args.churn;
  options.variance = args.variance;
  validate(options, timesteps);
  return options;
}

std::string resolve_checkpoint(const std::string& run_dir, const std::string& checkpoint) {
  if (!checkpoint.empty()) return checkpoint;
  const auto latest = CheckpointStore(run_dir).latest();
  if (!latest) {
    throw std::runtime_error("--run-dir " + run_dir +
                             ": no checkpoints/LATEST (has training written a checkpoint?)");
  }
  return *latest;
}

c10::Device resolve_device(DeviceRequest request) {
  const bool cuda = request != DeviceRequest::kCpu && torch::cuda::is_available();
  if (request == DeviceRequest::kCuda && !cuda) {
    throw std::runtime_error("--device cuda: no CUDA device");
  }
  return cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
}

SamplingModel load_sampling_model(const std::string& path, const std::string& weights,
                                  const c10::Device& device) {
  LoadedCheckpoint checkpoint = LoadedCheckpoint::open(path, device);
  SamplingModel result{parse_config(checkpoint.info().config_yaml, path), nullptr,
                       checkpoint.info().step};
  result.model = UNet(unet_options(result.config));
  result.model->to(device);
  checkpoint.load_model(*result.model);
  if (weights == "ema") {
    Ema ema(*result.model, result.config.ema.decay);
    checkpoint.load_ema(ema);
    ema.copy_to(*result.model);
  }
  result.model->eval();
  return result;
}

EpsPredictor model_predictor(const SamplingModel& model, int64_t label, double guidance) {
  UNet unet = model.model;  // a shared handle: the lambdas keep the module alive
  const Config& config = model.config;
  const int64_t num_classes = config.model.num_classes;
  if (label < -1 || (label >= 0 && label >= num_classes)) {
    throw std::runtime_error("--class " + std::to_string(label) + ": the model has " +
                             std::to_string(num_classes) +
                             " classes (model.num_classes); want -1 or a label below that");
  }
  if (guidance != 0.0 && label < 0) {
    std::ostringstream message;
    message << "--guidance " << guidance << ": needs --class K (guidance is towards a class)";
    throw std::runtime_error(message.str());
  }
  ModelFunction function =
      label < 0
          ? ModelFunction([unet](const at::Tensor& x, const at::Tensor& t) mutable {
              return unet->forward(x, t);
            })
          : classifier_free_guidance(
                [unet](const at::Tensor& x, const at::Tensor& t, const at::Tensor& labels) mutable {
                  return unet->forward(x, t, labels);
                },
                label, num_classes, guidance);
  return network_predictor(std::move(function), config);
}

void require_output_folder(const std::string& option, const std::string& path) {
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent)) {
    throw std::runtime_error(option + " " + path + ": folder " + parent.string() +
                             " does not exist");
  }
}

// The header is checked before the pixels are decoded: a huge PNG costs nothing.
at::Tensor read_model_image(const std::string& option, const std::string& path, int64_t channels,
                            int64_t size) {
  const data::PngInfo info = data::read_png_info(path);
  if (info.channels != channels || info.height != size || info.width != size) {
    throw std::runtime_error(
        option + " " + path + ": " + size_of(info.channels, info.height, info.width) +
        " (width x height x channels); the model wants " + size_of(channels, size, size));
  }
  return read_pixels(path) / 127.5 - 1.0;
}

at::Tensor read_fill_mask(const std::string& option, const std::string& path, int64_t size) {
  const data::PngInfo info = data::read_png_info(path);
  if (info.height != size || info.width != size) {
    throw std::runtime_error(option + " " + path + ": " + std::to_string(info.width) + "x" +
                             std::to_string(info.height) + " pixels; the model's images are " +
                             std::to_string(size) + "x" + std::to_string(size));
  }
  return read_pixels(path).mean(0, /*keepdim=*/true).ge(128.0).to(torch::kFloat);
}

}  // namespace difftrain::trainer
