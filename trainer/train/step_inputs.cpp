// Step inputs built on the prefetch thread.
#include "trainer/train/step_inputs.h"

#include <ATen/ATen.h>

#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>

#include "trainer/train/step_noise.h"

namespace difftrain::trainer {

StepInputs prepare_step_inputs(const data::Batch& batch, const StepInputPlan& plan) {
  const data::SampleShape& shape = batch.shape;
  const int64_t step = batch.step / plan.grad_accum_steps;
  const int64_t micro = batch.step % plan.grad_accum_steps;
  const int64_t draws = plan.noise_draws;
  if (draws < 1) throw std::logic_error("prepare_step_inputs: noise_draws < 1");
  const int64_t first_position = (micro * plan.micro_global_batch + plan.first_in_rank) * draws;
  const int64_t samples = batch.size * draws;
  const StepNoise noise = draw_step_noise(plan.seed, step, first_position, samples, plan.timesteps,
                                          {shape.channels, shape.height, shape.width},
                                          plan.label_dropout, plan.pin_memory, plan.hflip);
  const at::TensorOptions host = at::TensorOptions().pinned_memory(plan.pin_memory);

  const int64_t image_bytes = shape.channels * shape.height * shape.width;
  if (batch.images.size() != static_cast<size_t>(batch.size * image_bytes)) {
    throw std::logic_error("prepare_step_inputs: batch " + std::to_string(batch.step) + " has " +
                           std::to_string(batch.images.size()) + " bytes, want " +
                           std::to_string(batch.size * image_bytes));
  }
  StepInputs inputs;
  inputs.images =
      at::empty({samples, shape.channels, shape.height, shape.width}, host.dtype(at::kByte));
  auto* images = static_cast<uint8_t*>(inputs.images.data_ptr());
  for (int64_t i = 0; i < samples; ++i) {
    std::memcpy(images + i * image_bytes, batch.images.data() + (i / draws) * image_bytes,
                image_bytes);
  }
  if (plan.hflip) {
    for (int64_t i = 0; i < samples; ++i) {
      if (noise.flip[i].item<bool>()) inputs.images[i].copy_(inputs.images[i].flip({-1}));
    }
  }
  if (plan.num_classes > 0) {
    inputs.labels = at::empty({samples}, host.dtype(at::kLong));
    auto* labels = inputs.labels.data_ptr<int64_t>();
    for (int64_t i = 0; i < samples; ++i) labels[i] = batch.labels[i / draws];
    inputs.labels.masked_fill_(noise.drop_label, plan.num_classes);
  }
  inputs.timesteps = noise.timesteps;
  inputs.eps = noise.eps;
  if (plan.sigmas) inputs.sigmas = noise.sigmas;
  return inputs;
}

data::PrepareBatch step_input_preparer(const StepInputPlan& plan) {
  return [plan](const data::Batch& batch) -> std::any { return prepare_step_inputs(batch, plan); };
}

StepInputs to_device(const StepInputs& inputs, const c10::Device& device) {
  auto move = [&](const at::Tensor& t) {
    if (!t.defined()) return t;
    return t.to(device, /*non_blocking=*/t.is_pinned());
  };
  return {move(inputs.images), move(inputs.labels), move(inputs.timesteps), move(inputs.eps),
          move(inputs.sigmas)};
}

void copy_to_device(const StepInputs& inputs, const c10::Device& device, StepInputs& on_device) {
  if (!on_device.images.defined()) {
    on_device = to_device(inputs, device);
    return;
  }
  auto copy = [](const char* name, const at::Tensor& from, at::Tensor& to) {
    if (from.defined() != to.defined() || (from.defined() && from.sizes() != to.sizes())) {
      std::ostringstream message;
      message << "copy_to_device: " << name << " "
              << (from.defined() ? c10::str(from.sizes()) : "absent") << " do not fit buffers "
              << (to.defined() ? c10::str(to.sizes()) : "absent");
      throw std::logic_error(message.str());
    }
    if (from.defined()) to.copy_(from, /*non_blocking=*/from.is_pinned());
  };
  copy("images", inputs.images, on_device.images);
  copy("labels", inputs.labels, on_device.labels);
  copy("timesteps", inputs.timesteps, on_device.timesteps);
  copy("noise", inputs.eps, on_device.eps);
  copy("sigmas", inputs.sigmas, on_device.sigmas);
}

}  // namespace difftrain::trainer
