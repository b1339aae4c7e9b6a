// The config table: every key with its type, default, documentation, check and resume rule.
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "trainer/common/text.h"
#include "trainer/config/config.h"

namespace difftrain::trainer {
namespace {

// A value as YAML text; doubles in the shortest form that reads back exactly ("0.1").
template <typename T>
std::string yaml_text(const T& value) {
  if constexpr (std::is_same_v<T, double>) {
    return format_double(value);
  } else {
    YAML::Emitter out;
    out << YAML::Flow << value;
    return out.c_str();
  }
}

template <typename T>
T convert(const YAML::Node& node, const std::string& type) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    std::string text = node.IsScalar() ? node.Scalar() : YAML::Dump(node);
    throw std::runtime_error("'" + text + "' is not " + type);
  }
}

using Check = std::function<std::string(const Config&)>;

// Builds a key whose value is `field(config)`; `check` returns "" when the value is valid.
template <typename T, typename Field>
ConfigKey make_key(std::string name, std::string type, std::string doc, Field field, Check check,
                   OnResume on_resume = OnResume::kMayChange) {
  ConfigKey key;
  key.name = std::move(name);
  key.type = type;
  key.doc = std::move(doc);
  key.set = [field, type](Config& c, const YAML::Node& node) {
    if (!node.IsScalar() && !std::is_same_v<T, std::vector<int64_t>>) {
      throw std::runtime_error("expected a single " + type + " value");
    }
    field(c) = convert<T>(node, type == "int list" ? "a list of integers" : "a " + type);
    if constexpr (std::is_same_v<T, double>) {
      // YAML reads .inf and .nan as numbers; no key means anything by them.
      if (!std::isfinite(field(c))) {
        throw std::runtime_error("'" + node.Scalar() + "' is not a finite number");
      }
    }
  };
  key.get = [field](const Config& c) { return yaml_text(field(const_cast<Config&>(c))); };
  key.check = std::move(check);
  key.on_resume = on_resume;
  return key;
}

// A key holding one of E's values, named as trainer/config/settings.h names them; its
// documentation ends with the choices.
template <typename E, typename Field>
ConfigKey make_setting_key(std::string name, std::string doc, Field field,
                           OnResume on_resume = OnResume::kMayChange,
                           std::function<std::string(const Config&)> check = {}) {
  ConfigKey key;
  key.name = std::move(name);
  key.type = "string";
  key.doc = std::move(doc) + " One of " + setting_choices<E>("`") + ".";
  key.set = [field, name = key.name](Config& c, const YAML::Node& node) {
    if (!node.IsScalar()) throw std::runtime_error("expected one of " + setting_choices<E>());
    const std::string text = node.Scalar();
    for (const auto& entry : SettingNames<E>::kAll) {
      if (text == entry.name) {
        field(c) = entry.value;
        return;
      }
    }
    throw std::runtime_error("'" + text + "' is not one of " + setting_choices<E>());
  };
  key.get = [field](const Config& c) { return setting_name(field(const_cast<Config&>(c))); };
  key.check = check ? std::move(check) : [](const Config&) { return std::string(); };
  key.on_resume = on_resume;
  return key;
}

// The model's shape is checked as a whole by validate(UNetOptions) (model/unet.h), once every
// key is read: see check_model_shape().
std::string shape_checked_by_model(const Config&) { return ""; }

