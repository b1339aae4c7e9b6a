// Version strings from the build.
#include "trainer/common/version.h"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include "data/hdf5_util.h"
#include "launch/library_versions.h"

namespace difftrain::trainer {

std::string difftrain_version() { return DIFFTRAIN_VERSION; }
std::string torch_version() { return TORCH_VERSION; }
std::string git_commit() { return DIFFTRAIN_GIT_COMMIT; }
std::string version_string() {
  return "difftrain " + difftrain_version() + ", torch " + torch_version();
}

std::string build_report() {
  const auto& cuda = at::detail::getCUDAHooks();
  // LibTorch reports CUDA as x*1000 + y*10 and cuDNN as x*10000 + y*100 + z (cuDNN 9).
  auto cuda_text = [](long code) {
    return std::to_string(code / 1000) + "." + std::to_string(code % 1000 / 10);
  };
  auto cudnn_text = [](long code) {
    return std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." +
           std::to_string(code % 100);
  };
  const int gpus = cuda.hasCUDA() ? cuda.getNumGPUs() : 0;
  std::string report = "difftrain " + difftrain_version() + " (commit " + git_commit() + ")\n";
  report += "LibTorch " + torch_version() +
            " (C++ ABI: " + (_GLIBCXX_USE_CXX11_ABI ? "cxx11" : "pre-cxx11") + ")\n";
  report += "CUDA: compiled in (LibTorch built with " + cuda_text(cuda.versionCUDART()) +
            ", runtime " + launch::cuda_runtime_version() + " loaded), " + std::to_string(gpus) +
            " GPU(s) visible\n";
  report += "cuDNN: " + cudnn_text(cuda.versionCuDNN()) + " (LibTorch's)\n";
  report += "NCCL: compiled in, " + launch::nccl_version() + "\n";
  report += "MPI: " + launch::mpi_library_version() + "\n";
  report += "HDF5: " + data::hdf5_version();
  return report;
}

}  // namespace difftrain::trainer
