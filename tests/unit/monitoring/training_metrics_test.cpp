// TrainingMetrics: the exposition passes promtool's linter and carries the recorded values.
#include "monitoring/training_metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <thread>
#include <vector>

#include "monitoring/clock.h"
#include "tests/unit/monitoring/exposition_parser.h"

namespace difftrain::monitoring {
namespace {

using testing::find_samples;
using testing::parse_exposition;
using testing::value_of;

const BuildInfo kBuild = {"0.1.0", "abc1234", "1.13.1", "mpi", "cpu"};

StepSample make_sample(int64_t step, double step_s) {
  StepSample s;
  s.step = step;
  s.images = 8;
  s.loss = 1.0 / static_cast<double>(step);
  s.data_wait_s = 0.002;
  s.forward_backward_s = 0.03;
  s.allreduce_s = 0.004;
  s.optimizer_s = 0.001;
  s.step_s = step_s;
  s.grad_norm = 2.0 * step;
  s.learning_rate = 1e-4 * step;
  s.ema_decay = 0.999;
  s.loss_by_quartile = {0.5, 0.25, 0.125, 0.0625};
  s.count_by_quartile = {2, 2, 4, 0};
  return s;
}

// Three steps, one of them skipped for a non-finite loss, then the rank-0 extras.
class TrainingMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    before_s_ = unix_now_s();
    metrics_.record_step(make_sample(1, 0.05));
    metrics_.record_step(make_sample(2, 0.2));
    StepSample bad = make_sample(3, 3.0);
    bad.loss = std::nan("");
    bad.skipped_nonfinite = true;
    bad.count_by_quartile = {0, 0, 0, 0};
    metrics_.record_step(bad);
    StepSample last = make_sample(4, 0.07);
    metrics_.record_step(last);
    after_s_ = unix_now_s();
  }

  TrainingMetrics metrics_{"cifar10-a", 3, kBuild};
  double before_s_ = 0, after_s_ = 0;
};

TEST_F(TrainingMetricsTest, ExpositionPassesPromtoolCheckMetrics) {
  if (!testing::have_promtool())
    GTEST_SKIP() << "promtool not on PATH (apt-get install prometheus)";
  metrics_.record_mean_loss(0.3);
  metrics_.record_checkpoint(1.5, 1.7e9);
  metrics_.record_images_per_second(123.0);
  metrics_.record_process_memory();
  metrics_.record_device_memory(1e9);
  const auto result = testing::run_with_input("promtool check metrics", metrics_.exposition());
  EXPECT_EQ(result.status, 0) << result.output << "\n--- exposition ---\n" << metrics_.exposition();
  EXPECT_EQ(result.output, "") << "promtool lint findings";
}

TEST_F(TrainingMetricsTest, CountersSumTheSteps) {
  const auto samples = parse_exposition(metrics_.exposition());
  const std::map<std::string, std::string> me = {{"run", "cifar10-a"}, {"rank", "3"}};
  EXPECT_EQ(value_of(samples, "difftrain_steps_total", me), 4);
  EXPECT_EQ(value_of(samples, "difftrain_images_total", me), 32);
  EXPECT_EQ(value_of(samples, "difftrain_nonfinite_steps_total", me), 1);
}

TEST_F(TrainingMetricsTest, HistogramsCountAndBucketTheDurations) {
  const auto samples = parse_exposition(metrics_.exposition());
  EXPECT_EQ(value_of(samples, "difftrain_step_seconds_count"), 4);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_step_seconds_sum"), 0.05 + 0.2 + 3.0 + 0.07);
  EXPECT_EQ(value_of(samples, "difftrain_step_seconds_bucket", {{"le", "0.05"}}), 1);
  EXPECT_EQ(value_of(samples, "difftrain_step_seconds_bucket", {{"le", "0.1"}}), 2);
  EXPECT_EQ(value_of(samples, "difftrain_step_seconds_bucket", {{"le", "2.5"}}), 3);
  EXPECT_EQ(value_of(samples, "difftrain_step_seconds_bucket", {{"le", "+Inf"}}), 4);
  EXPECT_EQ(find_samples(samples, "difftrain_step_seconds_bucket").size(),
            kStepSecondsBuckets.size() + 1);
  for (const char* phase : {"data_wait", "forward_backward", "allreduce", "optimizer"}) {
    EXPECT_EQ(value_of(samples, "difftrain_step_phase_seconds_count", {{"phase", phase}}), 4)
        << phase;
  }
  EXPECT_DOUBLE_EQ(
      value_of(samples, "difftrain_step_phase_seconds_sum", {{"phase", "forward_backward"}}),
      4 * 0.03);
  EXPECT_EQ(value_of(samples, "difftrain_step_phase_seconds_bucket",
                     {{"phase", "data_wait"}, {"le", "0.001"}}),
            0);
  EXPECT_EQ(value_of(samples, "difftrain_step_phase_seconds_bucket",
                     {{"phase", "data_wait"}, {"le", "0.0025"}}),
            4);
}

