// index.json reading, validation and atomic writing (nlohmann::json).
#include "data/manifest.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "data/data_error.h"
#include "data/file_util.h"

namespace difftrain::data {
namespace {

using nlohmann::json;

std::string index_path(const std::string& dir) { return dir + "/" + Manifest::kFileName; }

// Reads object[key] as T; DataError naming the file and the field when it is missing or has
// the wrong JSON type.
template <typename T>
T get_field(const json& object, const std::string& key, const std::string& path,
            const std::string& prefix = "") {
  const auto it = object.find(key);
  if (it == object.end()) throw DataError(path + ": missing field '" + prefix + key + "'");
  try {
    return it->get<T>();
  } catch (const json::exception&) {
    throw DataError(path + ": field '" + prefix + key + "' has the wrong type (" + it->type_name() +
                    " " + it->dump() + ")");
  }
}

// Integers must be JSON integers, not floats that nlohmann would quietly truncate.
int64_t get_integer(const json& object, const std::string& key, const std::string& path,
                    const std::string& prefix = "") {
  const auto it = object.find(key);
  if (it != object.end() && !it->is_number_integer()) {
    throw DataError(path + ": field '" + prefix + key + "' is " + it->dump() + ", want an integer");
  }
  return get_field<int64_t>(object, key, path, prefix);
}

bool is_lower_hex(const std::string& text) {
  for (char c : text) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

}  // namespace

int64_t SampleShape::bytes() const { return channels * height * width; }

std::string SampleShape::str() const {
  return "[" + std::to_string(channels) + "," + std::to_string(height) + "," +
         std::to_string(width) + "]";
}

bool SampleShape::operator==(const SampleShape& other) const {
  return channels == other.channels && height == other.height && width == other.width;
}

void Manifest::validate(const std::string& where) const {
  if (format_version != kFormatVersion) {
    throw DataError(where + ": field 'format_version' is " + std::to_string(format_version) +
                    ", this build reads version " + std::to_string(kFormatVersion));
  }
  if (shape.channels <= 0 || shape.height <= 0 || shape.width <= 0) {
    throw DataError(where + ": field 'shape' is " + shape.str() + ", want positive [C,H,W]");
  }
  if (dtype != "uint8") {
    throw DataError(where + ": field 'dtype' is '" + dtype + "', want 'uint8'");
  }
  if (sample_count <= 0) {
    throw DataError(where + ": field 'sample_count' is " + std::to_string(sample_count) +
                    ", want > 0");
  }
  if (label_count < 0) {
    throw DataError(where + ": field 'label_count' is " + std::to_string(label_count) +
                    ", want >= 0 (0 = unlabelled)");
  }
  if (shards.empty()) throw DataError(where + ": field 'shards' is empty");
  int64_t total = 0;
  for (size_t i = 0; i < shards.size(); ++i) {
    const ShardEntry& shard = shards[i];
    const std::string field = "shards[" + std::to_string(i) + "]";
    // Shards must sit inside the dataset directory: no absolute paths, no sub-folders.
    if (shard.file.empty() || shard.file.find('/') != std::string::npos || shard.file == "." ||
        shard.file == "..") {
      throw DataError(where + ": field '" + field + ".file' is '" + shard.file +
                      "', want a plain file name inside the dataset directory");
    }
    if (shard.samples <= 0) {
      throw DataError(where + ": field '" + field + ".samples' is " +
                      std::to_string(shard.samples) + ", want > 0");
    }
    if (shard.sha256.size() != 64 || !is_lower_hex(shard.sha256)) {
      throw DataError(where + ": field '" + field + ".sha256' is '" + shard.sha256 +
                      "', want 64 lowercase hex digits");
    }
    total += shard.samples;
  }
  if (total != sample_count) {
    throw DataError(where + ": shard sample counts sum to " + std::to_string(total) +
                    ", field 'sample_count' is " + std::to_string(sample_count));
  }
}

Manifest Manifest::load(const std::string& dir) {
  const std::string path = index_path(dir);
  std::ifstream in(path);
  if (!in) {
    throw DataError(path + ": cannot open (" + errno_text() + "); is " + dir +
                    " a dataset directory?");
  }
  json root;
  try {
    root = json::parse(in);
  } catch (const json::parse_error& e) {
    throw DataError(path + ": invalid JSON: " + e.what());
  }
  if (!root.is_object()) throw DataError(path + ": top level is not a JSON object");

  Manifest manifest;
  // Read the version first: a newer format may have changed every other field.
  const int64_t version = get_integer(root, "format_version", path);
  if (version != kFormatVersion) {
    throw DataError(path + ": field 'format_version' is " + std::to_string(version) +
                    ", this build reads version " + std::to_string(kFormatVersion));
  }
  manifest.format_version = static_cast<int>(version);
  manifest.sample_count = get_integer(root, "sample_count", path);
  const json shape = get_field<json>(root, "shape", path);
  if (!shape.is_object()) throw DataError(path + ": field 'shape' is not an object");
  manifest.shape.channels = get_integer(shape, "channels", path, "shape.");
  manifest.shape.height = get_integer(shape, "height", path, "shape.");
  manifest.shape.width = get_integer(shape, "width", path, "shape.");
  manifest.dtype = get_field<std::string>(root, "dtype", path);
  manifest.label_count = get_integer(root, "label_count", path);
  manifest.source = get_field<std::string>(root, "source", path);
  const json shards = get_field<json>(root, "shards", path);
  if (!shards.is_array()) throw DataError(path + ": field 'shards' is not an array");
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string prefix = "shards[" + std::to_string(i) + "].";
    if (!shards[i].is_object())
      throw DataError(path + ": field 'shards[" + std::to_string(i) + "]' is not an object");
    ShardEntry entry;
    entry.file = get_field<std::string>(shards[i], "file", path, prefix);
    entry.samples = get_integer(shards[i], "samples", path, prefix);
    entry.sha256 = get_field<std::string>(shards[i], "sha256", path, prefix);
    manifest.shards.push_back(std::move(entry));
  }
  manifest.validate(path);
  return manifest;
}

void Manifest::save(const std::string& dir) const {
  const std::string path = index_path(dir);
  validate(path);
  json root;
  root["format_version"] = format_version;
  root["sample_count"] = sample_count;
  root["shape"] = {{"channels", shape.channels}, {"height", shape.height}, {"width", shape.width}};
  root["dtype"] = dtype;
  root["label_count"] = label_count;
  root["source"] = source;
  json shard_list = json::array();
  for (const ShardEntry& shard : shards) {
    shard_list.push_back(
        {{"file", shard.file}, {"samples", shard.samples}, {"sha256", shard.sha256}});
  }
  root["shards"] = std::move(shard_list);
  write_file_atomic(path, root.dump(2) + "\n");
}

}  // namespace difftrain::data
