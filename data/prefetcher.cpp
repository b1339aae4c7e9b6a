// Single-producer, single-consumer bounded queue of batches with error propagation.
#include "data/prefetcher.h"

#include <chrono>
#include <string>
#include <utility>

#include "data/data_error.h"

namespace difftrain::data {

Prefetcher::Prefetcher(const Dataset& dataset, const DistributedSampler& sampler, int rank,
                       int world_size, int64_t first_step, int depth, PrepareBatch prepare,
                       ThreadStart thread_start)
    : dataset_(dataset),
      sampler_(sampler),
      rank_(rank),
      world_size_(world_size),
      depth_(depth > 0 ? static_cast<size_t>(depth) : 0),
      prepare_(std::move(prepare)),
      thread_start_(std::move(thread_start)),
      next_step_(first_step) {
  if (depth < 1) throw DataError("prefetcher: depth " + std::to_string(depth) + ", want >= 1");
  if (first_step < 0) {
    throw DataError("prefetcher: first step " + std::to_string(first_step) + " is negative");
  }
  // Surface a bad rank/world size now rather than from the first next().
  (void)sampler_.rank_batch(first_step, rank, world_size);
  thread_ = std::thread([this] { run(); });
}

Prefetcher::~Prefetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  space_.notify_all();
  thread_.join();
}

void Prefetcher::run() {
  const SampleShape shape = dataset_.manifest().shape;
  try {
    if (thread_start_) thread_start_();
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        space_.wait(lock, [this] { return stopping_ || queue_.size() < depth_; });
        if (stopping_) return;
      }
      // Read outside the lock so next() can hand out queued batches meanwhile.
      Batch batch;
      batch.step = next_step_;
      const std::vector<int64_t> ids = sampler_.rank_batch(next_step_, rank_, world_size_);
      batch.size = static_cast<int64_t>(ids.size());
      batch.shape = shape;
      batch.images.resize(static_cast<size_t>(batch.size * shape.bytes()));
      batch.labels.resize(static_cast<size_t>(batch.size));
      dataset_.read(ids, batch.images.data(), batch.labels.data());
      if (prepare_) batch.prepared = prepare_(batch);
      ++next_step_;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        queue_.push_back(std::move(batch));
      }
      ready_.notify_one();
    }
  } catch (...) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      error_ = std::current_exception();
    }
    ready_.notify_one();
  }
}

Batch Prefetcher::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  if (queue_.empty() && !error_) {
    const auto start = std::chrono::steady_clock::now();
    ready_.wait(lock, [this] { return !queue_.empty() || error_; });
    wait_seconds_ +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  if (queue_.empty()) std::rethrow_exception(error_);
  Batch batch = std::move(queue_.front());
  queue_.pop_front();
  lock.unlock();
  space_.notify_one();
  return batch;
}

double Prefetcher::total_wait_seconds() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return wait_seconds_;
}

}  // namespace difftrain::data
