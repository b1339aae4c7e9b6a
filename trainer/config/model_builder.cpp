// Config → model, schedule and sampler settings.
#include "trainer/config/model_builder.h"

#include <torch/utils.h>

#include <utility>

#include "trainer/diffusion/edm.h"

namespace difftrain::trainer {

at::MemoryFormat memory_format(const Config& config) {
  return config.train.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

void set_memory_format(torch::nn::Module& module, at::MemoryFormat format) {
  torch::NoGradGuard no_grad;
  auto convert = [format](at::Tensor& tensor) {
    if (tensor.dim() == 4 && !tensor.is_contiguous(format)) {
      tensor.set_data(tensor.contiguous(format));
    }
  };
  for (auto& p : module.parameters()) convert(p);
  for (auto& b : module.buffers()) convert(b);
}

UNetOptions unet_options(const Config& config) {
  UNetOptions options;
  options.in_channels = config.model.in_channels;
  options.image_size = config.model.image_size;
  options.channels = config.model.channels;
  options.channel_mult = config.model.channel_mult;
  options.num_res_blocks = config.model.num_res_blocks;
  options.attention_resolutions = config.model.attention_resolutions;
  options.dropout = config.model.dropout;
  options.num_classes = config.model.num_classes;
  return options;
}

NoiseSchedule noise_schedule(const Config& config) {
  return NoiseSchedule(config.diffusion.schedule, config.diffusion.timesteps,
                       config.diffusion.beta_start, config.diffusion.beta_end);
}

SamplerOptions sampler_options(const Config& config) {
  SamplerOptions options;
  options.kind = config.sample.sampler;
  options.steps = config.sample.steps;
  options.eta = config.sample.eta;
  options.variance = config.sample.ddpm_variance;
  options.churn = config.sample.churn;
  validate(options, config.diffusion.timesteps);
  return options;
}

EpsPredictor network_predictor(ModelFunction network, const Config& config) {
  const NoiseSchedule schedule = noise_schedule(config);
  if (config.diffusion.formulation == Formulation::kDdpm) {
    return as_eps_predictor(std::move(network), schedule, config.model.prediction);
  }
  const Config::Diffusion& d = config.diffusion;
  return edm_predictor(
      {edm_denoiser(std::move(network), d.sigma_data), d.sigma_min, d.sigma_max, d.rho}, schedule);
}

AdamWSettings adamw_settings(const Config& config) {
  AdamWSettings settings;
  settings.beta1 = config.train.adam_beta1;
  settings.beta2 = config.train.adam_beta2;
  settings.eps = config.train.adam_eps;
  settings.weight_decay = config.train.weight_decay;
  settings.max_grad_norm = config.train.grad_clip;
  return settings;
}

}  // namespace difftrain::trainer
