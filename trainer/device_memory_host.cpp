// device_memory_allocated_bytes for a LibTorch without CUDA: there is no device memory.
#include "trainer/device_memory.h"

namespace difftrain::trainer {

std::optional<int64_t> device_memory_allocated_bytes(const c10::Device&) { return std::nullopt; }

}  // namespace difftrain::trainer
