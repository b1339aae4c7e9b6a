// `difftrain prepare`: IDX files or a folder of PNGs → HDF5 shards + index.json.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "data/idx_importer.h"
#include "data/image_set.h"
#include "data/png_folder_importer.h"
#include "data/shard_writer.h"
#include "trainer/commands/commands.h"

namespace difftrain::trainer {
namespace {

// Images per label, printed (one line per class up to 32 classes, else the extremes); labels
// in [0, label_count) without any image are refused unless allowed: one corrupt byte in an IDX
// label file makes a "class 200" and 190 empty classes.
void check_label_histogram(const data::ImageSet& images, const std::string& source,
                           bool allow_gaps) {
  if (images.label_count == 0) return;
  std::vector<int64_t> counts(static_cast<size_t>(images.label_count), 0);
  for (const int64_t label : images.labels) ++counts[static_cast<size_t>(label)];
  std::vector<int64_t> empty;
  for (size_t c = 0; c < counts.size(); ++c) {
    if (counts[c] == 0) empty.push_back(static_cast<int64_t>(c));
  }
  if (!empty.empty() && !allow_gaps) {
    std::string list;
    for (size_t i = 0; i < empty.size() && i < 5; ++i) {
      list += (i > 0 ? ", " : "") + std::to_string(empty[i]);
    }
    if (empty.size() > 5) list += ", ... (" + std::to_string(empty.size()) + " in all)";
    throw std::runtime_error(source + ": labels " + list + " have no image among " +
                             std::to_string(images.label_count) +
                             " classes (a corrupt label would do that); check the file, or pass "
                             "--allow-label-gaps to keep the empty classes");
  }
  std::cout << "labels: " << images.label_count << " classes";
  if (counts.size() <= 32) {
    std::cout << ", images per class:";
    for (size_t c = 0; c < counts.size(); ++c) std::cout << " " << c << ":" << counts[c];
  } else {
    const auto [low, high] = std::minmax_element(counts.begin(), counts.end());
    std::cout << ", images per class from " << *low << " (class " << low - counts.begin() << ") to "
              << *high << " (class " << high - counts.begin() << ")";
  }
  if (!empty.empty()) std::cout << ", " << empty.size() << " empty (--allow-label-gaps)";
  std::cout << "\n";
}

}  // namespace

void add_prepare_command(CLI::App& app) {
  struct Args {
    std::string images, labels, out;
    int64_t shards = 4;
    int64_t pad_to = 0;
    bool allow_label_gaps = false;
  };
  auto args = std::make_shared<Args>();
  CLI::App* cmd = app.add_subcommand(
      "prepare",
      "Convert IDX images (+labels, gzip or plain) or a folder of PNGs (one sub-folder "
      "per class) into HDF5 shards with an index.json manifest");
  cmd->add_option("--images", args->images,
                  "IDX image file, or a directory of class folders of PNGs")
      ->required();
  cmd->add_option("--labels", args->labels, "IDX label file (IDX input only)");
  cmd->add_option("--out", args->out, "Output dataset directory (must not hold a dataset yet)")
      ->required();
  cmd->add_option("--shards", args->shards, "Number of shard files")->check(CLI::Range(1, 100000));
  cmd->add_option("--pad-to", args->pad_to,
                  "Centre-pad images to S x S with background (e.g. 28 -> 32)")
      ->check(CLI::Range(0, 65536));
  cmd->add_flag("--allow-label-gaps", args->allow_label_gaps,
                "Keep labels that no image has (refused by default: the sign of a corrupt label)");
  cmd->callback([args] {
    data::ImageSet images;
    if (std::filesystem::is_directory(args->images)) {
      if (!args->labels.empty()) {
        throw std::runtime_error("--labels " + args->labels +
                                 ": a PNG folder takes its labels from sub-folder names");
      }
      images = data::read_png_folder(args->images);
    } else {
      images = data::read_idx(args->images, args->labels);
    }
    check_label_histogram(images, args->labels.empty() ? args->images : args->labels,
                          args->allow_label_gaps);
    if (args->pad_to > 0) images = data::pad_to(images, args->pad_to);
    const data::Manifest manifest = data::write_shards(images, args->out, args->shards);
    std::cout << "wrote " << manifest.sample_count << " images " << manifest.shape.str() << " ("
              << manifest.label_count << " labels) in " << manifest.shards.size() << " shards to "
              << args->out << "\n";
  });
}

}  // namespace difftrain::trainer
