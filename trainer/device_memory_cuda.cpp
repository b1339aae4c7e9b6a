// device_memory_allocated_bytes from the CUDA caching allocator (LibTorch built with CUDA).
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

#include "trainer/device_memory.h"

namespace difftrain::trainer {

std::optional<int64_t> device_memory_allocated_bytes(const c10::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
  const auto index = device.has_index() ? device.index() : c10::cuda::current_device();
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index);
  // Slot 0 is StatType::AGGREGATE (all pools) in LibTorch 1.x and 2.x alike; the enum itself
  // moved namespace in 2.x, the index did not.
  return stats.allocated_bytes[0].current;
}

}  // namespace difftrain::trainer
