// Version strings from the build.
#include "trainer/version.h"

#include <torch/version.h>

namespace difftrain::trainer {

std::string difftrain_version() { return DIFFTRAIN_VERSION; }
std::string torch_version() { return TORCH_VERSION; }
std::string git_commit() { return DIFFTRAIN_GIT_COMMIT; }
std::string version_string() {
  return "difftrain " + difftrain_version() + ", torch " + torch_version();
}

}  // namespace difftrain::trainer