std::string positive(double v) { return v > 0 ? "" : "must be > 0"; }
std::string non_negative(double v) { return v >= 0 ? "" : "must be >= 0"; }
std::vector<ConfigKey> build_keys() {
  std::vector<ConfigKey> k;
  // data
  k.push_back(make_key<std::string>(
      "data.dir", "string",
      "Dataset directory made by `difftrain prepare` (holds index.json and shards).",
      [](Config & c) -> auto& { return c.data.dir; },
      [](const Config& c) { return c.data.dir.empty() ? "must not be empty" : ""; }));
  k.push_back(make_key<int64_t>(
      "data.prefetch_batches", "int", "Batches each rank's prefetch thread reads ahead.",
      [](Config & c) -> auto& { return c.data.prefetch_batches; },
      [](const Config& c) {
        return c.data.prefetch_batches >= 1 && c.data.prefetch_batches <= 64 ? ""
                                                                             : "must be in [1, 64]";
      }));
  k.push_back(make_key<bool>(
      "data.verify", "bool",
      "At start, train re-hashes every shard's images (the ranks share the shards) and stops "
      "naming a shard whose SHA-256 differs from index.json. Turn off for data sets too large to "
      "hash at each start; the log then says the shards are not verified.",
      [](Config & c) -> auto& { return c.data.verify; },
      [](const Config&) { return std::string(); }));
  k.push_back(make_key<bool>(
      "data.hflip", "bool",
      "Flip each training image left-right with probability 1/2 (the DDPM paper's CIFAR-10 "
      "recipe); drawn per sample from the step's seed, so a resumed run flips the same images.",
      [](Config & c) -> auto& { return c.data.hflip; },
      [](const Config&) { return std::string(); }));
  // model
  k.push_back(make_key<int64_t>(
      "model.in_channels", "int",
      "Image channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA); must match the dataset.",
      [](Config & c) -> auto& { return c.model.in_channels; }, shape_checked_by_model,
      OnResume::kMustMatch));
  k.push_back(make_key<int64_t>(
      "model.image_size", "int",
      "Image height = width in pixels; must match the dataset (prepare --pad-to) and be a "
      "multiple of 2^(levels-1).",
      [](Config & c) -> auto& { return c.model.image_size; }, shape_checked_by_model,
      OnResume::kMustMatch));
  k.push_back(make_key<int64_t>(
      "model.channels", "int",
      "U-Net base width; a multiple of 32 (GroupNorm(32)), as is then every level's width.",
      [](Config & c) -> auto& { return c.model.channels; }, shape_checked_by_model,
      OnResume::kMustMatch));
  k.push_back(make_key<std::vector<int64_t>>(
      "model.channel_mult", "int list",
      "Width multiplier per resolution level; its length is the number of levels.",
      [](Config & c) -> auto& { return c.model.channel_mult; }, shape_checked_by_model,
      OnResume::kMustMatch));
  k.push_back(make_key<int64_t>(
      "model.num_res_blocks", "int",
      "Residual blocks per level (the decoder has one more per level).",
      [](Config & c) -> auto& { return c.model.num_res_blocks; }, shape_checked_by_model,
      OnResume::kMustMatch));
  k.push_back(make_key<std::vector<int64_t>>(
      "model.attention_resolutions", "int list",
      "Feature-map sizes (level resolutions, e.g. 16) at which self-attention follows each "
      "residual block.",
      [](Config & c) -> auto& { return c.model.attention_resolutions; }, shape_checked_by_model,
      OnResume::kMustMatch));
  k.push_back(make_key<double>(
      "model.dropout", "float", "Dropout inside residual blocks, in [0, 1).",
      [](Config & c) -> auto& { return c.model.dropout; }, shape_checked_by_model));
  k.push_back(make_setting_key<Prediction>(
      "model.prediction",
      "What the network predicts: `eps` (the noise) or `v` = sqrt(abar) eps - sqrt(1-abar) x0 "
      "(Salimans & Ho 2022); every sampler works with both.",
      [](Config & c) -> auto& { return c.model.prediction; }, OnResume::kMustMatch));
  k.push_back(make_key<int64_t>(
      "model.num_classes", "int",
      "Class-conditional model over this many labels (the dataset's label count); 0 = "
      "unconditional.",
      [](Config & c) -> auto& { return c.model.num_classes; }, shape_checked_by_model,
      OnResume::kMustMatch));
  k.push_back(make_key<double>(
      "model.label_dropout", "float",
      "Probability of training a sample with no label, so that one model also makes the "
      "unconditional prediction classifier-free guidance needs (used when model.num_classes > 0).",
      [](Config & c) -> auto& { return c.model.label_dropout; },
      [](const Config& c) {
        return c.model.label_dropout >= 0 && c.model.label_dropout <= 1 ? "" : "must be in [0, 1]";
      }));
  // diffusion
  k.push_back(make_setting_key<BetaSchedule>(
      "diffusion.schedule",
      "Noise schedule: linear (Ho et al. 2020) or cosine (Nichol & Dhariwal 2021).",
      [](Config & c) -> auto& { return c.diffusion.schedule; }, OnResume::kMustMatch));
  k.push_back(make_key<int64_t>(
      "diffusion.timesteps", "int", "Diffusion steps T.",
      [](Config & c) -> auto& { return c.diffusion.timesteps; },
      [](const Config& c) {
        return c.diffusion.timesteps >= 1 && c.diffusion.timesteps <= 100000
                   ? ""
                   : "must be in [1, 100000]";
      },
      OnResume::kMustMatch));
  k.push_back(make_key<double>(
      "diffusion.beta_start", "float", "Linear schedule: beta_1.",
      [](Config & c) -> auto& { return c.diffusion.beta_start; },
      [](const Config& c) {
        return c.diffusion.beta_start > 0 && c.diffusion.beta_start < 1 ? "" : "must be in (0, 1)";
      },
      OnResume::kMustMatch));
  k.push_back(make_key<double>(
      "diffusion.beta_end", "float", "Linear schedule: beta_T.",
      [](Config & c) -> auto& { return c.diffusion.beta_end; },
      [](const Config& c) {
        return c.diffusion.beta_end >= c.diffusion.beta_start && c.diffusion.beta_end < 1
                   ? ""
                   : "must be in [diffusion.beta_start, 1)";
      },
      OnResume::kMustMatch));
  k.push_back(make_setting_key<Formulation>(
      "diffusion.formulation",
      "`ddpm`: the network predicts model.prediction at discrete timesteps of diffusion.schedule. "
      "`edm` (Karras et al. 2022): x = x0 + sigma n over continuous sigma, the denoiser "
      "D = c_skip x + c_out F(c_in x, ln(sigma) / 4), loss weight 1 on F, noise levels from "
      "train.lognormal_*; every sampler works with it (ddpm/ddim/dpmpp2m at the schedule's "
      "sigmas), `heun` only with it.",
      [](Config & c) -> auto& { return c.diffusion.formulation; }, OnResume::kMustMatch,
      [](const Config& c) -> std::string {
        if (c.diffusion.formulation != Formulation::kEdm) return "";
        if (c.model.prediction != Prediction::kEps) {
          return "needs model.prediction = eps (EDM's network output is its own F, not eps or v)";
        }
        if (c.train.loss_weighting != LossWeighting::kNone) {
          return "needs train.loss_weighting = none (EDM weights its loss by lambda(sigma))";
        }
        if (c.train.timestep_sampling != TimestepSampling::kLogNormal) {
          return "needs train.timestep_sampling = lognormal (EDM's training noise levels)";
        }
        return "";
      }));
  k.push_back(make_key<double>(
      "diffusion.sigma_data", "float",
      "EDM: standard deviation of the data (images in [-1, 1]: 0.5).",
      [](Config & c) -> auto& { return c.diffusion.sigma_data; },
      [](const Config& c) { return positive(c.diffusion.sigma_data); }, OnResume::kMustMatch));
  k.push_back(make_key<double>(
      "diffusion.sigma_min", "float", "EDM: the smallest noise level the heun sampler visits.",
      [](Config & c) -> auto& { return c.diffusion.sigma_min; },
      [](const Config& c) { return positive(c.diffusion.sigma_min); }));
  k.push_back(make_key<double>(
      "diffusion.sigma_max", "float", "EDM: the noise level the heun sampler starts from.",
      [](Config & c) -> auto& { return c.diffusion.sigma_max; },
      [](const Config& c) {
        return c.diffusion.sigma_max > c.diffusion.sigma_min ? "" : "must be > diffusion.sigma_min";
      }));
  k.push_back(make_key<double>(
      "diffusion.rho", "float",
      "EDM: the heun sampler's noise levels are evenly spaced in sigma^(1/rho) (paper: 7).",
      [](Config & c) -> auto& { return c.diffusion.rho; },
      [](const Config& c) { return positive(c.diffusion.rho); }));
  // train
  k.push_back(make_key<int64_t>(
      "train.steps", "int", "Optimizer steps of the whole run.",
      [](Config & c) -> auto& { return c.train.steps; },
      [](const Config& c) { return c.train.steps >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<int64_t>(
      "train.batch_size", "int", "Images per rank per step (global batch = batch_size x ranks).",
      [](Config & c) -> auto& { return c.train.batch_size; },
      [](const Config& c) { return c.train.batch_size >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<double>(
      "train.lr", "float", "AdamW peak learning rate.",
      [](Config & c) -> auto& { return c.train.lr; },
      [](const Config& c) { return positive(c.train.lr); }));
  k.push_back(make_key<int64_t>(
      "train.warmup_steps", "int",
      "Linear learning-rate warm-up from 0 over this many steps, then constant.",
      [](Config & c) -> auto& { return c.train.warmup_steps; },
      [](const Config& c) { return non_negative(static_cast<double>(c.train.warmup_steps)); }));
  k.push_back(make_setting_key<LrDecay>(
      "train.lr_decay",
      "After the warm-up: `none` keeps train.lr; `cosine` lowers it along half a cosine to 0 at "
      "train.steps (a resumed run with other train.steps follows the new curve).",
      [](Config & c) -> auto& { return c.train.lr_decay; }));
  k.push_back(make_key<double>(
      "train.grad_clip", "float", "Clip the global gradient norm to this value (0 = no clipping).",
      [](Config & c) -> auto& { return c.train.grad_clip; },
      [](const Config& c) { return non_negative(c.train.grad_clip); }));
  k.push_back(make_key<double>(
      "train.weight_decay", "float", "AdamW decoupled weight decay.",
      [](Config & c) -> auto& { return c.train.weight_decay; },
      [](const Config& c) { return non_negative(c.train.weight_decay); }));
  k.push_back(make_key<double>(
      "train.adam_beta1", "float", "AdamW beta1.",
      [](Config & c) -> auto& { return c.train.adam_beta1; },
      [](const Config& c) {
        return c.train.adam_beta1 >= 0 && c.train.adam_beta1 < 1 ? "" : "must be in [0, 1)";
      }));
  k.push_back(make_key<double>(
      "train.adam_beta2", "float", "AdamW beta2.",
      [](Config & c) -> auto& { return c.train.adam_beta2; },
      [](const Config& c) {
        return c.train.adam_beta2 >= 0 && c.train.adam_beta2 < 1 ? "" : "must be in [0, 1)";
      }));
  k.push_back(make_key<double>(
      "train.adam_eps", "float", "AdamW epsilon.",
      [](Config & c) -> auto& { return c.train.adam_eps; },
      [](const Config& c) { return positive(c.train.adam_eps); }));
  k.push_back(make_key<int64_t>(
      "train.seed", "int", "Seed of the weights, the sample order and every step's noise.",
      [](Config & c) -> auto& { return c.train.seed; },
      [](const Config& c) { return non_negative(static_cast<double>(c.train.seed)); }));
  k.push_back(make_key<int64_t>(
      "train.threads", "int",
      "CPU intra-op threads per rank (0 = the node's cores / ranks on the node).",
      [](Config & c) -> auto& { return c.train.threads; },
      [](const Config& c) { return non_negative(static_cast<double>(c.train.threads)); }));
  k.push_back(make_key<double>(
      "train.log_interval_s", "float",
      "Seconds between progress lines (step, loss, images/s, ETA).",
      [](Config & c) -> auto& { return c.train.log_interval_s; },
      [](const Config& c) { return positive(c.train.log_interval_s); }));
  k.push_back(make_setting_key<DeviceRequest>(
      "train.device", "`auto`: CUDA when present, else CPU; rank r uses cuda:(local rank).",
      [](Config & c) -> auto& { return c.train.device; }));
  k.push_back(make_key<int64_t>(
      "train.grad_accum_steps", "int",
      "Micro-batches per optimizer step; gradients are all-reduced only on the last one.",
      [](Config & c) -> auto& { return c.train.grad_accum_steps; },
      [](const Config& c) { return c.train.grad_accum_steps >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<int64_t>(
      "train.noise_draws", "int",
      "Training samples per image: each image of a step is noised this many times, each with its "
      "own timestep and noise (the same images, this many times the compute per step).",
      [](Config & c) -> auto& { return c.train.noise_draws; },
      [](const Config& c) { return c.train.noise_draws >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_setting_key<Precision>(
      "train.precision",
      "`bf16`: autocast of the U-Net forward to bfloat16 (CUDA; also CPU), with fp32 master "
      "weights, loss, gradients and all-reduce.",
      [](Config & c) -> auto& { return c.train.precision; }));
  k.push_back(make_setting_key<LossWeighting>(
      "train.loss_weighting",
      "Per-sample loss weight: `none` (L_simple), or `min_snr`: min(SNR, gamma) / SNR for eps "
      "and min(SNR, gamma) / (SNR + 1) for v, SNR = abar / (1 - abar) (Hang et al. 2023).",
      [](Config & c) -> auto& { return c.train.loss_weighting; }));
  k.push_back(make_key<double>(
      "train.min_snr_gamma", "float", "gamma of `train.loss_weighting: min_snr` (> 0; paper: 5).",
      [](Config & c) -> auto& { return c.train.min_snr_gamma; },
      [](const Config& c) { return c.train.min_snr_gamma > 0 ? "" : "must be > 0"; }));
  k.push_back(make_setting_key<TimestepSampling>(
      "train.timestep_sampling",
      "Training timesteps: `uniform` over [0, T), or `lognormal`: ln(sigma) ~ N(mean, std) "
      "(EDM's training noise levels), sigma = sqrt((1 - abar) / abar), taken to the timestep of "
      "the nearest sigma.",
      [](Config & c) -> auto& { return c.train.timestep_sampling; }));
  k.push_back(make_key<double>(
      "train.lognormal_mean", "float", "Mean of ln(sigma) for `lognormal` timesteps (EDM: -1.2).",
      [](Config & c) -> auto& { return c.train.lognormal_mean; },
      [](const Config&) { return std::string(); }));
  k.push_back(make_key<double>(
      "train.lognormal_std", "float",
      "Standard deviation of ln(sigma) for `lognormal` timesteps (> 0; EDM: 1.2).",
      [](Config & c) -> auto& { return c.train.lognormal_std; },
      [](const Config& c) { return c.train.lognormal_std > 0 ? "" : "must be > 0"; }));
  k.push_back(make_key<int64_t>(
      "train.max_bad_steps", "int",
      "Consecutive non-finite steps (skipped, counted) before the run stops with an error.",
      [](Config & c) -> auto& { return c.train.max_bad_steps; },
      [](const Config& c) { return c.train.max_bad_steps >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<std::string>(
      "train.time_limit", "string",
      "Wall-clock budget of this process (`[D-]HH:MM:SS` or seconds; empty = none): at the "
      "limit it checkpoints and exits 0, like on SIGTERM/SIGUSR1.",
      [](Config & c) -> auto& { return c.train.time_limit; },
      [](const Config& c) -> std::string {
        try {
          parse_time_limit_s(c.train.time_limit);
        } catch (const std::exception& e) {
          return e.what();
        }
        return "";
      }));
  k.push_back(make_key<bool>(
      "train.cuda_graph", "bool",
      "Capture the training step in a CUDA graph after 3 eager steps and replay it (one GPU, "
      "train.grad_accum_steps 1); elsewhere the run logs why not and trains without.",
      [](Config & c) -> auto& { return c.train.cuda_graph; },
      [](const Config&) { return std::string(); }));
  k.push_back(make_key<bool>(
      "train.channels_last", "bool",
      "Keep images, activations and convolution weights channels-last (NHWC) in training and "
      "in its sample grids; on a GPU, bf16 convolutions may run faster. Same model, same "
      "checkpoints.",
      [](Config & c) -> auto& { return c.train.channels_last; },
      [](const Config&) { return std::string(); }));
  // ema
  k.push_back(make_key<double>(
      "ema.decay", "float",
      "EMA decay of the weights used for sampling (warm-up: min(decay, (1+s)/(10+s))).",
      [](Config & c) -> auto& { return c.ema.decay; },
      [](const Config& c) {
        return c.ema.decay >= 0 && c.ema.decay < 1 ? "" : "must be in [0, 1)";
      }));
  k.push_back(make_key<double>(
      "ema.std", "float",
      "0: `ema.decay`. Else EDM2's power-function EMA (Karras et al. 2024) instead: an average "
      "of all weights so far, weighted by step^gamma, whose standard deviation is this fraction "
      "of the run's length at every step (paper: 0.05-0.15; at most 0.2886).",
      [](Config & c) -> auto& { return c.ema.std; },
      [](const Config& c) {
        return c.ema.std == 0 || (c.ema.std > 0 && c.ema.std <= 0.2886)
                   ? ""
                   : "must be 0 or in (0, 0.2886]";
      }));
  // checkpoint
  k.push_back(make_key<int64_t>(
      "checkpoint.every_steps", "int",
      "Write a checkpoint every this many steps (and always at the end).",
      [](Config & c) -> auto& { return c.checkpoint.every_steps; },
      [](const Config& c) { return c.checkpoint.every_steps >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<double>(
      "checkpoint.every_minutes", "float",
      "Also write a checkpoint when this many minutes passed since the last one (0 = off).",
      [](Config & c) -> auto& { return c.checkpoint.every_minutes; },
      [](const Config& c) { return non_negative(c.checkpoint.every_minutes); }));
  k.push_back(make_key<int64_t>(
      "checkpoint.keep", "int",
      "Keep the newest this many checkpoints (older ones are deleted after a new one is safe).",
      [](Config & c) -> auto& { return c.checkpoint.keep; },
      [](const Config& c) { return c.checkpoint.keep >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<int64_t>(
      "checkpoint.keep_every", "int",
      "Also keep every checkpoint whose step is a multiple of this (0 = none).",
      [](Config & c) -> auto& { return c.checkpoint.keep_every; },
      [](const Config& c) { return non_negative(static_cast<double>(c.checkpoint.keep_every)); }));
  // sample
  k.push_back(make_setting_key<SamplerKind>(
      "sample.sampler",
      "Sampler for the end-of-run grid (`dpmpp2m`: DPM-Solver++(2M), for 10-20 steps; `heun`: "
      "EDM's second-order sampler, 2 steps - 1 network calls, diffusion.formulation = edm only).",
      [](Config & c) -> auto& { return c.sample.sampler; }, OnResume::kMayChange,
      [](const Config& c) -> std::string {
        return c.sample.sampler == SamplerKind::kHeun &&
                       c.diffusion.formulation != Formulation::kEdm
                   ? "needs diffusion.formulation = edm"
                   : "";
      }));
  k.push_back(make_key<int64_t>(
      "sample.steps", "int", "Reverse steps of the end-of-run grid (<= diffusion.timesteps).",
      [](Config & c) -> auto& { return c.sample.steps; },
      [](const Config& c) {
        return c.sample.steps >= 1 && c.sample.steps <= c.diffusion.timesteps
                   ? ""
                   : "must be in [1, diffusion.timesteps]";
      }));
  k.push_back(make_key<double>(
      "sample.eta", "float", "DDIM eta in [0, 1]; 0 is deterministic.",
      [](Config & c) -> auto& { return c.sample.eta; },
      [](const Config& c) {
        return c.sample.eta >= 0 && c.sample.eta <= 1 ? "" : "must be in [0, 1]";
      }));
  k.push_back(make_setting_key<DdpmVariance>(
      "sample.ddpm_variance", "DDPM reverse variance: beta_t (`beta`) or beta~_t (`posterior`).",
      [](Config & c) -> auto& { return c.sample.ddpm_variance; }));
  k.push_back(make_key<double>(
      "sample.churn", "float",
      "heun: EDM's S_churn, the noise added back per step (0 = deterministic; paper: 0-80).",
      [](Config & c) -> auto& { return c.sample.churn; },
      [](const Config& c) { return non_negative(c.sample.churn); }));
  k.push_back(make_key<int64_t>(
      "sample.n", "int", "Images in the end-of-run grid.",
      [](Config & c) -> auto& { return c.sample.n; },
      [](const Config& c) {
        return c.sample.n >= 1 && c.sample.n <= 4096 ? "" : "must be in [1, 4096]";
      }));
  k.push_back(make_key<int64_t>(
      "sample.seed", "int", "Seed of the end-of-run grid.",
      [](Config & c) -> auto& { return c.sample.seed; },
      [](const Config& c) { return non_negative(static_cast<double>(c.sample.seed)); }));
  k.push_back(make_key<int64_t>(
      "sample.every_steps", "int",
      "Every this many steps all ranks draw the grid together (same seed each time, EMA "
      "weights) into `<run dir>/samples/step-N.png`; 0 = only the end-of-run grid.",
      [](Config & c) -> auto& { return c.sample.every_steps; },
      [](const Config& c) { return non_negative(static_cast<double>(c.sample.every_steps)); }));
  k.push_back(make_key<int64_t>(
      "sample.batch_size", "int",
      "Images per sampler call when drawing grids; ranks draw whole batches, and the grid is "
      "the same for any rank count with the same batch size. 0 = 8 on a CPU, 128 on a GPU.",
      [](Config & c) -> auto& { return c.sample.batch_size; },
      [](const Config& c) {
        return c.sample.batch_size >= 0 && c.sample.batch_size <= 4096 ? ""
                                                                       : "must be in [0, 4096]";
      }));
  // monitoring
  k.push_back(make_key<int64_t>(
      "monitoring.port", "int",
      "Prometheus /metrics port of each rank: base port + local rank; 0 = any free port; "
      "-1 = no exporter.",
      [](Config & c) -> auto& { return c.monitoring.port; },
      [](const Config& c) {
        return c.monitoring.port >= -1 && c.monitoring.port <= 65535 ? ""
                                                                     : "must be in [-1, 65535]";
      }));
  k.push_back(make_key<std::string>(
      "monitoring.bind", "string",
      "Address the exporters listen on (`0.0.0.0`: reachable by a cluster Prometheus).",
      [](Config & c) -> auto& { return c.monitoring.bind; },
      [](const Config& c) { return c.monitoring.bind.empty() ? "must not be empty" : ""; }));
  k.push_back(make_key<std::string>(
      "monitoring.targets_file", "string",
      "Prometheus file_sd JSON listing every rank's host:port (empty = "
      "<run dir>/prometheus-targets.json).",
      [](Config & c) -> auto& { return c.monitoring.targets_file; },
      [](const Config&) { return std::string(); }));
  k.push_back(make_key<std::string>(
      "monitoring.run_name", "string",
      "Value of the `run` label on every metric (empty = the run directory's name).",
      [](Config & c) -> auto& { return c.monitoring.run_name; },
      [](const Config&) { return std::string(); }));
  // dist
  k.push_back(make_setting_key<Backend>(
      "dist.backend", "Gradient all-reduce backend: `auto` is NCCL on CUDA, else MPI.",
      [](Config & c) -> auto& { return c.dist.backend; }));
  k.push_back(make_key<double>(
      "dist.bucket_mb", "float",
      "Gradient bucket size in MB (one all-reduce per bucket), in (0, 100000].",
      [](Config & c) -> auto& { return c.dist.bucket_mb; },
      [](const Config& c) {
        return c.dist.bucket_mb > 0 && c.dist.bucket_mb <= 1e5 ? "" : "must be in (0, 100000]";
      }));
  k.push_back(make_key<double>(
      "dist.timeout_s", "float",
      "Deadline of every collective; past it the job aborts naming the collective and rank.",
      [](Config & c) -> auto& { return c.dist.timeout_s; },
      [](const Config& c) { return positive(c.dist.timeout_s); }));
  return k;
}

}  // namespace

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = build_keys();
  return keys;
}

}  // namespace difftrain::trainer
