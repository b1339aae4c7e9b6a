// Helpers shared by the trainer unit tests.
#pragma once

#include <exception>
#include <functional>
#include <string>

namespace difftrain::trainer::test_util {

// The message of the exception `action` throws, or "<no exception>" when it returns normally:
// tests check the one-line errors users see.
inline std::string error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::exception& error) {
    return error.what();
  }
  return "<no exception>";
}

}  // namespace difftrain::trainer::test_util
