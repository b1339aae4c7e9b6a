// peak_memory_bytes from the CUDA caching allocator (LibTorch built with CUDA).
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

#include "bench/gpu_compare/peak_memory.h"

namespace difftrain::bench {
namespace {

c10::DeviceIndex index_of(const c10::Device& device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}

}  // namespace

void reset_peak_memory(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(index_of(device));
}

std::optional<int64_t> peak_memory_bytes(const c10::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
  const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(device));
  // Slot 0 is the aggregate over pools in LibTorch 1.x and 2.x (as trainer/device_memory_cuda).
  return stats.allocated_bytes[0].peak;
}

}  // namespace difftrain::bench
