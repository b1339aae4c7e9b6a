// Mixed precision: bf16 autocast of the U-Net forward with fp32 master weights, fp32 loss and
// fp32 gradient all-reduce (train.precision), and the CUDA math settings that go with it.
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

#include <string>

#include "trainer/config/settings.h"

namespace difftrain::trainer {

// While alive, ops on `device` run under autocast to bf16 (kBf16) or are left alone (kFp32).
// Autocast casts inputs of matmul-like ops (convolution, linear, bmm) to bf16 and keeps
// reductions and normalisations in fp32; parameters stay fp32, so their gradients do too.
// Wrap the forward only: backward runs outside, as PyTorch's AMP recipe prescribes.
// Restores the previous autocast state (and clears autocast's weight cache) on destruction.
class AutocastScope {
 public:
  AutocastScope(Precision precision, c10::DeviceType device);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  bool active_ = false;
  c10::DeviceType device_;
  bool previous_enabled_ = false;
  c10::ScalarType previous_dtype_ = c10::ScalarType::Float;
};

// On a CUDA device: cuDNN autotuning (the U-Net's shapes are static) and TF32 for fp32 matmuls
// and convolutions. No-op on other devices.
void configure_device_math(c10::DeviceType device);

}  // namespace difftrain::trainer
