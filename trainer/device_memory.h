// Device memory in use by this process, for the difftrain_device_memory_bytes metric. One
// backend file per LibTorch flavour (with or without CUDA), chosen in trainer/CMakeLists.txt.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>

namespace difftrain::trainer {

// Bytes of `device` held by live tensors, as LibTorch's CUDA caching allocator counts them
// (its reserved but free cache is not included). nullopt for a non-CUDA device or a LibTorch
// built without CUDA. Thread-safe.
std::optional<int64_t> device_memory_allocated_bytes(const c10::Device& device);

}  // namespace difftrain::trainer
