// Importer for a folder of PNGs laid out one sub-folder per class (dir/<class>/*.png), the
// layout of ImageNet-style and many Kaggle datasets.
#pragma once

#include <string>

#include "data/image_set.h"

namespace difftrain::data {

// Reads dir/<class>/*.png (".png" in any case). Classes are the sub-folder names sorted
// bytewise, labelled 0..K-1; images within a class are taken in sorted file-name order, so
// the result is deterministic. Grey images give C = 1, colour images C = 3 (see read_png).
// Other files, hidden folders and deeper folders are ignored. DataError naming the path if dir has
// no class sub-folders, a class folder holds no PNG, or an image's shape differs from the first
// one's. Thread-safe.
ImageSet read_png_folder(const std::string& dir);

}  // namespace difftrain::data
