// HDF5 check macro support, the library-wide HDF5 lock and the hid_t RAII owner.
#include "data/hdf5_util.h"

#include <utility>

namespace difftrain::data {
namespace {

std::recursive_mutex& hdf5_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

// Keeps the deepest description on the error stack (walking downward, the last one seen):
// it names the cause ("truncated file: eof = 1024, ...") where the top only says "unable to
// open file".
herr_t collect_message(unsigned /*n*/, const H5E_error2_t* error, void* client_data) {
  auto* message = static_cast<std::string*>(client_data);
  if (error->desc != nullptr && error->desc[0] != '\0') *message = error->desc;
  return 0;
}

}  // namespace

std::string hdf5_version() {
  unsigned major = 0, minor = 0, release = 0;
  if (H5get_libversion(&major, &minor, &release) < 0) return "unknown";
  return std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(release);
}

Hdf5Lock::Hdf5Lock() : guard_(hdf5_mutex()) {
  thread_local bool silenced = false;
  if (!silenced) {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    silenced = true;
  }
}

H5Handle::H5Handle(H5Handle&& other) noexcept
    : id_(std::exchange(other.id_, -1)), closer_(other.closer_) {}

H5Handle& H5Handle::operator=(H5Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = std::exchange(other.id_, -1);
    closer_ = other.closer_;
  }
  return *this;
}

void H5Handle::reset() noexcept {
  if (id_ >= 0 && closer_ != nullptr) {
    Hdf5Lock lock;
    closer_(id_);
  }
  id_ = -1;
}

namespace detail {
void throw_h5_error(const char* call, const char* file, int line) {
  std::string message;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect_message, &message);
  H5Eclear2(H5E_DEFAULT);
  std::string text = std::string(call) + " failed at " + file + ":" + std::to_string(line);
  if (!message.empty()) text += ": " + message;
  throw DataError(text);
}
}  // namespace detail

std::string format_dims(const hsize_t* dims, int rank) {
  std::string text = "[";
  for (int i = 0; i < rank; ++i) {
    if (i > 0) text += ",";
    text += std::to_string(dims[i]);
  }
  return text + "]";
}

}  // namespace difftrain::data
