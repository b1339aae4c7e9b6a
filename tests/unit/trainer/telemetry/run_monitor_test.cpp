// RunMonitor: loss by timestep quartile, the string gather behind the targets file, run label
// and paths, and one rank's whole life (targets file, /metrics, metrics.jsonl, loss curve,
// resume, removal of the targets file on a normal end only). One process, a fake communicator.
#include "trainer/telemetry/run_monitor.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/png_io.h"
#include "launch/communicator.h"
#include "monitoring/loss_curve.h"
#include "tests/unit/trainer/test_util.h"
#include "trainer/config/config.h"

namespace difftrain::trainer {
namespace {

namespace fs = std::filesystem;

// A communicator for one process pretending to be rank `rank` of `world`: all_reduce_sum adds
// the next of `others` (what the other ranks would have contributed), broadcast and barrier
// do nothing.
class FakeCommunicator : public launch::Communicator {
 public:
  FakeCommunicator(int rank, int world, std::vector<at::Tensor> others = {})
      : rank_(rank), world_(world), others_(std::move(others)) {}

  std::unique_ptr<launch::Work> all_reduce_sum_async(const at::Tensor& tensor) override {
    if (next_ < others_.size()) tensor.add_(others_[next_++]);
    return std::make_unique<Done>();
  }
  void broadcast(const at::Tensor&, int) override {}
  void barrier() override {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string backend() const override { return "fake"; }

 private:
  struct Done : launch::Work {
    void wait() override {}
    bool is_completed() override { return true; }
  };
  int rank_, world_;
  std::vector<at::Tensor> others_;
  size_t next_ = 0;
};

// GET `path` from 127.0.0.1:port over HTTP/1.0; the whole response, "" on failure.
std::string http_get(int port, const std::string& path) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  std::string response;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
    const std::string request = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (::send(fd, request.data(), request.size(), 0) == static_cast<ssize_t>(request.size())) {
      char buffer[4096];
      ssize_t n;
      while ((n = ::recv(fd, buffer, sizeof buffer, 0)) > 0) response.append(buffer, n);
    }
  }
  ::close(fd);
  return response;
}

std::vector<nlohmann::json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  std::vector<nlohmann::json> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

using test_util::error_of;

TEST(TimestepQuartiles, MeanLossPerQuarterOfT) {
  const at::Tensor losses = torch::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 6.0}, torch::kFloat);
  const at::Tensor t = torch::tensor({0, 249, 250, 600, 999, 998}, torch::kLong);
  const TimestepQuartiles q = timestep_quartiles(losses, t, 1000);
  EXPECT_EQ(q.count, (std::array<int64_t, 4>{2, 1, 1, 2}));
  EXPECT_DOUBLE_EQ(q.mean_loss[0], 1.5);
  EXPECT_DOUBLE_EQ(q.mean_loss[1], 3.0);
  EXPECT_DOUBLE_EQ(q.mean_loss[2], 4.0);
  EXPECT_DOUBLE_EQ(q.mean_loss[3], 5.5);
}

TEST(TimestepQuartiles, BoundariesWhenTIsNotAMultipleOfFour) {
  // T = 10: q1 = {0,1,2}, q2 = {3,4}, q3 = {5,6,7}, q4 = {8,9}  (floor(4t/T)).
  const at::Tensor t = torch::arange(10, torch::kLong);
  const at::Tensor losses = t.to(torch::kDouble);
  const TimestepQuartiles q = timestep_quartiles(losses, t, 10);
  EXPECT_EQ(q.count, (std::array<int64_t, 4>{3, 2, 3, 2}));
  EXPECT_DOUBLE_EQ(q.mean_loss[0], 1.0);
  EXPECT_DOUBLE_EQ(q.mean_loss[1], 3.5);
  EXPECT_DOUBLE_EQ(q.mean_loss[2], 6.0);
  EXPECT_DOUBLE_EQ(q.mean_loss[3], 8.5);
}

