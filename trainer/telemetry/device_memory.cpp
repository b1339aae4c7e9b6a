// Device memory from the CUDA caching allocator's statistics.
#include "trainer/telemetry/device_memory.h"

#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>

namespace difftrain::trainer {
namespace {

c10::DeviceIndex index_of(const c10::Device& device) {
  return device.has_index() ? device.index() : c10::cuda::current_device();
}

// Slot 0 of the allocator's per-pool statistics is the aggregate over pools.
constexpr size_t kAllPools = 0;

}  // namespace

std::optional<int64_t> device_memory_allocated_bytes(const c10::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
  return c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(device))
      .allocated_bytes[kAllPools]
      .current;
}

void reset_peak_device_memory(const c10::Device& device) {
  if (device.is_cuda()) c10::cuda::CUDACachingAllocator::resetPeakStats(index_of(device));
}

std::optional<int64_t> peak_device_memory_bytes(const c10::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
  return c10::cuda::CUDACachingAllocator::getDeviceStats(index_of(device))
      .allocated_bytes[kAllPools]
      .peak;
}

}  // namespace difftrain::trainer
