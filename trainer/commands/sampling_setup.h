// What the generating commands (`sample`, `denoise`, `eval`) share: their common options, a
// checkpoint's weights as an eps-predictor, and PNG files as image and mask tensors checked
// against the model.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "trainer/config/config.h"
#include "trainer/diffusion/prediction.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/model/unet.h"

namespace CLI {
class App;
}

namespace difftrain::trainer {

// The options of a command that generates from one checkpoint's weights with a sampler.
struct GenerationArgs {
  std::string run_dir, checkpoint;  // exactly one is given
  std::string weights = "ema";
  DeviceRequest device = DeviceRequest::kAuto;
  SamplerKind sampler = SamplerKind::kDdim;
  DdpmVariance variance = DdpmVariance::kBeta;
  int64_t steps = 50, seed = 0;
  double eta = 0.0;
  double churn = 0.0;
};

// Adds --run-dir / --checkpoint (exactly one), --weights, --device, --sampler, --steps (with
// `steps_help`), --eta, --churn, --variance and --seed (with `seed_help`) to `cmd`, writing into
// `args` (which must outlive the command).
void add_generation_options(CLI::App* cmd, GenerationArgs* args, const std::string& steps_help,
                            const std::string& seed_help);

// --device auto|cpu|cuda, writing into `device`.
void add_device_option(CLI::App* cmd, DeviceRequest* device);

// The sampler that args name, validated against `timesteps` (throws naming the value).
SamplerOptions sampler_options(const GenerationArgs& args, int64_t timesteps);

// --checkpoint FILE, or else the newest checkpoint of --run-dir DIR (error naming the dir if it
// has none).
std::string resolve_checkpoint(const std::string& run_dir, const std::string& checkpoint);

// An output file's folder must exist (commands never create folders the user named): throws
// "--out PATH: folder F does not exist". Called before any work, so a typo costs nothing.
void require_output_folder(const std::string& option, const std::string& path);

// kAuto: CUDA when available, else the CPU; kCuda throws when there is no CUDA device.
c10::Device resolve_device(DeviceRequest request);

// A checkpoint's U-Net in eval mode, with its EMA weights (weights == "ema") or raw ones.
struct SamplingModel {
  Config config;
  UNet model{nullptr};
  int64_t step = 0;  // optimizer steps of the checkpoint
};
SamplingModel load_sampling_model(const std::string& path, const std::string& weights,
                                  const c10::Device& device);

// The model's eps-predictor, unconditional (label < 0) or for class `label` with classifier-free
// guidance w. Shares the module with `model` (not thread-safe, like the module).
EpsPredictor model_predictor(const SamplingModel& model, int64_t label = -1, double guidance = 0.0);

// A PNG as float [C, H, W] in [-1, 1] (pixel p -> p / 127.5 - 1, which to_uint8_hwc() maps back
// to p exactly). Throws std::runtime_error naming `option`, the file and both sizes unless it is
// channels x size x size (an RGB file for a 1-channel model, or grey for 3, is an error).
at::Tensor read_model_image(const std::string& option, const std::string& path, int64_t channels,
                            int64_t size);

// A mask PNG (grey or RGB; a pixel's value is its channels' mean) as float [1, size, size]:
// 1 where the value is >= 128 (white: generate), 0 elsewhere (black: keep). Throws naming
// `option`, the file and both sizes unless it is size x size.
at::Tensor read_fill_mask(const std::string& option, const std::string& path, int64_t size);

}  // namespace difftrain::trainer