TEST(TimestepQuartiles, EmptyQuartilesHaveZeroCount) {
  const TimestepQuartiles q =
      timestep_quartiles(torch::tensor({2.0, 4.0}), torch::tensor({10, 20}), 1000);
  EXPECT_EQ(q.count, (std::array<int64_t, 4>{2, 0, 0, 0}));
  EXPECT_DOUBLE_EQ(q.mean_loss[0], 3.0);
  EXPECT_DOUBLE_EQ(q.mean_loss[3], 0.0);
}

TEST(TimestepQuartiles, MismatchedShapesAreNamed) {
  const std::string error =
      error_of([] { timestep_quartiles(torch::ones({8}), torch::zeros({4}, torch::kLong), 1000); });
  EXPECT_NE(error.find("[8]"), std::string::npos) << error;
  EXPECT_NE(error.find("[4]"), std::string::npos) << error;
  EXPECT_NE(
      error_of([] { timestep_quartiles(torch::ones({2}), torch::zeros({2}), 0); }).find("T = 0"),
      std::string::npos);
}

TEST(AllGatherStrings, EachRankFillsItsRow) {
  // Rank 1 of 3: ranks 0 and 2 contribute their rows through the (fake) all-reduce.
  at::Tensor others = torch::zeros({3, 16}, torch::kByte);
  const std::string a = "node-a:9100", c = "node-c:40000";
  std::memcpy(others[0].data_ptr<uint8_t>(), a.data(), a.size());
  std::memcpy(others[2].data_ptr<uint8_t>(), c.data(), c.size());
  FakeCommunicator comm(1, 3, {others});
  EXPECT_EQ(all_gather_strings(comm, "node-b:9101", 16),
            (std::vector<std::string>{a, "node-b:9101", c}));
}

TEST(AllGatherStrings, FullRowAndTooLong) {
  FakeCommunicator comm(0, 1);
  EXPECT_EQ(all_gather_strings(comm, "12345678", 8), std::vector<std::string>{"12345678"});
  const std::string error = error_of([&] { all_gather_strings(comm, "123456789", 8); });
  EXPECT_NE(error.find("'123456789'"), std::string::npos) << error;
}

TEST(RunLabel, RunNameElseRunDirectoryName) {
  Config config;
  EXPECT_EQ(run_label(config, "runs/cifar-a"), "cifar-a");
  EXPECT_EQ(run_label(config, "runs/cifar-a/"), "cifar-a");
  EXPECT_EQ(run_label(config, "."), fs::current_path().filename().string());
  EXPECT_EQ(targets_path(config, "runs/x"), "runs/x/prometheus-targets.json");
  config.monitoring.run_name = "named";
  config.monitoring.targets_file = "/shared/targets/named.json";
  EXPECT_EQ(run_label(config, "runs/cifar-a"), "named");
  EXPECT_EQ(targets_path(config, "runs/x"), "/shared/targets/named.json");
}

class RunMonitorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = (fs::temp_directory_path() / ("difftrain-run-monitor-" + std::to_string(getpid())))
               .string();
    fs::remove_all(dir_);
    fs::create_directories(dir_ + "/run-a");
    run_dir_ = dir_ + "/run-a";
    config_.monitoring.port = 0;
    config_.monitoring.bind = "127.0.0.1";
    config_.diffusion.timesteps = 1000;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A step of 4 samples, one per quartile, loss = 0.1 * (quartile + 1) + `offset`.
  StepRecord step_record(int64_t step, double offset) const {
    StepRecord record;
    record.sample.step = step;
    record.sample.images = 4;
    record.per_sample_loss = torch::tensor({0.1, 0.2, 0.3, 0.4}, torch::kFloat) + offset;
    record.timesteps = torch::tensor({10, 300, 600, 900}, torch::kLong);
    record.loss = record.per_sample_loss.mean();
    record.sample.data_wait_s = 0.01;
    record.sample.forward_backward_s = 0.2;
    record.sample.allreduce_s = 0.03;
    record.sample.optimizer_s = 0.04;
    record.sample.step_s = 0.3;
    record.sample.grad_norm = 1.5;
    record.sample.learning_rate = 1e-3;
    record.sample.ema_decay = 0.999;
    return record;
  }

  std::string dir_, run_dir_;
  Config config_;
  RankPlace place_{0, "unused-host", c10::Device(c10::kCPU), "mpi"};
};

