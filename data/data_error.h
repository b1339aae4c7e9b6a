// DataError: the one exception type the data library throws, so callers can tell a bad
// dataset (missing shard, corrupt file, wrong shape) from other failures.
#pragma once

#include <stdexcept>
#include <string>

namespace difftrain::data {

// A one-line message naming the file and the offending value, e.g.
// "shard /x/shard-00003.h5: dataset 'images' has shape [60000,28,28], want [N,1,32,32]".
class DataError : public std::runtime_error {
 public:
  explicit DataError(const std::string& message) : std::runtime_error(message) {}
};

}  // namespace difftrain::data
