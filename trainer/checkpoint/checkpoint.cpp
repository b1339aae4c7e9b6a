// Checkpoint encoding with an outer checksum, verified loading, and the atomic on-disk store.
#include "trainer/checkpoint/checkpoint.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "data/file_util.h"
#include "data/sha256.h"
#include "trainer/common/step_name.h"
#include "trainer/config/model_builder.h"
#include "trainer/optim/bucket_adamw.h"
#include "trainer/optim/ema.h"

namespace difftrain::trainer {
namespace {

constexpr char kMagic[8] = {'D', 'T', 'C', 'K', 'P', 'T', '0', '1'};
constexpr size_t kHeaderBytes = sizeof(kMagic) + 8 + 32;

std::string hex_to_bytes(const std::string& hex) {
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<char>(std::stoi(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

std::string sha256_bytes(const std::string& data) {
  return hex_to_bytes(data::sha256_hex(reinterpret_cast<const uint8_t*>(data.data()),
                                       static_cast<int64_t>(data.size())));
}

// The first tensor of `archive` (recursively) holding a NaN or infinity, as "model/conv.weight";
// "" when every tensor is finite.
std::string first_non_finite(torch::serialize::InputArchive& archive, const std::string& prefix) {
  for (const std::string& key : archive.keys()) {
    at::Tensor tensor;
    if (archive.try_read(key, tensor) || archive.try_read(key, tensor, /*is_buffer=*/true)) {
      if (tensor.is_floating_point() && !at::isfinite(tensor).all().item<bool>()) {
        return prefix + key;
      }
      continue;
    }
    torch::serialize::InputArchive sub;
    if (archive.try_read(key, sub)) {
      const std::string found = first_non_finite(sub, prefix + key + "/");
      if (!found.empty()) return found;
    }
  }
  return "";
}

bool module_finite(const torch::nn::Module& model) {
  for (const auto& p : model.parameters()) {
    if (!at::isfinite(p).all().item<bool>()) return false;
  }
  for (const auto& b : model.buffers()) {
    if (b.is_floating_point() && !at::isfinite(b).all().item<bool>()) return false;
  }
  return true;
}

}  // namespace

std::string non_finite_state(const torch::nn::Module& model, const Ema* ema,
                             const BucketAdamW* optimizer) {
  if (!module_finite(model)) return "weights";
  if (ema != nullptr && !ema->all_finite()) return "EMA weights";
  if (optimizer != nullptr && !optimizer->all_finite()) return "optimizer moments";
  return "";
}

std::string encode_checkpoint(const CheckpointInfo& info, const torch::nn::Module& model,
                              const Ema* ema, const BucketAdamW* optimizer) {
  const std::string bad = non_finite_state(model, ema, optimizer);
  if (!bad.empty()) {
    throw CheckpointError("checkpoint of step " + std::to_string(info.step) + " not written: its " +
                          bad + " hold NaN or infinite values");
  }
  torch::serialize::OutputArchive archive;
  archive.write("format_version", c10::IValue(info.format_version));
  archive.write("step", c10::IValue(info.step));
  archive.write("world_size", c10::IValue(info.world_size));
  archive.write("global_batch", c10::IValue(info.global_batch));
  archive.write("config", c10::IValue(info.config_yaml));
  archive.write("versions", c10::IValue(info.versions));
  torch::serialize::OutputArchive model_archive;
  model.save(model_archive);
  archive.write("model", model_archive);
  archive.write("has_ema", c10::IValue(ema != nullptr));
  if (ema != nullptr) {
    torch::serialize::OutputArchive ema_archive;
    ema->save(ema_archive);
    archive.write("ema", ema_archive);
  }
  archive.write("has_optimizer", c10::IValue(optimizer != nullptr));
  if (optimizer != nullptr) {
    torch::serialize::OutputArchive optimizer_archive;
    optimizer->save(optimizer_archive);
    archive.write("optimizer", optimizer_archive);
  }
  std::ostringstream payload_stream;
  archive.save_to(payload_stream);
  const std::string payload = payload_stream.str();

  std::string out(kMagic, sizeof(kMagic));
  uint64_t length = payload.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  out += sha256_bytes(payload);
  out += payload;
  return out;
}

LoadedCheckpoint LoadedCheckpoint::open(const std::string& path, const c10::Device& device) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw CheckpointError("checkpoint " + path + ": cannot open file");
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < kHeaderBytes || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    throw CheckpointError("checkpoint " + path + ": not a difftrain checkpoint (" +
                          std::to_string(bytes.size()) + " bytes, bad header)");
  }
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) {
    length |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[sizeof(kMagic) + i])) << (8 * i);
  }
  const uint64_t have = bytes.size() - kHeaderBytes;
  if (have != length) {
    throw CheckpointError("checkpoint " + path + ": truncated or padded (" + std::to_string(have) +
                          " payload bytes, header says " + std::to_string(length) + ")");
  }
  const std::string payload = bytes.substr(kHeaderBytes);
  if (sha256_bytes(payload) != bytes.substr(sizeof(kMagic) + 8, 32)) {
    throw CheckpointError("checkpoint " + path + ": checksum mismatch (file is corrupt)");
  }

  LoadedCheckpoint loaded;
  loaded.path_ = path;
  try {
    loaded.archive_.load_from(payload.data(), payload.size(), device);
    c10::IValue value;
    loaded.archive_.read("format_version", value);
    loaded.info_.format_version = value.toInt();
    if (loaded.info_.format_version != CheckpointInfo::kFormatVersion) {
      throw CheckpointError("checkpoint " + path + ": format version " +
                            std::to_string(loaded.info_.format_version) + ", this build reads " +
                            std::to_string(CheckpointInfo::kFormatVersion));
    }
    loaded.archive_.read("step", value);
    loaded.info_.step = value.toInt();
    loaded.archive_.read("world_size", value);
    loaded.info_.world_size = value.toInt();
    loaded.archive_.read("global_batch", value);
    loaded.info_.global_batch = value.toInt();
    loaded.archive_.read("config", value);
    loaded.info_.config_yaml = value.toStringRef();
    loaded.archive_.read("versions", value);
    loaded.info_.versions = value.toStringRef();
    loaded.archive_.read("has_ema", value);
    loaded.has_ema_ = value.toBool();
    loaded.archive_.read("has_optimizer", value);
    loaded.has_optimizer_ = value.toBool();
    const std::string non_finite = first_non_finite(loaded.archive_, "");
    if (!non_finite.empty()) {
      throw CheckpointError("checkpoint " + path + ": " + non_finite +
                            " holds NaN or infinite values (written by a diverged run)");
    }
  } catch (const CheckpointError&) {
    throw;
  } catch (const std::exception& e) {
    throw CheckpointError("checkpoint " + path +
                          ": unreadable payload: " + std::string(e.what()).substr(0, 200));
  }
  return loaded;
}

