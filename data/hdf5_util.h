// HDF5 plumbing shared by the shard writer and the dataset reader: a check macro that turns
// failed calls into DataError, a process-wide lock, and an RAII owner for hid_t handles.
#pragma once

#include <hdf5.h>

#include <mutex>
#include <string>

#include "data/data_error.h"

namespace difftrain::data {

// Serialises every HDF5 call made by this library (HDF5 1.10 serial holds one global lock
// anyway, and multi-call sequences such as select-then-read must not interleave). Recursive,
// so a function holding it may destroy handles, which take it too. Constructing one also
// switches off HDF5's automatic error printing for the calling thread: in a thread-safe HDF5
// build that setting is per thread, and errors must surface only as our exceptions.
// The HDF5 library this binary runs with, "1.10.8" (H5get_libversion).
std::string hdf5_version();

class Hdf5Lock {
 public:
  Hdf5Lock();
  Hdf5Lock(const Hdf5Lock&) = delete;
  Hdf5Lock& operator=(const Hdf5Lock&) = delete;

 private:
  std::lock_guard<std::recursive_mutex> guard_;
};

// Owns one HDF5 identifier (file, dataset, dataspace, type, property list, attribute) and
// closes it with the matching H5?close on destruction. Move-only. Not thread-safe by itself;
// closing takes Hdf5Lock.
class H5Handle {
 public:
  using Closer = herr_t (*)(hid_t);

  H5Handle() = default;
  // Precondition: id is a valid identifier (pass calls through DIFFTRAIN_H5_CHECK first).
  H5Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~H5Handle() { reset(); }
  H5Handle(H5Handle&& other) noexcept;
  H5Handle& operator=(H5Handle&& other) noexcept;
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;

  hid_t get() const { return id_; }
  explicit operator bool() const { return id_ >= 0; }
  // Closes now; errors from the close are ignored (nothing useful to do in a destructor).
  void reset() noexcept;

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

namespace detail {
// Throws DataError "<call> failed at <file>:<line>: <deepest HDF5 message>".
[[noreturn]] void throw_h5_error(const char* call, const char* file, int line);

template <typename T>
T h5_check(T result, const char* call, const char* file, int line) {
  // herr_t, hid_t and htri_t all signal failure with a negative value.
  if (result < 0) throw_h5_error(call, file, line);
  return result;
}
}  // namespace detail

// Evaluates an HDF5 call; throws DataError naming the call, file:line and HDF5's message if
// it returns a negative value, otherwise yields the value.
#define DIFFTRAIN_H5_CHECK(expr) \
  ::difftrain::data::detail::h5_check((expr), #expr, __FILE__, __LINE__)

// "[60000,28,28]" for error messages.
std::string format_dims(const hsize_t* dims, int rank);

}  // namespace difftrain::data
