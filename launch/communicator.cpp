// Backend choice for make_communicator. The NCCL backend lives in nccl_communicator.cpp; this
// file never names NCCL types.
#include "launch/communicator.h"

#include "launch/mpi_communicator.h"
#include "launch/runtime.h"

namespace difftrain::launch {

std::unique_ptr<Communicator> make_nccl_communicator(const Runtime& runtime, double timeout_s);

std::unique_ptr<Communicator> make_communicator(Backend backend, const Runtime& runtime,
                                                double timeout_s) {
  if (!(timeout_s > 0)) {
    throw std::logic_error("make_communicator: timeout " + std::to_string(timeout_s) +
                           " s, want > 0");
  }
  const bool cuda = runtime.device().is_cuda();
  if (backend == Backend::kNccl || (backend == Backend::kAuto && cuda)) {
    if (!cuda) {
      throw std::runtime_error("the NCCL backend needs a CUDA device, and rank " +
                               std::to_string(runtime.rank()) + " has " + runtime.device().str());
    }
    return make_nccl_communicator(runtime, timeout_s);
  }
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace difftrain::launch
