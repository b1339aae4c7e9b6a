// The choices a run makes about its device and its gradient transport. Their names ("auto",
// "cuda", "nccl", ...) belong to the config (trainer/config/settings.h), not to this library.
#pragma once

namespace difftrain::launch {

// Which device a rank uses: kAuto = CUDA when one is visible, else the CPU.
enum class DeviceRequest { kAuto, kCpu, kCuda };

// Which communicator averages gradients: kAuto = NCCL when the rank's device is CUDA, else MPI.
enum class Backend { kAuto, kMpi, kNccl };

}  // namespace difftrain::launch
