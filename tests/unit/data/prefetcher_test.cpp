// Prefetcher: step order and content, prompt shutdown with a full queue, error propagation.
#include "data/prefetcher.h"

#include <gtest/gtest.h>

#include <any>
#include <chrono>
#include <future>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "data/data_error.h"
#include "data/shard_writer.h"
#include "test_util.h"

namespace difftrain::data {
namespace {

using testing::make_images;
using testing::TempDir;

const SampleShape kShape{1, 3, 3};

TEST(PrefetcherTest, BatchesArriveInStepOrderWithTheSamplersIds) {
  TempDir dir;
  const ImageSet images = make_images(40, kShape, 5);
  write_shards(images, dir.path(), 3);
  const Dataset dataset(dir.path());
  const DistributedSampler sampler(40, 8, 11);
  const int rank = 1, world = 2;
  Prefetcher prefetcher(dataset, sampler, rank, world, /*first_step=*/3, /*depth=*/2);
  // 12 steps crosses two epoch boundaries (5 steps per epoch).
  for (int64_t step = 3; step < 15; ++step) {
    const Batch batch = prefetcher.next();
    ASSERT_EQ(batch.step, step);
    ASSERT_EQ(batch.size, 4);
    EXPECT_EQ(batch.shape, kShape);
    const std::vector<int64_t> ids = sampler.rank_batch(step, rank, world);
    ASSERT_EQ(batch.images.size(), 4 * kShape.bytes());
    ASSERT_EQ(batch.labels.size(), 4u);
    for (size_t i = 0; i < ids.size(); ++i) {
      EXPECT_TRUE(std::equal(batch.images.begin() + i * kShape.bytes(),
                             batch.images.begin() + (i + 1) * kShape.bytes(),
                             images.pixels.begin() + ids[i] * kShape.bytes()))
          << "step " << step << " sample " << i;
      EXPECT_EQ(batch.labels[i], ids[i] % 5);
    }
  }
  EXPECT_GE(prefetcher.total_wait_seconds(), 0.0);
}

TEST(PrefetcherTest, DestructorReturnsPromptlyWithFullQueue) {
  TempDir dir;
  write_shards(make_images(40, kShape, 0), dir.path(), 2);
  const Dataset dataset(dir.path());
  const DistributedSampler sampler(40, 4, 1);
  auto prefetcher = std::make_unique<Prefetcher>(dataset, sampler, 0, 1, 0, /*depth=*/2);
  // Wait until the reader has filled the queue and is blocked on it: reading 2 batches of 4
  // tiny images takes well under the pause.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  // Destroy on a detached thread so that a destructor that never returns fails the test
  // instead of hanging the suite.
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> finished = done->get_future();
  std::thread([done, p = prefetcher.release()] {
    delete p;
    done->set_value();
  }).detach();
  EXPECT_EQ(finished.wait_for(std::chrono::seconds(2)), std::future_status::ready)
      << "~Prefetcher did not return within 2 s with a full queue";
}

TEST(PrefetcherTest, ReaderErrorIsRethrownFromNextAfterEarlierBatches) {
  TempDir dir;
  write_shards(make_images(10, kShape, 0), dir.path(), 1);
  const Dataset dataset(dir.path());
  // A sampler over 1000 ids against a 10-sample dataset: the first batch already holds an
  // id the dataset does not have, and the reader thread's DataError must reach next().
  const DistributedSampler sampler(1000, 100, 0);
  Prefetcher prefetcher(dataset, sampler, 0, 1, 0);
  try {
    prefetcher.next();
    FAIL() << "no DataError";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("outside [0, 10)"), std::string::npos) << e.what();
  }
  // It stays failed rather than hanging.
  EXPECT_THROW(prefetcher.next(), DataError);
}

TEST(PrefetcherTest, PrepareRunsOnTheReaderThreadInStepOrder) {
  TempDir dir;
  write_shards(make_images(16, kShape, 3), dir.path(), 2);
  const Dataset dataset(dir.path());
  const DistributedSampler sampler(16, 4, 2);
  const std::thread::id caller = std::this_thread::get_id();
  Prefetcher prefetcher(dataset, sampler, 0, 1, /*first_step=*/2, /*depth=*/2,
                        [caller](const Batch& batch) -> std::any {
                          if (std::this_thread::get_id() == caller) return std::string("caller");
                          int64_t label_sum = 0;
                          for (int64_t label : batch.labels) label_sum += label;
                          return std::make_pair(batch.step, label_sum);
                        });
  for (int64_t step = 2; step < 9; ++step) {
    const Batch batch = prefetcher.next();
    const auto* prepared = std::any_cast<std::pair<int64_t, int64_t>>(&batch.prepared);
    ASSERT_NE(prepared, nullptr) << "prepare ran on the caller's thread or not at all";
    EXPECT_EQ(prepared->first, step);
    int64_t label_sum = 0;
    for (int64_t label : batch.labels) label_sum += label;
    EXPECT_EQ(prepared->second, label_sum);
  }
}

TEST(PrefetcherTest, ThreadStartRunsOnceOnTheReaderThreadBeforeAnyPrepare) {
  TempDir dir;
  write_shards(make_images(16, kShape, 3), dir.path(), 2);
  const Dataset dataset(dir.path());
  const DistributedSampler sampler(16, 4, 2);
  // Written by the reader thread only, read after next() has handed over its batches.
  std::thread::id start_thread;
  int starts = 0;
  std::vector<int> starts_seen_by_prepare;
  {
    Prefetcher prefetcher(
        dataset, sampler, 0, 1, /*first_step=*/0, /*depth=*/2,
        [&](const Batch& batch) -> std::any {
          starts_seen_by_prepare.push_back(starts);
          return std::this_thread::get_id() == start_thread ? batch.step : int64_t{-1};
        },
        [&] {
          start_thread = std::this_thread::get_id();
          ++starts;
        });
    for (int64_t step = 0; step < 5; ++step) {
      EXPECT_EQ(std::any_cast<int64_t>(prefetcher.next().prepared), step)
          << "prepare ran on another thread than thread_start";
    }
  }
  EXPECT_NE(start_thread, std::this_thread::get_id());
  EXPECT_EQ(starts, 1);
  ASSERT_GE(starts_seen_by_prepare.size(), 5u);
  for (int seen : starts_seen_by_prepare) EXPECT_EQ(seen, 1);
}

TEST(PrefetcherTest, ThreadStartErrorIsRethrownFromNext) {
  TempDir dir;
  write_shards(make_images(16, kShape, 0), dir.path(), 1);
  const Dataset dataset(dir.path());
  const DistributedSampler sampler(16, 4, 0);
  Prefetcher prefetcher(dataset, sampler, 0, 1, 0, 2, nullptr,
                        [] { throw std::runtime_error("no such GPU"); });
  try {
    prefetcher.next();
    FAIL() << "no error from thread_start";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "no such GPU");
  }
}

