// Config key table, YAML loading, overrides and validation.
#include "trainer/config.h"

#include <yaml-cpp/yaml.h>

#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>

namespace difftrain::trainer {
namespace {

template <typename T>
std::string yaml_text(const T& value) {
  YAML::Emitter out;
  out << YAML::Flow << value;
  return out.c_str();
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
ConfigKey make_key(std::string name, std::string type, std::string doc, Field field, Check check) {
  ConfigKey key;
  key.name = std::move(name);
  key.type = type;
  key.doc = std::move(doc);
  key.set = [field, type](Config& c, const YAML::Node& node) {
    if (!node.IsScalar() && !std::is_same_v<T, std::vector<int64_t>>) {
      throw std::runtime_error("expected a single " + type + " value");
    }
    field(c) = convert<T>(node, type == "int list" ? "a list of integers" : "a " + type);
  };
  key.get = [field](const Config& c) { return yaml_text(field(const_cast<Config&>(c))); };
  key.check = std::move(check);
  return key;
}

std::string positive(double v) { return v > 0 ? "" : "must be > 0"; }
std::string non_negative(double v) { return v >= 0 ? "" : "must be >= 0"; }
std::string one_of(const std::string& v, const std::vector<std::string>& allowed) {
  for (const auto& a : allowed) {
    if (v == a) return "";
  }
  std::string list;
  for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
  return "must be one of " + list;
}

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
  // model
  k.push_back(make_key<int64_t>(
      "model.in_channels", "int", "Image channels (1 grey, 3 RGB); must match the dataset.",
      [](Config & c) -> auto& { return c.model.in_channels; },
      [](const Config& c) {
        return c.model.in_channels >= 1 && c.model.in_channels <= 4 ? "" : "must be in [1, 4]";
      }));
  k.push_back(make_key<int64_t>(
      "model.image_size", "int",
      "Image height = width in pixels; must match the dataset (prepare --pad-to).",
      [](Config & c) -> auto& { return c.model.image_size; },
      [](const Config& c) -> std::string {
        if (c.model.image_size < 4) return "must be >= 4";
        const int64_t levels = static_cast<int64_t>(c.model.channel_mult.size());
        if (levels >= 1 && c.model.image_size % (int64_t{1} << (levels - 1)) != 0) {
          return "must be divisible by 2^(levels-1) = " +
                 std::to_string(int64_t{1} << (levels - 1)) + " (model.channel_mult has " +
                 std::to_string(levels) + " levels)";
        }
        return "";
      }));
  k.push_back(make_key<int64_t>(
      "model.channels", "int",
      "U-Net base width; every level's width (channels x mult) must be a multiple of 32.",
      [](Config & c) -> auto& { return c.model.channels; },
      [](const Config& c) {
        return c.model.channels >= 32 && c.model.channels % 32 == 0
                   ? ""
                   : "must be a positive multiple of 32 (GroupNorm(32))";
      }));
  k.push_back(make_key<std::vector<int64_t>>(
      "model.channel_mult", "int list",
      "Width multiplier per resolution level; its length is the number of levels.",
      [](Config & c) -> auto& { return c.model.channel_mult; },
      [](const Config& c) -> std::string {
        if (c.model.channel_mult.empty()) return "must list at least one level";
        for (auto m : c.model.channel_mult) {
          if (m < 1) return "every multiplier must be >= 1";
        }
        return "";
      }));
  k.push_back(make_key<int64_t>(
      "model.num_res_blocks", "int",
      "Residual blocks per level (the decoder has one more per level).",
      [](Config & c) -> auto& { return c.model.num_res_blocks; },
      [](const Config& c) { return c.model.num_res_blocks >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<std::vector<int64_t>>(
      "model.attention_resolutions", "int list",
      "Feature-map sizes (e.g. 16) at which self-attention follows each residual block.",
      [](Config & c) -> auto& { return c.model.attention_resolutions; },
      [](const Config& c) -> std::string {
        for (auto r : c.model.attention_resolutions) {
          if (r < 1) return "every resolution must be >= 1";
        }
        return "";
      }));
  k.push_back(make_key<double>(
      "model.dropout", "float", "Dropout inside residual blocks.",
      [](Config & c) -> auto& { return c.model.dropout; },
      [](const Config& c) {
        return c.model.dropout >= 0 && c.model.dropout < 1 ? "" : "must be in [0, 1)";
      }));
  k.push_back(make_key<std::string>(
      "model.prediction", "string",
      "What the network predicts: `eps` (the noise) or `v` = sqrt(abar) eps - sqrt(1-abar) x0 "
      "(Salimans & Ho 2022); every sampler works with both.",
      [](Config & c) -> auto& { return c.model.prediction; },
      [](const Config& c) {
        return one_of(c.model.prediction, {"eps", "v"});
      }));
  k.push_back(make_key<int64_t>(
      "model.num_classes", "int",
      "Class-conditional model over this many labels (the dataset's label count); 0 = "
      "unconditional.",
      [](Config & c) -> auto& { return c.model.num_classes; },
      [](const Config& c) { return c.model.num_classes >= 0 ? "" : "must be >= 0"; }));
  k.push_back(make_key<double>(
      "model.label_dropout", "float",
      "Probability of training a sample with no label, so that one model also makes the "
      "unconditional prediction classifier-free guidance needs (used when model.num_classes > 0).",
      [](Config & c) -> auto& { return c.model.label_dropout; },
      [](const Config& c) {
        return c.model.label_dropout >= 0 && c.model.label_dropout <= 1 ? "" : "must be in [0, 1]";
      }));
  // diffusion
  k.push_back(make_key<std::string>(
      "diffusion.schedule", "string",
      "Noise schedule: `linear` (Ho et al. 2020) or `cosine` (Nichol & Dhariwal 2021).",
      [](Config & c) -> auto& { return c.diffusion.schedule; },
      [](const Config& c) {
        return one_of(c.diffusion.schedule, {"linear", "cosine"});
      }));
  k.push_back(make_key<int64_t>(
      "diffusion.timesteps", "int", "Diffusion steps T.",
      [](Config & c) -> auto& { return c.diffusion.timesteps; },
      [](const Config& c) {
        return c.diffusion.timesteps >= 1 && c.diffusion.timesteps <= 100000
                   ? ""
                   : "must be in [1, 100000]";
      }));
  k.push_back(make_key<double>(
      "diffusion.beta_start", "float", "Linear schedule: beta_1.",
      [](Config & c) -> auto& { return c.diffusion.beta_start; },
      [](const Config& c) {
        return c.diffusion.beta_start > 0 && c.diffusion.beta_start < 1 ? "" : "must be in (0, 1)";
      }));
  k.push_back(make_key<double>(
      "diffusion.beta_end", "float", "Linear schedule: beta_T.",
      [](Config & c) -> auto& { return c.diffusion.beta_end; },
      [](const Config& c) {
        return c.diffusion.beta_end >= c.diffusion.beta_start && c.diffusion.beta_end < 1
                   ? ""
                   : "must be in [diffusion.beta_start, 1)";
      }));
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
  k.push_back(make_key<std::string>(
      "train.device", "string",
      "`auto` (CUDA when present, else CPU), `cpu` or `cuda`; rank r uses cuda:(local rank).",
      [](Config & c) -> auto& { return c.train.device; },
      [](const Config& c) {
        return one_of(c.train.device, {"auto", "cpu", "cuda"});
      }));
  k.push_back(make_key<int64_t>(
      "train.grad_accum_steps", "int",
      "Micro-batches per optimizer step; gradients are all-reduced only on the last one.",
      [](Config & c) -> auto& { return c.train.grad_accum_steps; },
      [](const Config& c) { return c.train.grad_accum_steps >= 1 ? "" : "must be >= 1"; }));
  k.push_back(make_key<std::string>(
      "train.precision", "string",
      "`fp32`, or `bf16`: autocast of the U-Net forward to bfloat16 (CUDA; also CPU), with "
      "fp32 master weights, loss, gradients and all-reduce.",
      [](Config & c) -> auto& { return c.train.precision; },
      [](const Config& c) {
        return one_of(c.train.precision, {"fp32", "bf16"});
      }));
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
  k.push_back(make_key<std::string>(
      "sample.sampler", "string",
      "Sampler for the end-of-run grid: `ddpm`, `ddim` or `dpmpp2m` "
      "(DPM-Solver++(2M), 10-20 steps).",
      [](Config & c) -> auto& { return c.sample.sampler; },
      [](const Config& c) {
        return one_of(c.sample.sampler, {"ddpm", "ddim", "dpmpp2m"});
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
  k.push_back(make_key<std::string>(
      "sample.ddpm_variance", "string",
      "DDPM reverse variance: `beta` (beta_t) or `posterior` (beta~_t).",
      [](Config & c) -> auto& { return c.sample.ddpm_variance; },
      [](const Config& c) {
        return one_of(c.sample.ddpm_variance, {"beta", "posterior"});
      }));
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
  k.push_back(make_key<std::string>(
      "dist.backend", "string",
      "Gradient all-reduce backend: `auto` (NCCL on CUDA, else MPI), `mpi` or `nccl`.",
      [](Config & c) -> auto& { return c.dist.backend; },
      [](const Config& c) {
        return one_of(c.dist.backend, {"auto", "mpi", "nccl"});
      }));
  k.push_back(make_key<double>(
      "dist.bucket_mb", "float", "Gradient bucket size in MB (one all-reduce per bucket).",
      [](Config & c) -> auto& { return c.dist.bucket_mb; },
      [](const Config& c) { return positive(c.dist.bucket_mb); }));
  k.push_back(make_key<double>(
      "dist.timeout_s", "float",
      "Deadline of every collective; past it the job aborts naming the collective and rank.",
      [](Config & c) -> auto& { return c.dist.timeout_s; },
      [](const Config& c) { return positive(c.dist.timeout_s); }));
  return k;
}

const ConfigKey* find_key(const std::string& name) {
  for (const auto& key : config_keys()) {
    if (key.name == name) return &key;
  }
  return nullptr;
}

// Flattens nested maps into dotted keys; lists and scalars are leaves.
void flatten(const YAML::Node& node, const std::string& prefix,
             std::vector<std::pair<std::string, YAML::Node>>& out, const std::string& origin) {
  if (node.IsMap()) {
    for (const auto& item : node) {
      const std::string name = prefix.empty() ? item.first.as<std::string>()
                                              : prefix + "." + item.first.as<std::string>();
      flatten(item.second, name, out, origin);
    }
    return;
  }
  if (prefix.empty()) {
    if (node.IsNull()) return;  // an empty file is all defaults
    throw std::runtime_error(origin + ": top level must be a mapping of sections");
  }
  out.emplace_back(prefix, node);
}

void apply(Config& config, const std::string& name, const YAML::Node& value,
           const std::string& origin) {
  const ConfigKey* key = find_key(name);
  if (key == nullptr) {
    throw std::runtime_error(origin + ": unknown key '" + name +
                             "' (see the config table in README.md)");
  }
  try {
    key->set(config, value);
  } catch (const std::exception& e) {
    throw std::runtime_error(origin + ": " + name + ": " + e.what());
  }
}

void validate(const Config& config, const std::map<std::string, std::string>& origins,
              const std::string& default_origin) {
  for (const auto& key : config_keys()) {
    const std::string problem = key.check(config);
    if (!problem.empty()) {
      const auto it = origins.find(key.name);
      const std::string origin = it != origins.end() ? it->second : default_origin;
      throw std::runtime_error(origin + ": " + key.name + " = " + key.get(config) + ": " + problem);
    }
  }
}

Config parse_into(const std::string& yaml_text, const std::string& origin,
                  std::map<std::string, std::string>& origins) {
  Config config;
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    throw std::runtime_error(origin + ": not valid YAML: " + e.what());
  }
  std::vector<std::pair<std::string, YAML::Node>> leaves;
  flatten(root, "", leaves, origin);
  for (const auto& [name, value] : leaves) {
    apply(config, name, value, origin);
    origins[name] = origin;
  }
  return config;
}

}  // namespace

double parse_time_limit_s(const std::string& text) {
  if (text.empty()) return 0.0;
  const std::string bad = "'" + text + "' is not a time ([D-]HH:MM:SS, MM:SS or seconds)";
  std::string rest = text;
  double days = 0;
  const auto dash = rest.find('-');
  try {
    if (dash != std::string::npos) {
      days = std::stod(rest.substr(0, dash));
      rest = rest.substr(dash + 1);
    }
    std::vector<double> parts;
    size_t start = 0;
    while (true) {
      const auto colon = rest.find(':', start);
      size_t used = 0;
      const std::string piece =
          rest.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
      parts.push_back(std::stod(piece, &used));
      if (used != piece.size()) throw std::invalid_argument(bad);
      if (colon == std::string::npos) break;
      start = colon + 1;
    }
    if (parts.size() > 3) throw std::invalid_argument(bad);
    double seconds = 0;
    for (double p : parts) {
      if (p < 0) throw std::invalid_argument(bad);
      seconds = seconds * 60 + p;
    }
    const double total = days * 86400 + seconds;
    if (!(total > 0)) throw std::invalid_argument(bad);
    return total;
  } catch (const std::exception&) {
    throw std::runtime_error(bad);
  }
}

const std::vector<ConfigKey>& config_keys() {
  static const std::vector<ConfigKey> keys = build_keys();
  return keys;
}

Config load_config(const std::string& path, const std::vector<std::string>& overrides) {
  std::map<std::string, std::string> origins;
  Config config;
  if (!path.empty()) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("config " + path + ": cannot open file");
    std::stringstream text;
    text << in.rdbuf();
    config = parse_into(text.str(), "config " + path, origins);
  }
  for (const auto& item : overrides) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) {
      throw std::runtime_error("--set " + item + ": want key=value");
    }
    const std::string name = item.substr(0, eq);
    const std::string origin = "--set " + item;
    YAML::Node value;
    try {
      value = YAML::Load(item.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw std::runtime_error(origin + ": not valid YAML: " + e.what());
    }
    apply(config, name, value, origin);
    origins[name] = origin;
  }
  validate(config, origins, path.empty() ? "defaults" : "config " + path);
  return config;
}

Config parse_config(const std::string& yaml_text, const std::string& origin) {
  std::map<std::string, std::string> origins;
  Config config = parse_into(yaml_text, origin, origins);
  validate(config, origins, origin);
  return config;
}

std::string to_yaml(const Config& config) {
  std::ostringstream out;
  std::string section;
  for (const auto& key : config_keys()) {
    const auto dot = key.name.find('.');
    const std::string head = key.name.substr(0, dot);
    if (head != section) {
      out << head << ":\n";
      section = head;
    }
    out << "  " << key.name.substr(dot + 1) << ": " << key.get(config) << "\n";
  }
  return out.str();
}

std::string config_markdown_table() {
  const Config defaults;
  std::ostringstream out;
  out << "| key | type | default | meaning |\n|---|---|---|---|\n";
  for (const auto& key : config_keys()) {
    out << "| `" << key.name << "` | " << key.type << " | `" << key.get(defaults) << "` | "
        << key.doc << " |\n";
  }
  return out.str();
}

}  // namespace difftrain::trainer
