// Version strings recorded in checkpoints and the build-info metric.
#pragma once

#include <string>

namespace difftrain::trainer {

// "difftrain 0.1.0, torch 2.15.0".
std::string version_string();
// What `difftrain --version` prints: difftrain and its commit, then one line each for
// LibTorch, CUDA, cuDNN, NCCL, MPI and HDF5 as compiled in and as loaded.
std::string build_report();
std::string difftrain_version();
std::string torch_version();
// Short hash of the commit the build was configured from ("unknown" outside a git checkout).
std::string git_commit();

}  // namespace difftrain::trainer
