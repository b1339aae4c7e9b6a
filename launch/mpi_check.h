// Check macro for MPI calls: a failing call throws with the call text, file:line and MPI's
// own error string, instead of MPI's default of aborting without context.
#pragma once

#include <mpi.h>

#include <string>

namespace difftrain::launch {

// Throws std::runtime_error("MPI_X(...) failed at file:line: <MPI error string>").
[[noreturn]] void throw_mpi_error(int code, const char* call, const char* file, int line);

}  // namespace difftrain::launch

#define DIFFTRAIN_MPI_CHECK(call)                                                 \
  do {                                                                            \
    const int difftrain_mpi_rc_ = (call);                                         \
    if (difftrain_mpi_rc_ != MPI_SUCCESS) {                                       \
      ::difftrain::launch::throw_mpi_error(difftrain_mpi_rc_, #call, __FILE__, __LINE__); \
    }                                                                             \
  } while (0)
