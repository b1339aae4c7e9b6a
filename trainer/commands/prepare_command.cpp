// `difftrain prepare`: IDX files or a folder of PNGs → HDF5 shards + index.json.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <iostream>

#include "data/idx_importer.h"
#include "data/image_set.h"
#include "data/png_folder_importer.h"
#include "data/shard_writer.h"
#include "trainer/commands/commands.h"

namespace difftrain::trainer {

void add_prepare_command(CLI::App& app) {
  struct Args {
    std::string images, labels, out;
    int64_t shards = 4;
    int64_t pad_to = 0;
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
    if (args->pad_to > 0) images = data::pad_to(images, args->pad_to);
    const data::Manifest manifest = data::write_shards(images, args->out, args->shards);
    std::cout << "wrote " << manifest.sample_count << " images " << manifest.shape.str() << " ("
              << manifest.label_count << " labels) in " << manifest.shards.size() << " shards to "
              << args->out << "\n";
  });
}

}  // namespace difftrain::trainer