TEST_F(RunMonitorTest, PublishesTargetAndServesStepMetrics) {
  FakeCommunicator comm(0, 1);
  RunMonitor monitor(config_, run_dir_, comm, place_);
  ASSERT_EQ(monitor.target().rfind("127.0.0.1:", 0), 0u) << monitor.target();
  EXPECT_EQ(monitor.targets(), std::vector<std::string>{monitor.target()});
  EXPECT_EQ(monitor.run(), "run-a");

  std::ifstream targets_file(run_dir_ + "/prometheus-targets.json");
  const nlohmann::json targets = nlohmann::json::parse(targets_file);
  EXPECT_EQ(targets[0]["targets"], nlohmann::json::array({monitor.target()}));
  EXPECT_EQ(targets[0]["labels"]["run"], "run-a");

  monitor.record_step(step_record(1, 0.0));
  const int port = std::stoi(monitor.target().substr(monitor.target().rfind(':') + 1));
  const std::string metrics = http_get(port, "/metrics");
  const std::string labels = "{rank=\"0\",run=\"run-a\"";
  EXPECT_NE(metrics.find("difftrain_steps_total" + labels + "} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("difftrain_images_total" + labels + "} 4"), std::string::npos);
  EXPECT_NE(metrics.find("difftrain_step" + labels + "} 1"), std::string::npos);
  EXPECT_NE(metrics.find("difftrain_loss_by_timestep" + labels + ",quartile=\"q3\"} 0.3"),
            std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("difftrain_build_info" + labels + ",backend=\"mpi\",device=\"cpu\""),
            std::string::npos);
  EXPECT_NE(metrics.find("difftrain_process_resident_memory_bytes" + labels), std::string::npos);
  EXPECT_EQ(metrics.find("difftrain_device_memory_bytes" + labels), std::string::npos);
}

TEST_F(RunMonitorTest, IntervalsWriteJsonlAndCheckpointsDrawTheCurve) {
  {
    FakeCommunicator comm(0, 1);
    RunMonitor monitor(config_, run_dir_, comm, place_);
    monitor.record_step(step_record(1, 0.0));
    monitor.record_step(step_record(2, 0.1));
    monitor.record_interval(2, 0.3, 12.5);
    monitor.record_step(step_record(3, 0.0));
    monitor.record_interval(3, 0.25, 10.0);
    monitor.record_checkpoint(0.5);
  }
  const std::vector<nlohmann::json> lines = read_jsonl(run_dir_ + "/metrics.jsonl");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["step"], 2);
  EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 0.3);
  EXPECT_DOUBLE_EQ(lines[0]["images_per_s"].get<double>(), 12.5);
  EXPECT_DOUBLE_EQ(lines[0]["step_s"].get<double>(), 0.3);  // mean of the interval's 2 steps
  EXPECT_DOUBLE_EQ(lines[0]["learning_rate"].get<double>(), 1e-3);
  EXPECT_EQ(lines[0]["nonfinite_steps"], 0);
  ASSERT_EQ(lines[0]["loss_by_timestep"].size(), 4u);
  EXPECT_NEAR(lines[0]["loss_by_timestep"][3].get<double>(), 0.5, 1e-6);  // step 2: 0.4 + 0.1
  EXPECT_EQ(lines[1]["step"], 3);
  EXPECT_GT(lines[1]["time_s"].get<double>(), 1.6e9);

  const data::Image curve = data::read_png(run_dir_ + "/loss-curve.png");
  EXPECT_EQ(curve.width, 800);
  EXPECT_EQ(curve.height, 450);
  EXPECT_EQ(curve.channels, 3);
  EXPECT_EQ(curve.pixels, monitoring::render_loss_curve({{2, 0.3}, {3, 0.25}}, 800, 450));

  // Resumed: the curve keeps the earlier lines, metrics.jsonl is appended to.
  {
    FakeCommunicator comm(0, 1);
    RunMonitor monitor(config_, run_dir_, comm, place_);
    monitor.record_step(step_record(4, 0.0));
    monitor.record_interval(4, 0.2, 11.0);
    monitor.record_checkpoint(0.4);
  }
  EXPECT_EQ(read_jsonl(run_dir_ + "/metrics.jsonl").size(), 3u);
  EXPECT_EQ(data::read_png(run_dir_ + "/loss-curve.png").pixels,
            monitoring::render_loss_curve({{2, 0.3}, {3, 0.25}, {4, 0.2}}, 800, 450));
}

