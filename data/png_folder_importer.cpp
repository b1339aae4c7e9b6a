// Class-per-sub-folder PNG import: walks the folders in sorted order and converts HWC to CHW.
#include "data/png_folder_importer.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <system_error>

#include "data/data_error.h"
#include "data/png_io.h"

namespace difftrain::data {
namespace {

namespace fs = std::filesystem;

bool has_png_extension(const fs::path& path) {
  std::string extension = path.extension().string();
  std::transform(extension.begin(), extension.end(), extension.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return extension == ".png";
}

// Sorted entries of `dir` for which keep(entry) holds; DataError naming dir on I/O errors.
template <typename Keep>
std::vector<fs::path> sorted_entries(const fs::path& dir, Keep keep) {
  std::vector<fs::path> paths;
  std::error_code error;
  for (fs::directory_iterator it(dir, error), end; !error && it != end; it.increment(error)) {
    if (keep(*it)) paths.push_back(it->path());
  }
  if (error) throw DataError(dir.string() + ": cannot list folder (" + error.message() + ")");
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace

ImageSet read_png_folder(const std::string& dir) {
  std::error_code error;
  if (!fs::is_directory(dir, error)) {
    throw DataError(dir + ": not a folder (want <dir>/<class>/*.png)");
  }
  // Hidden folders (".git", ".ipynb_checkpoints") are not classes.
  const std::vector<fs::path> classes = sorted_entries(dir, [](const fs::directory_entry& e) {
    return e.is_directory() && e.path().filename().string().rfind('.', 0) != 0;
  });
  if (classes.empty()) {
    throw DataError(dir + ": holds no class sub-folders (want <dir>/<class>/*.png)");
  }

  ImageSet images;
  images.source = dir;
  images.label_count = static_cast<int64_t>(classes.size());
  std::string first_path;
  for (size_t label = 0; label < classes.size(); ++label) {
    const std::vector<fs::path> files = sorted_entries(classes[label], [](const auto& e) {
      return e.is_regular_file() && has_png_extension(e.path());
    });
    if (files.empty()) throw DataError(classes[label].string() + ": class folder holds no .png");
    for (const fs::path& file : files) {
      // The header first: an image of the wrong size is refused before it is decoded.
      const PngInfo info = read_png_info(file.string());
      const SampleShape shape{info.channels, info.height, info.width};
      if (first_path.empty()) {
        images.shape = shape;
        first_path = file.string();
      } else if (shape != images.shape) {
        throw DataError(file.string() + ": shape " + shape.str() + ", but " + first_path + " has " +
                        images.shape.str() + "; all images must share one shape");
      }
      const Image image = read_png(file.string());
      // HWC (PNG) to CHW (our samples).
      const size_t base = images.pixels.size();
      images.pixels.resize(base + static_cast<size_t>(shape.bytes()));
      uint8_t* out = images.pixels.data() + base;
      const int64_t plane = shape.height * shape.width;
      for (int64_t p = 0; p < plane; ++p) {
        for (int64_t c = 0; c < shape.channels; ++c) {
          out[c * plane + p] = image.pixels[p * shape.channels + c];
        }
      }
      images.labels.push_back(static_cast<int64_t>(label));
    }
  }
  return images;
}

}  // namespace difftrain::data
