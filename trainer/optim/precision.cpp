#include "trainer/optim/precision.h"

#include <ATen/Context.h>
#include <ATen/autocast_mode.h>

#include <stdexcept>

namespace difftrain::trainer {
namespace {

bool autocast_enabled(c10::DeviceType device) { return at::autocast::is_autocast_enabled(device); }

c10::ScalarType autocast_dtype(c10::DeviceType device) {
  return at::autocast::get_autocast_dtype(device);
}

void set_autocast(c10::DeviceType device, bool enabled, c10::ScalarType dtype) {
  at::autocast::set_autocast_dtype(device, dtype);
  at::autocast::set_autocast_enabled(device, enabled);
}

}  // namespace

AutocastScope::AutocastScope(Precision precision, c10::DeviceType device) : device_(device) {
  if (precision != Precision::kBf16) return;
  if (device != c10::DeviceType::CUDA && device != c10::DeviceType::CPU) {
    throw std::runtime_error("train.precision = bf16: no autocast for device type " +
                             c10::DeviceTypeName(device));
  }
  active_ = true;
  previous_enabled_ = autocast_enabled(device);
  previous_dtype_ = autocast_dtype(device);
  set_autocast(device, true, c10::ScalarType::BFloat16);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!active_) return;
  // Leaving the outermost scope frees the bf16 copies of the weights autocast cached.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(device_, previous_enabled_, previous_dtype_);
}

void configure_device_math(c10::DeviceType device) {
  if (device != c10::DeviceType::CUDA) return;
  at::globalContext().setBenchmarkCuDNN(true);
  at::globalContext().setAllowTF32CuBLAS(true);
  at::globalContext().setAllowTF32CuDNN(true);
}

}  // namespace difftrain::trainer
