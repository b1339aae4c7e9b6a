// Writing DDPMPipeline folders and reading UNet2DModel folders; see diffusers_folder.h.
#include "trainer/export/diffusers_folder.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "trainer/export/diffusers_unet.h"
#include "trainer/export/safetensors.h"

namespace difftrain::trainer {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kWeightsFile = "diffusion_pytorch_model.safetensors";

void write_json(const fs::path& path, const json& value) {
  std::ofstream out(path);
  out << value.dump(2) << '\n';
  out.close();
  if (!out) throw std::runtime_error(path.string() + ": write failed");
}

json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path.string() + ": cannot open file");
  try {
    return json::parse(in);
  } catch (const json::exception&) {
    throw std::runtime_error(path.string() + ": not valid JSON");
  }
}

}  // namespace

json diffusers_scheduler_config(const Config& config) {
  const bool linear = config.diffusion.schedule == BetaSchedule::kLinear;
  return {
      {"_class_name", "DDPMScheduler"},
      {"_diffusers_version", kDiffusersVersion},
      {"num_train_timesteps", config.diffusion.timesteps},
      {"beta_schedule", linear ? "linear" : "squaredcos_cap_v2"},
      {"beta_start", config.diffusion.beta_start},
      {"beta_end", config.diffusion.beta_end},
      {"trained_betas", nullptr},
      {"variance_type",
       config.sample.ddpm_variance == DdpmVariance::kBeta ? "fixed_large" : "fixed_small"},
      {"clip_sample", true},
      {"clip_sample_range", 1.0},
      {"prediction_type", config.model.prediction == Prediction::kEps ? "epsilon" : "v_prediction"},
      {"thresholding", false},
      {"timestep_spacing", "leading"},
      {"steps_offset", 0},
      {"rescale_betas_zero_snr", false}};
}

void write_diffusers_pipeline(const std::string& out_dir, UNetImpl& model, const Config& config) {
  const fs::path out(out_dir);
  if (fs::exists(out)) {
    throw std::runtime_error("--out " + out_dir +
                             ": already exists; export writes a new folder (remove it or pick "
                             "another name)");
  }
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(parent)) {
    throw std::runtime_error("--out " + out_dir + ": folder " + parent.string() +
                             " does not exist");
  }
  // Everything that can refuse the model runs before anything touches the disk.
  if (config.diffusion.formulation != Formulation::kDdpm) {
    throw std::runtime_error(
        "diffusion.formulation = " + setting_name(config.diffusion.formulation) +
        ": diffusers' UNet2DModel + DDPMScheduler cannot hold EDM's preconditioning (c_skip, "
        "c_out, c_in, c_noise); only ddpm-formulation models export");
  }
  const json unet_config = diffusers_unet_config(model.options());
  const json scheduler_config = diffusers_scheduler_config(config);
  const std::string weights = encode_safetensors(diffusers_state(model));

  const fs::path temp = parent / (out.filename().string() + ".tmp-" + std::to_string(::getpid()));
  try {
    fs::remove_all(temp);
    fs::create_directories(temp / "unet");
    fs::create_directories(temp / "scheduler");
    write_json(temp / "model_index.json", {{"_class_name", "DDPMPipeline"},
                                           {"_diffusers_version", kDiffusersVersion},
                                           {"scheduler", {"diffusers", "DDPMScheduler"}},
                                           {"unet", {"diffusers", "UNet2DModel"}}});
    write_json(temp / "unet" / "config.json", unet_config);
    write_json(temp / "scheduler" / "scheduler_config.json", scheduler_config);
    std::ofstream file(temp / "unet" / kWeightsFile, std::ios::binary);
    file.write(weights.data(), static_cast<std::streamsize>(weights.size()));
    file.close();
    if (!file) throw std::runtime_error((temp / "unet" / kWeightsFile).string() + ": write failed");
    fs::rename(temp, out);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(temp, ignored);
    throw;
  }
}

std::string find_diffusers_unet_folder(const std::string& dir) {
  const fs::path root(dir);
  if (!fs::is_directory(root)) {
    throw std::runtime_error("--diffusers " + dir + ": no such folder");
  }
  if (fs::exists(root / "unet" / "config.json")) return (root / "unet").string();
  if (fs::exists(root / "config.json")) return root.string();
  throw std::runtime_error("--diffusers " + dir +
                           ": not a diffusers model folder (no unet/config.json or config.json)");
}

void read_diffusers_unet(const std::string& unet_dir, UNetImpl& model) {
  const fs::path dir(unet_dir);
  const fs::path config_path = dir / "config.json";
  const json config = read_json(config_path);
  if (!config.is_object() || config.value("_class_name", "") != "UNet2DModel") {
    throw std::runtime_error(config_path.string() + ": _class_name is " +
                             (config.is_object() && config.contains("_class_name")
                                  ? config["_class_name"].dump()
                                  : std::string("missing")) +
                             ", want \"UNet2DModel\"");
  }
  check_diffusers_unet_config(config, model.options(), config_path.string());
  const fs::path weights = dir / kWeightsFile;
  if (!fs::exists(weights)) {
    throw std::runtime_error(
        weights.string() + ": missing" +
        (fs::exists(dir / "diffusion_pytorch_model.bin")
             ? " (only the pickled .bin is there: save it with safe_serialization=True)"
             : std::string()));
  }
  load_diffusers_state(model, read_safetensors(weights.string()), weights.string());
}

}  // namespace difftrain::trainer
