// Version strings recorded in checkpoints and the build-info metric.
#pragma once

#include <string>

namespace difftrain::trainer {

// "difftrain 0.1.0, torch 1.13.1".
std::string version_string();
std::string difftrain_version();
std::string torch_version();

}  // namespace difftrain::trainer
