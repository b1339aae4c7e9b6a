// diffusers folders on disk: a DDPMPipeline folder written from a difftrain model
// (model_index.json, unet/, scheduler/) and a UNet2DModel folder read back into one. Local files
// only: nothing is downloaded.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "trainer/config/config.h"
#include "trainer/model/unet.h"

namespace difftrain::trainer {

// scheduler/scheduler_config.json of a DDPMScheduler with the run's process: num_train_timesteps,
// betas ("linear" with beta_start/beta_end, or "squaredcos_cap_v2", which diffusers computes
// with the same formula and clip as our cosine schedule), prediction_type "epsilon" or
// "v_prediction", clip_sample true with range 1 (difftrain's samplers clip x0 to [-1, 1]) and
// variance_type per sample.ddpm_variance ("fixed_large" = beta, "fixed_small" = posterior).
nlohmann::json diffusers_scheduler_config(const Config& config);

// Writes the DDPMPipeline folder `out_dir` for `model` (weights as they are now) and `config`.
// `out_dir` must not exist and its parent must; everything is written into a temporary sibling
// folder that is renamed into place, so on any error (a model UNet2DModel cannot express, a
// full disk) nothing is left at `out_dir`. Throws std::runtime_error with one line.
void write_diffusers_pipeline(const std::string& out_dir, UNetImpl& model, const Config& config);

// The UNet2DModel folder inside `dir`: `dir`/unet when it holds config.json (a pipeline
// folder), else `dir` itself when it holds config.json (a model folder). Throws
// std::runtime_error "<dir>: not a diffusers model folder (...)" otherwise.
std::string find_diffusers_unet_folder(const std::string& dir);

// Loads the UNet2DModel folder `unet_dir` (config.json and diffusion_pytorch_model.safetensors)
// into `model`, after checking that its config and every tensor's name and shape match the
// network `model` was built as. Throws std::runtime_error naming the file and what differs;
// `model` is unchanged then.
void read_diffusers_unet(const std::string& unet_dir, UNetImpl& model);

}  // namespace difftrain::trainer