TEST_F(RunMonitorTest, NormalEndRemovesTargetsFileAnExceptionKeepsIt) {
  const std::string targets = run_dir_ + "/prometheus-targets.json";
  {
    FakeCommunicator comm(0, 1);
    RunMonitor monitor(config_, run_dir_, comm, place_);
    EXPECT_TRUE(fs::exists(targets));
  }
  EXPECT_FALSE(fs::exists(targets)) << "a finished run must leave service discovery";

  try {
    FakeCommunicator comm(0, 1);
    RunMonitor monitor(config_, run_dir_, comm, place_);
    throw std::runtime_error("training failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(fs::exists(targets)) << "a failed run must stay discovered so that it alerts";
}

TEST_F(RunMonitorTest, TargetsFileInItsOwnFolderWithBasePortPlusLocalRank) {
  config_.monitoring.targets_file = dir_ + "/shared/targets/run-a.json";
  // A free port for the base: bind one, release it, then ask for base + local rank 1.
  int base = 0;
  {
    FakeCommunicator comm(0, 1);
    RunMonitor probe(config_, run_dir_, comm, place_);
    base = std::stoi(probe.target().substr(probe.target().rfind(':') + 1)) - 1;
  }
  config_.monitoring.port = base;
  place_.local_rank = 1;
  FakeCommunicator comm(0, 1);
  RunMonitor monitor(config_, run_dir_, comm, place_);
  EXPECT_EQ(monitor.target(), "127.0.0.1:" + std::to_string(base + 1));
  EXPECT_TRUE(fs::exists(config_.monitoring.targets_file));
}

TEST_F(RunMonitorTest, PortMinusOneMeansNoExporterButTheRunFiles) {
  config_.monitoring.port = -1;
  {
    FakeCommunicator comm(0, 1);
    RunMonitor monitor(config_, run_dir_, comm, place_);
    EXPECT_EQ(monitor.target(), "");
    EXPECT_TRUE(monitor.targets().empty());
    monitor.record_step(step_record(1, 0.0));
    monitor.record_interval(1, 0.25, 3.0);
    monitor.record_checkpoint(0.1);
  }
  EXPECT_FALSE(fs::exists(run_dir_ + "/prometheus-targets.json"));
  EXPECT_EQ(read_jsonl(run_dir_ + "/metrics.jsonl").size(), 1u);
  EXPECT_TRUE(fs::exists(run_dir_ + "/loss-curve.png"));
}

TEST_F(RunMonitorTest, OtherRanksWriteNoRunFiles) {
  // Rank 1 of 2; rank 0's target arrives through the all-reduce.
  at::Tensor others = torch::zeros({2, 256}, torch::kByte);
  const std::string rank0 = "127.0.0.1:1";
  std::memcpy(others[0].data_ptr<uint8_t>(), rank0.data(), rank0.size());
  FakeCommunicator comm(1, 2, {others});
  {
    RunMonitor monitor(config_, run_dir_, comm, place_);
    EXPECT_EQ(monitor.targets().size(), 2u);
    EXPECT_EQ(monitor.targets()[0], rank0);
    monitor.record_step(step_record(1, 0.0));
    monitor.record_interval(1, 0.25, 3.0);
    monitor.record_checkpoint(0.1);
  }
  EXPECT_FALSE(fs::exists(run_dir_ + "/prometheus-targets.json"));
  EXPECT_FALSE(fs::exists(run_dir_ + "/metrics.jsonl"));
  EXPECT_FALSE(fs::exists(run_dir_ + "/loss-curve.png"));
}

}  // namespace
}  // namespace difftrain::trainer
