// Checkpoints: round trip of model, EMA and optimizer; truncation and bit flips are detected;
// the store publishes files and LATEST atomically.
#include "trainer/checkpoint/checkpoint.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>

#include "trainer/optim/bucket_adamw.h"
#include "trainer/optim/ema.h"

namespace difftrain::trainer {
namespace {

namespace fs = std::filesystem;

struct Net : torch::nn::Module {
  Net() {
    fc = register_module("fc", torch::nn::Linear(4, 3));
    register_buffer("count", torch::ones({2}));
  }
  torch::nn::Linear fc{nullptr};
};

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("difftrain-ckpt-" + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

// The trainer's optimizer over one gradient bucket holding every .grad() of `net`.
struct Optimizer {
  explicit Optimizer(Net& net)
      : buckets(single_gradient_bucket(net.parameters())),
        adamw(std::make_unique<BucketAdamW>(net.parameters(), buckets, AdamWSettings{})) {}
  void zero_grad() { buckets.front().flat.zero_(); }
  void step() { adamw->step(1e-2); }
  std::vector<launch::GradientBucket> buckets;
  std::unique_ptr<BucketAdamW> adamw;
};

std::string encode(Net& net, Ema& ema, Optimizer& optimizer, int64_t step) {
  CheckpointInfo info;
  info.step = step;
  info.world_size = 2;
  info.global_batch = 16;
  info.config_yaml = "train:\n  steps: 5\n";
  info.versions = "test";
  return encode_checkpoint(info, net, &ema, optimizer.adamw.get());
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary) << bytes;
}

TEST_F(CheckpointTest, RoundTripRestoresEverything) {
  torch::manual_seed(1);
  Net net;
  Optimizer optimizer(net);
  Ema ema(net, 0.9);
  for (int i = 0; i < 3; ++i) {
    optimizer.zero_grad();
    net.fc->forward(torch::randn({5, 4})).pow(2).sum().backward();
    optimizer.step();
    ema.update(net);
  }
  write_bytes(path("a.ckpt"), encode(net, ema, optimizer, 3));

  torch::manual_seed(2);
  Net other;
  Optimizer other_optimizer(other);
  Ema other_ema(other, 0.9);
  LoadedCheckpoint loaded = LoadedCheckpoint::open(path("a.ckpt"), torch::kCPU);
  EXPECT_EQ(loaded.info().step, 3);
  EXPECT_EQ(loaded.info().world_size, 2);
  EXPECT_EQ(loaded.info().global_batch, 16);
  EXPECT_EQ(loaded.info().config_yaml, "train:\n  steps: 5\n");
  loaded.load_model(other);
  loaded.load_ema(other_ema);
  loaded.load_optimizer(*other_optimizer.adamw);
  EXPECT_TRUE(torch::equal(other.fc->weight, net.fc->weight));
  EXPECT_EQ(other_ema.updates(), 3);

  // The same next step from both: identical weights only if the Adam moments came back too.
  const torch::Tensor x = torch::randn({5, 4});
  optimizer.zero_grad();
  net.fc->forward(x).pow(2).sum().backward();
  optimizer.step();
  other_optimizer.zero_grad();
  other.fc->forward(x).pow(2).sum().backward();
  other_optimizer.step();
  EXPECT_TRUE(torch::equal(other.fc->weight, net.fc->weight));
  Net ema_net, other_ema_net;
  ema.copy_to(ema_net);
  other_ema.copy_to(other_ema_net);
  EXPECT_TRUE(torch::equal(ema_net.fc->weight, other_ema_net.fc->weight));
}

TEST_F(CheckpointTest, TruncatedAndBitFlippedFilesAreDetected) {
  Net net;
  Optimizer optimizer(net);
  Ema ema(net, 0.9);
  const std::string bytes = encode(net, ema, optimizer, 1);

  write_bytes(path("truncated.ckpt"), bytes.substr(0, bytes.size() - 100));
  try {
    LoadedCheckpoint::open(path("truncated.ckpt"), torch::kCPU);
    FAIL() << "truncated checkpoint loaded";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path("truncated.ckpt")), std::string::npos) << e.what();
  }

  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x10;
  write_bytes(path("flipped.ckpt"), flipped);
  try {
    LoadedCheckpoint::open(path("flipped.ckpt"), torch::kCPU);
    FAIL() << "bit-flipped checkpoint loaded";
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("checksum mismatch"), std::string::npos) << e.what();
  }

  write_bytes(path("garbage.ckpt"), "hello");
  EXPECT_THROW(LoadedCheckpoint::open(path("garbage.ckpt"), torch::kCPU), CheckpointError);
  EXPECT_THROW(LoadedCheckpoint::open(path("missing.ckpt"), torch::kCPU), CheckpointError);
}

TEST_F(CheckpointTest, StoreCommitsAndPointsLatest) {
  CheckpointStore store(dir_.string());
  EXPECT_FALSE(store.latest().has_value());
  store.commit(10, "first");
  const std::string second = store.commit(20, "second");
  ASSERT_TRUE(store.latest().has_value());
  EXPECT_EQ(*store.latest(), second);
  EXPECT_EQ(store.list().size(), 2u);
  for (const auto& entry : fs::directory_iterator(store.directory())) {
    EXPECT_EQ(entry.path().string().find(".tmp"), std::string::npos) << "left a temp file";
  }
}

TEST_F(CheckpointTest, PruneKeepsNewestMultiplesAndLatest) {
  CheckpointStore store(dir_.string());
  for (int64_t step : {5, 10, 15, 20, 25, 30}) store.commit(step, "x");
  const auto deleted = store.prune(/*keep=*/2, /*keep_every=*/10);
  std::vector<int64_t> left;
  for (const auto& f : store.list()) left.push_back(checkpoint_step(f));
  EXPECT_EQ(left, (std::vector<int64_t>{10, 20, 25, 30}));
  EXPECT_EQ(deleted.size(), 2u);
  EXPECT_EQ(checkpoint_step("/a/step-000000042.ckpt"), 42);
  EXPECT_EQ(checkpoint_step("/a/step-000000042.ckpt.tmp-1"), -1);
}

TEST_F(CheckpointTest, OpenNewestGoodSkipsBadFiles) {
  Net net;
  Optimizer optimizer(net);
  Ema ema(net, 0.9);
  CheckpointStore store(dir_.string());
  EXPECT_FALSE(store.open_newest_good(torch::kCPU, [](const std::string&) {}).has_value());
  store.commit(1, encode(net, ema, optimizer, 1));
  const std::string bytes = encode(net, ema, optimizer, 2);
  store.commit(2, bytes.substr(0, bytes.size() / 2));
  std::vector<std::string> problems;
  auto loaded =
      store.open_newest_good(torch::kCPU, [&](const std::string& p) { problems.push_back(p); });
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->info().step, 1);
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("step-000000002.ckpt"), std::string::npos);
  write_bytes(store.path_for_step(1), "junk");
  EXPECT_THROW(store.open_newest_good(torch::kCPU, [](const std::string&) {}), CheckpointError);
}

}  // namespace
}  // namespace difftrain::trainer