TEST(PrefetcherTest, PrepareErrorIsRethrownFromNextAfterEarlierBatches) {
  TempDir dir;
  write_shards(make_images(16, kShape, 0), dir.path(), 1);
  const Dataset dataset(dir.path());
  const DistributedSampler sampler(16, 4, 0);
  Prefetcher prefetcher(dataset, sampler, 0, 1, 0, 2, [](const Batch& batch) -> std::any {
    if (batch.step == 2) throw std::runtime_error("prepare failed at step 2");
    return batch.step;
  });
  EXPECT_EQ(std::any_cast<int64_t>(prefetcher.next().prepared), 0);
  EXPECT_EQ(std::any_cast<int64_t>(prefetcher.next().prepared), 1);
  try {
    prefetcher.next();
    FAIL() << "no error from prepare";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "prepare failed at step 2");
  }
}

TEST(PrefetcherTest, RejectsBadArguments) {
  TempDir dir;
  write_shards(make_images(8, kShape, 0), dir.path(), 1);
  const Dataset dataset(dir.path());
  const DistributedSampler sampler(8, 4, 0);
  EXPECT_THROW(Prefetcher(dataset, sampler, 0, 3, 0), DataError);  // 4 % 3 != 0
  EXPECT_THROW(Prefetcher(dataset, sampler, 0, 1, 0, 0), DataError);
  EXPECT_THROW(Prefetcher(dataset, sampler, 0, 1, -1), DataError);
}

}  // namespace
}  // namespace difftrain::data
