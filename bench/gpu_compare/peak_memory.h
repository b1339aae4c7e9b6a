// Peak device memory of the benchmark drivers: LibTorch's CUDA caching allocator counts it where
// LibTorch has CUDA (peak_memory_cuda.cpp), nothing does otherwise (peak_memory_host.cpp); the
// file is chosen in bench/bench_targets.cmake.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <optional>

namespace difftrain::bench {

// Starts a new peak at the bytes allocated now. No-op for a non-CUDA device.
void reset_peak_memory(const c10::Device& device);

// Most bytes held by live tensors on `device` since the last reset (the allocator's reserved but
// free cache not included, as torch.cuda.max_memory_allocated); nullopt for a non-CUDA device
// or a LibTorch built without CUDA.
std::optional<int64_t> peak_memory_bytes(const c10::Device& device);

}  // namespace difftrain::bench
