// Version strings recorded in checkpoints and the build-info metric.
#pragma once

#include <string>

namespace difftrain::trainer {

// "difftrain 0.1.0, torch 1.13.1".
std::string version_string();
std::string difftrain_version();
std::string torch_version();
// Short hash of the commit the build was configured from ("unknown" outside a git checkout).
std::string git_commit();

}  // namespace difftrain::trainer
