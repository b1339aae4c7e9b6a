// Check macros for CUDA runtime and NCCL calls: a failing call throws with the call text,
// file:line and the library's own message. Included only where CUDA and NCCL are built in.
#pragma once

#include <cuda_runtime_api.h>
#include <nccl.h>

namespace difftrain::launch {

// Throws std::runtime_error("cudaX(...) failed at file:line: <cudaGetErrorString>").
[[noreturn]] void throw_cuda_error(cudaError_t code, const char* call, const char* file, int line);

// Returns `result` when it is ncclSuccess or ncclInProgress (a non-blocking communicator is
// still setting the operation up: poll ncclCommGetAsyncError before the next call); otherwise
// throws std::runtime_error("ncclX(...) failed at file:line: <ncclGetErrorString>: <last error>").
ncclResult_t check_nccl(ncclResult_t result, const char* call, const char* file, int line);

}  // namespace difftrain::launch

#define DIFFTRAIN_CUDA_CHECK(call)                                                          \
  do {                                                                                      \
    const cudaError_t difftrain_cuda_rc_ = (call);                                          \
    if (difftrain_cuda_rc_ != cudaSuccess) {                                                \
      ::difftrain::launch::throw_cuda_error(difftrain_cuda_rc_, #call, __FILE__, __LINE__); \
    }                                                                                       \
  } while (0)

// Evaluates to the ncclResult_t (ncclSuccess or ncclInProgress).
#define DIFFTRAIN_NCCL_CHECK(call) \
  ::difftrain::launch::check_nccl((call), #call, __FILE__, __LINE__)