void LoadedCheckpoint::load_model(torch::nn::Module& model) {
  torch::serialize::InputArchive sub;
  archive_.read("model", sub);
  model.load(sub);
  // The load adopts the layout each tensor was written with (channels-last from a
  // train.channels_last run); hand back the default layout whatever wrote the file.
  set_memory_format(model, at::MemoryFormat::Contiguous);
}

void LoadedCheckpoint::load_ema(Ema& ema) {
  if (!has_ema_) throw CheckpointError("checkpoint " + path_ + ": holds no EMA weights");
  torch::serialize::InputArchive sub;
  archive_.read("ema", sub);
  ema.load(sub);
}

void LoadedCheckpoint::load_optimizer(BucketAdamW& optimizer) {
  if (!has_optimizer_) throw CheckpointError("checkpoint " + path_ + ": holds no optimizer state");
  torch::serialize::InputArchive sub;
  archive_.read("optimizer", sub);
  optimizer.load(sub);
}

CheckpointStore::CheckpointStore(std::string run_dir) : run_dir_(std::move(run_dir)) {}

std::string CheckpointStore::directory() const { return run_dir_ + "/checkpoints"; }

std::string CheckpointStore::path_for_step(int64_t step) const {
  return directory() + "/" + step_file_name(step, ".ckpt");
}

