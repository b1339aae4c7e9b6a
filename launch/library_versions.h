// Versions of the communication libraries this binary runs with (`difftrain --version`).
#pragma once

#include <string>

namespace difftrain::launch {

// The first line of MPI_Get_library_version ("Open MPI v4.1.4, ..."); callable before MPI_Init.
std::string mpi_library_version();
// The NCCL that is loaded (ncclGetVersion), then the nccl.h compiled against:
// "2.30.7 (built against 2.30.7)".
std::string nccl_version();
// The CUDA runtime that is loaded (cudaRuntimeGetVersion), "13.2"; needs no GPU.
std::string cuda_runtime_version();

}  // namespace difftrain::launch