TEST_F(TrainingMetricsTest, GaugesHoldTheLastStep) {
  const auto samples = parse_exposition(metrics_.exposition());
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_loss"), 0.25);
  EXPECT_EQ(value_of(samples, "difftrain_step"), 4);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_grad_norm"), 8.0);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_learning_rate"), 4e-4);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_ema_decay"), 0.999);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_loss_by_timestep", {{"quartile", "q1"}}), 0.5);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_loss_by_timestep", {{"quartile", "q3"}}), 0.125);
  // No step ever had a sample in q4.
  EXPECT_TRUE(find_samples(samples, "difftrain_loss_by_timestep", {{"quartile", "q4"}}).empty());
  const double heartbeat_s = value_of(samples, "difftrain_heartbeat_timestamp_seconds");
  EXPECT_GE(heartbeat_s, before_s_ - 1);
  EXPECT_LE(heartbeat_s, after_s_ + 1);
}

TEST_F(TrainingMetricsTest, EveryLabelSetCarriesRunAndRank) {
  for (const auto& sample : parse_exposition(metrics_.exposition())) {
    EXPECT_EQ(sample.labels.at("run"), "cifar10-a") << sample.name;
    EXPECT_EQ(sample.labels.at("rank"), "3") << sample.name;
  }
}

TEST_F(TrainingMetricsTest, BuildInfoIsOneWithTheBuildLabels) {
  const auto samples = parse_exposition(metrics_.exposition());
  const auto found = find_samples(samples, "difftrain_build_info");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].value, 1);
  EXPECT_EQ(found[0].labels.at("version"), "0.1.0");
  EXPECT_EQ(found[0].labels.at("git_commit"), "abc1234");
  EXPECT_EQ(found[0].labels.at("torch_version"), "1.13.1");
  EXPECT_EQ(found[0].labels.at("backend"), "mpi");
  EXPECT_EQ(found[0].labels.at("device"), "cpu");
}

TEST_F(TrainingMetricsTest, OptionalGaugesAppearOnlyOnceRecorded) {
  for (const char* name :
       {"difftrain_loss_mean", "difftrain_checkpoint_duration_seconds",
        "difftrain_last_checkpoint_timestamp_seconds", "difftrain_images_per_second",
        "difftrain_process_resident_memory_bytes", "difftrain_device_memory_bytes"}) {
    EXPECT_TRUE(find_samples(parse_exposition(metrics_.exposition()), name).empty()) << name;
  }
  metrics_.record_mean_loss(0.3);
  metrics_.record_checkpoint(1.5, 1.7e9);
  metrics_.record_images_per_second(123.0);
  metrics_.record_process_memory();
  metrics_.record_device_memory(2e9);
  const auto samples = parse_exposition(metrics_.exposition());
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_loss_mean"), 0.3);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_checkpoint_duration_seconds"), 1.5);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_last_checkpoint_timestamp_seconds"), 1.7e9);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_images_per_second"), 123.0);
  EXPECT_DOUBLE_EQ(value_of(samples, "difftrain_device_memory_bytes"), 2e9);
  // A running test binary is resident in more than 1 MB and less than 64 GB.
  const double rss = value_of(samples, "difftrain_process_resident_memory_bytes");
  EXPECT_GT(rss, 1e6);
  EXPECT_LT(rss, 64e9);
}

TEST_F(TrainingMetricsTest, HeartbeatMovesForward) {
  const double first =
      value_of(parse_exposition(metrics_.exposition()), "difftrain_heartbeat_timestamp_seconds");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  metrics_.heartbeat();
  EXPECT_GT(
      value_of(parse_exposition(metrics_.exposition()), "difftrain_heartbeat_timestamp_seconds"),
      first);
}

TEST(TrainingMetrics, RecordsFromManyThreadsWithoutLosingSteps) {
  TrainingMetrics metrics("threads", 0, kBuild);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&metrics] {
      for (int i = 1; i <= 500; ++i) metrics.record_step(make_sample(i, 0.01));
    });
  }
  for (auto& thread : threads) thread.join();
  const auto samples = parse_exposition(metrics.exposition());
  EXPECT_EQ(value_of(samples, "difftrain_steps_total"), 2000);
  EXPECT_EQ(value_of(samples, "difftrain_images_total"), 16000);
  EXPECT_EQ(value_of(samples, "difftrain_step_seconds_count"), 2000);
}

TEST(TrainingMetrics, LabelValuesAreEscaped) {
  TrainingMetrics metrics("run \"quoted\" \\ back", 0, {"v\n2", "", "", "", ""});
  const auto samples = parse_exposition(metrics.exposition());
  EXPECT_EQ(
      find_samples(samples, "difftrain_steps_total", {{"run", "run \"quoted\" \\ back"}}).size(),
      1u);
  EXPECT_EQ(find_samples(samples, "difftrain_build_info", {{"version", "v\n2"}}).size(), 1u);
}

TEST(TrainingMetrics, RejectsBadArguments) {
  EXPECT_THROW(TrainingMetrics("", 0, kBuild), std::runtime_error);
  try {
    TrainingMetrics("run", -1, kBuild);
    FAIL() << "negative rank accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "monitoring rank -1: want >= 0");
  }
  TrainingMetrics metrics("run", 0, kBuild);
  StepSample negative = make_sample(1, 0.1);
  negative.images = -3;
  EXPECT_THROW(metrics.record_step(negative), std::runtime_error);
  negative = make_sample(1, 0.1);
  negative.count_by_quartile[2] = -1;
  EXPECT_THROW(metrics.record_step(negative), std::runtime_error);
}

}  // namespace
}  // namespace difftrain::monitoring
