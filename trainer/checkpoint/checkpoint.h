// Checkpoint files: one self-checking file per checkpoint (model, EMA, optimizer, step, resolved
// config, world size, versions), published atomically, with a LATEST pointer beside them.
#pragma once

#include <torch/nn/module.h>
#include <torch/serialize/archive.h>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace difftrain::trainer {

class BucketAdamW;
class Ema;

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// What a checkpoint records beside the tensors.
struct CheckpointInfo {
  static constexpr int64_t kFormatVersion = 1;
  int64_t format_version = kFormatVersion;
  int64_t step = 0;          // optimizer steps completed
  int64_t world_size = 1;    // ranks of the run that wrote it
  int64_t global_batch = 0;  // images per step over all ranks
  std::string config_yaml;   // the resolved config
  std::string versions;      // "difftrain 0.1.0, torch 1.13.1"
};

// What of the training state holds a NaN or infinite value ("weights", "EMA weights",
// "optimizer moments"), or "" when all of it is finite. `ema` and `optimizer` may be null.
// Reads the device (synchronises).
std::string non_finite_state(const torch::nn::Module& model, const Ema* ema,
                             const BucketAdamW* optimizer);

// Serialises a checkpoint to bytes: magic "DTCKPT01", payload length (8 bytes LE), SHA-256 of
// the payload (32 bytes), payload (a LibTorch archive). `ema` and `optimizer` may be null.
// Throws CheckpointError when a weight, an EMA weight or an optimizer moment is NaN or
// infinite: a checkpoint is only ever written from finite state.
std::string encode_checkpoint(const CheckpointInfo& info, const torch::nn::Module& model,
                              const Ema* ema, const BucketAdamW* optimizer);

// A checkpoint read from disk and verified (magic, length, checksum) before anything is parsed.
class LoadedCheckpoint {
 public:
  // Throws CheckpointError naming the file: missing, truncated, checksum mismatch, not ours,
  // or holding a NaN or infinite value (named), which no resume should continue from.
  static LoadedCheckpoint open(const std::string& path, const c10::Device& device);

  const CheckpointInfo& info() const { return info_; }
  const std::string& path() const { return path_; }
  bool has_ema() const { return has_ema_; }
  bool has_optimizer() const { return has_optimizer_; }
  // The model's weights, in the default (contiguous) memory format whatever wrote the file.
  void load_model(torch::nn::Module& model);
  void load_ema(Ema& ema);
  void load_optimizer(BucketAdamW& optimizer);

 private:
  std::string path_;
  CheckpointInfo info_;
  bool has_ema_ = false;
  bool has_optimizer_ = false;
  torch::serialize::InputArchive archive_;
};

// Step number of a ".../step-<N>.ckpt" path; -1 when the name does not match.
int64_t checkpoint_step(const std::string& path);

// run_dir/checkpoints/: step-<N>.ckpt files and the LATEST pointer. Only rank 0 writes.
class CheckpointStore {
 public:
  explicit CheckpointStore(std::string run_dir);

  std::string directory() const;
  std::string path_for_step(int64_t step) const;
  // Publishes `bytes` as the checkpoint of `step` (temp name, fsync, rename), then points
  // LATEST at it the same way. A crash at any point leaves the previous checkpoint and a LATEST
  // naming a complete file. Returns the file's path.
  std::string commit(int64_t step, const std::string& bytes) const;
  // The file LATEST names, if LATEST exists.
  std::optional<std::string> latest() const;
  // Checkpoint files present, oldest step first.
  std::vector<std::string> list() const;
  // Deletes checkpoints beyond the newest `keep`, except steps that are multiples of
  // `keep_every` (> 0) and the file LATEST names. Returns the deleted paths.
  std::vector<std::string> prune(int64_t keep, int64_t keep_every) const;
  // Removes temporary files a killed writer left behind. Returns how many.
  int remove_stale_temp_files() const;
  // Opens the newest checkpoint that loads and is finite: LATEST first, then the others newest
  // first. A bad file is reported through `on_bad` and skipped. nullopt when the store holds no
  // checkpoint; CheckpointError when it holds some but none loads.
  std::optional<LoadedCheckpoint> open_newest_good(
      const c10::Device& device, const std::function<void(const std::string&)>& on_bad) const;

 private:
  std::string run_dir_;
};

}  // namespace difftrain::trainer
