// Backend choice for make_communicator. The NCCL backend lives in nccl_communicator.cpp; this
// file never names NCCL types.
#include "launch/communicator.h"

#include "launch/mpi_communicator.h"
#include "launch/runtime.h"

namespace difftrain::launch {

std::unique_ptr<Communicator> make_nccl_communicator(const Runtime& runtime, double timeout_s);

std::unique_ptr<Communicator> make_communicator(const std::string& backend, const Runtime& runtime,
                                                double timeout_s) {
  if (backend != "auto" && backend != "mpi" && backend != "nccl") {
    throw std::runtime_error("dist.backend = '" + backend + "': want auto, mpi or nccl");
  }
  if (!(timeout_s > 0)) {
    throw std::runtime_error("dist.timeout_s = " + std::to_string(timeout_s) + ": must be > 0");
  }
  const bool cuda = runtime.device().is_cuda();
  if (backend == "nccl" || (backend == "auto" && cuda)) {
    if (!cuda) {
      throw std::runtime_error("dist.backend = 'nccl': rank " + std::to_string(runtime.rank()) +
                               " has no CUDA device (device " + runtime.device().str() + ")");
    }
    return make_nccl_communicator(runtime, timeout_s);
  }
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace difftrain::launch
