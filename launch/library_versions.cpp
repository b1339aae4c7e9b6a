// Library versions from the libraries themselves, not from what CMake saw.
#include "launch/library_versions.h"

#include <cuda_runtime_api.h>
#include <mpi.h>
#include <nccl.h>

namespace difftrain::launch {
namespace {

// NCCL encodes x.y.z as x*10000 + y*100 + z (from 2.9 on), CUDA as x*1000 + y*10.
std::string nccl_code_text(int code) {
  return std::to_string(code / 10000) + "." + std::to_string(code / 100 % 100) + "." +
         std::to_string(code % 100);
}

}  // namespace

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  if (MPI_Get_library_version(text, &length) != MPI_SUCCESS) return "unknown";
  (void)length;  // Open MPI counts the terminating NUL in it
  std::string version(text);
  const size_t end = version.find_first_of("\r\n");
  if (end != std::string::npos) version.resize(end);
  return version;
}

std::string nccl_version() {
  int code = 0;
  const std::string built = nccl_code_text(NCCL_VERSION_CODE);
  if (ncclGetVersion(&code) != ncclSuccess) return "unknown (built against " + built + ")";
  return nccl_code_text(code) + " (built against " + built + ")";
}

std::string cuda_runtime_version() {
  int code = 0;
  if (cudaRuntimeGetVersion(&code) != cudaSuccess) return "unknown";
  return std::to_string(code / 1000) + "." + std::to_string(code % 1000 / 10);
}

}  // namespace difftrain::launch
