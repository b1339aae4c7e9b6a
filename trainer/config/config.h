// Run configuration: every key with its default, its documentation and its check, in one
// table that drives YAML parsing, `--set` overrides, validation, the resolved-config dump and
// the README's key table.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "trainer/config/settings.h"

namespace YAML {
class Node;
}

namespace difftrain::trainer {

struct Config {
  struct Data {
    std::string dir = "runs/data/fashion-mnist";
    int64_t prefetch_batches = 4;
    bool verify = true;  // train re-hashes the shards' images against index.json at start
    bool hflip = false;  // random horizontal flips of the training images
  } data;
  struct Model {
    int64_t in_channels = 1;
    int64_t image_size = 32;
    int64_t channels = 64;
    std::vector<int64_t> channel_mult = {1, 2, 2};
    int64_t num_res_blocks = 2;
    std::vector<int64_t> attention_resolutions = {16};
    double dropout = 0.1;
    Prediction prediction = Prediction::kEps;
    int64_t num_classes = 0;
    double label_dropout = 0.1;
  } model;
  struct Diffusion {
    BetaSchedule schedule = BetaSchedule::kLinear;
    int64_t timesteps = 1000;
    double beta_start = 1e-4;
    double beta_end = 0.02;
    Formulation formulation = Formulation::kDdpm;
    double sigma_data = 0.5;   // EDM: the data's standard deviation
    double sigma_min = 0.002;  // EDM: the sampler's noise-level range and grid exponent
    double sigma_max = 80.0;
    double rho = 7.0;
  } diffusion;
  struct Train {
    int64_t steps = 10000;
    int64_t batch_size = 64;
    double lr = 2e-4;
    int64_t warmup_steps = 500;
    LrDecay lr_decay = LrDecay::kNone;
    double grad_clip = 1.0;
    double weight_decay = 0.0;
    double adam_beta1 = 0.9;
    double adam_beta2 = 0.999;
    double adam_eps = 1e-8;
    int64_t seed = 0;
    int64_t threads = 0;
    double log_interval_s = 5.0;
    DeviceRequest device = DeviceRequest::kAuto;
    int64_t grad_accum_steps = 1;
    int64_t noise_draws = 1;  // samples (timestep and noise) per image per step
    Precision precision = Precision::kFp32;
    LossWeighting loss_weighting = LossWeighting::kNone;
    double min_snr_gamma = 5.0;
    TimestepSampling timestep_sampling = TimestepSampling::kUniform;
    double lognormal_mean = -1.2;  // of ln(sigma), sigma = sqrt((1 - abar) / abar)
    double lognormal_std = 1.2;
    int64_t max_bad_steps = 10;
    std::string time_limit;
    bool cuda_graph = false;
    bool channels_last = false;
  } train;
  struct Ema {
    double decay = 0.9999;
    double std = 0.0;  // > 0: EDM2's power-function EMA of this relative width instead of decay
  } ema;
  struct Checkpoint {
    int64_t every_steps = 1000;
    double every_minutes = 30.0;
    int64_t keep = 3;
    int64_t keep_every = 0;
  } checkpoint;
  struct Sample {
    SamplerKind sampler = SamplerKind::kDdim;
    int64_t steps = 50;
    double eta = 0.0;
    DdpmVariance ddpm_variance = DdpmVariance::kBeta;
    double churn = 0.0;  // heun: EDM's S_churn (0 = deterministic)
    int64_t n = 64;
    int64_t seed = 0;
    int64_t every_steps = 0;
    int64_t batch_size = 0;  // 0 = default_sample_chunk(device)
  } sample;
  struct Monitoring {
    int64_t port = 0;
    std::string bind = "0.0.0.0";
    std::string targets_file;
    std::string run_name;
  } monitoring;
  struct Dist {
    Backend backend = Backend::kAuto;
    double bucket_mb = 25.0;
    double timeout_s = 300.0;
  } dist;
};

// Whether a run resumed from a checkpoint may change a key: the model's shape and the diffusion
// process it learns must match the checkpoint's; the rest (learning rate, steps, logging, ...)
// may change, and a change is logged.
enum class OnResume { kMustMatch, kMayChange };

// One documented config key.
struct ConfigKey {
  std::string name;                                     // dotted, e.g. "train.lr"
  std::string type;                                     // "int", "float", "string", "int list"
  std::string doc;                                      // one line for the README table
  std::function<void(Config&, const YAML::Node&)> set;  // throws with the bad value
  std::function<std::string(const Config&)> get;        // value as YAML text
  std::function<std::string(const Config&)> check;      // "" when valid, else why not
  OnResume on_resume = OnResume::kMayChange;
};

// Every key, in documentation order.
const std::vector<ConfigKey>& config_keys();

// Loads `path` (empty = defaults only), applies `overrides` ("key=value", value parsed as YAML
// so lists work: model.channel_mult=[1,2]), then validates. Errors name the file, key and value:
// "configs/x.yaml: unknown key 'train.lrr'", "--set train.lr=-1: must be > 0".
Config load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Parses YAML text (a resolved config stored in a checkpoint); `origin` names it in errors.
Config parse_config(const std::string& yaml_text, const std::string& origin);

// The resolved config as YAML with every key (what `train` writes to run-dir/config.yaml).
std::string to_yaml(const Config& config);

// "[D-]HH:MM:SS", "MM:SS" or plain seconds → seconds; "" → 0 (no limit). Throws on bad text.
double parse_time_limit_s(const std::string& text);

// Markdown table of all keys with defaults and documentation (README source of truth).
std::string config_markdown_table();

}  // namespace difftrain::trainer
