// Device memory in use by this process, as LibTorch's CUDA caching allocator counts it: for the
// difftrain_device_memory_bytes metric and the benchmarks' peak memory.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>

namespace difftrain::trainer {

// Bytes of `device` held by live tensors (the allocator's reserved but free cache not
// included, as torch.cuda.memory_allocated). nullopt for a non-CUDA device. Thread-safe.
std::optional<int64_t> device_memory_allocated_bytes(const c10::Device& device);

// Starts a new peak at the bytes allocated now. No-op for a non-CUDA device.
void reset_peak_device_memory(const c10::Device& device);

// Most bytes held by live tensors on `device` since the last reset (as
// torch.cuda.max_memory_allocated); nullopt for a non-CUDA device.
std::optional<int64_t> peak_device_memory_bytes(const c10::Device& device);

}  // namespace difftrain::trainer
