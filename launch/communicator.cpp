// Backend choice for make_communicator. The NCCL backend lives in nccl_communicator.cpp, which
// CMake compiles only when CUDA and NCCL are found; this file never names NCCL types.
#include "launch/communicator.h"

#include "launch/mpi_communicator.h"
#include "launch/runtime.h"

namespace difftrain::launch {

#ifdef DIFFTRAIN_HAVE_NCCL
std::unique_ptr<Communicator> make_nccl_communicator(const Runtime& runtime, double timeout_s);
bool nccl_available() { return true; }
#else
bool nccl_available() { return false; }
#endif

std::unique_ptr<Communicator> make_communicator(const std::string& backend, const Runtime& runtime,
                                                double timeout_s) {
  if (backend != "auto" && backend != "mpi" && backend != "nccl") {
    throw std::runtime_error("dist.backend = '" + backend + "': want auto, mpi or nccl");
  }
  if (!(timeout_s > 0)) {
    throw std::runtime_error("dist.timeout_s = " + std::to_string(timeout_s) + ": must be > 0");
  }
  const bool cuda = runtime.device().is_cuda();
  if (backend == "nccl" || (backend == "auto" && cuda && nccl_available())) {
    if (!cuda) {
      throw std::runtime_error("dist.backend = 'nccl': rank " + std::to_string(runtime.rank()) +
                               " has no CUDA device (device " + runtime.device().str() + ")");
    }
#ifdef DIFFTRAIN_HAVE_NCCL
    return make_nccl_communicator(runtime, timeout_s);
#else
    throw std::runtime_error("dist.backend = 'nccl': this build has no NCCL support "
                             "(CUDA toolkit or NCCL not found at configure time)");
#endif
  }
  return std::make_unique<MpiCommunicator>(timeout_s);
}

}  // namespace difftrain::launch
