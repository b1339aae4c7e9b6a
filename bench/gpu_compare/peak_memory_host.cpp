// peak_memory_bytes for a LibTorch without CUDA: there is no device memory to count.
#include "bench/gpu_compare/peak_memory.h"

namespace difftrain::bench {

void reset_peak_memory(const c10::Device& /*device*/) {}

std::optional<int64_t> peak_memory_bytes(const c10::Device& /*device*/) { return std::nullopt; }

}  // namespace difftrain::bench