// Writes `bytes` to a temporary file and publishes it. DIFFTRAIN_TEST_CHECKPOINT_DELAY_S (tests
// only) pauses half-way through the write, so a test can kill the writer mid-checkpoint.
void write_checkpoint_file(const std::string& path, const std::string& bytes) {
  const char* delay = std::getenv("DIFFTRAIN_TEST_CHECKPOINT_DELAY_S");
  if (delay == nullptr) {
    data::write_file_atomic(path, bytes);
    return;
  }
  const std::string temp = data::temp_path_for(path);
  {
    std::ofstream out(temp, std::ios::binary);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size() / 2));
    out.flush();
    std::this_thread::sleep_for(std::chrono::duration<double>(std::atof(delay)));
    out.write(bytes.data() + bytes.size() / 2,
              static_cast<std::streamsize>(bytes.size() - bytes.size() / 2));
    if (!out) throw CheckpointError("checkpoint " + path + ": write failed");
  }
  data::publish_file(temp, path);
}

std::string CheckpointStore::commit(int64_t step, const std::string& bytes) const {
  std::filesystem::create_directories(directory());
  const std::string path = path_for_step(step);
  write_checkpoint_file(path, bytes);
  data::write_file_atomic(directory() + "/LATEST",
                          std::filesystem::path(path).filename().string() + "\n");
  return path;
}

std::optional<std::string> CheckpointStore::latest() const {
  std::ifstream in(directory() + "/LATEST");
  if (!in) return std::nullopt;
  std::string name;
  std::getline(in, name);
  if (name.empty()) return std::nullopt;
  return directory() + "/" + name;
}

int64_t checkpoint_step(const std::string& path) {
  const std::string name = std::filesystem::path(path).filename().string();
  if (name.size() < 11 || name.rfind("step-", 0) != 0 || name.substr(name.size() - 5) != ".ckpt") {
    return -1;
  }
  const std::string digits = name.substr(5, name.size() - 10);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
}

std::vector<std::string> CheckpointStore::prune(int64_t keep, int64_t keep_every) const {
  const auto files = list();
  const auto latest_path = latest();
  std::vector<std::string> deleted;
  const int64_t excess = static_cast<int64_t>(files.size()) - keep;
  for (int64_t i = 0; i < excess; ++i) {
    const std::string& file = files[static_cast<size_t>(i)];
    const int64_t step = checkpoint_step(file);
    if (keep_every > 0 && step % keep_every == 0) continue;
    if (latest_path && std::filesystem::equivalent(*latest_path, file)) continue;
    std::error_code error;
    if (std::filesystem::remove(file, error)) deleted.push_back(file);
  }
  return deleted;
}

int CheckpointStore::remove_stale_temp_files() const {
  int removed = 0;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory(), error)) {
    if (entry.path().filename().string().find(".tmp-") != std::string::npos) {
      std::filesystem::remove(entry.path(), error);
      ++removed;
    }
  }
  return removed;
}

std::optional<LoadedCheckpoint> CheckpointStore::open_newest_good(
    const c10::Device& device, const std::function<void(const std::string&)>& on_bad) const {
  std::vector<std::string> candidates;
  if (const auto named = latest()) candidates.push_back(*named);
  auto files = list();
  std::reverse(files.begin(), files.end());
  for (const auto& f : files) {
    if (candidates.empty() || f != candidates.front()) candidates.push_back(f);
  }
  if (candidates.empty()) return std::nullopt;
  std::string tried;
  for (const auto& path : candidates) {
    try {
      return LoadedCheckpoint::open(path, device);
    } catch (const CheckpointError& e) {
      on_bad(e.what());
      tried += (tried.empty() ? "" : ", ") + path;
    }
  }
  throw CheckpointError(directory() + ": no loadable checkpoint (tried " + tried +
                        "); move the bad files away to start over");
}

std::vector<std::string> CheckpointStore::list() const {
  std::vector<std::string> files;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(directory(), error)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("step-", 0) == 0 && entry.path().extension() == ".ckpt") {
      files.push_back(entry.path().string());
    }
  }
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace difftrain::trainer
