// Prefetcher: reads this rank's batches on a background thread into a bounded queue, so the
// training step never waits on HDF5 unless reading is slower than computing.
#pragma once

#include <any>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "data/dataset.h"
#include "data/distributed_sampler.h"
#include "data/manifest.h"

namespace difftrain::data {

// One rank's share of one global batch.
struct Batch {
  int64_t step = 0;
  int64_t size = 0;  // samples in this batch (global batch / world size)
  SampleShape shape;
  std::vector<uint8_t> images;  // size*C*H*W bytes, CHW per sample
  std::vector<int64_t> labels;  // size entries, zeros when unlabelled
  std::any prepared;            // what the prefetcher's `prepare` made of it (empty without one)
};

// Runs on the reader thread once a batch is read; its result becomes Batch::prepared. Lets the
// trainer move per-batch work (noise, pinned host copies) off the training step's thread.
using PrepareBatch = std::function<std::any(const Batch&)>;
// Runs first on the reader thread, before any read (e.g. to select the rank's GPU, which
// pinned allocations in `prepare` then use).
using ThreadStart = std::function<void()>;

// One background thread reads batches first_step, first_step+1, ... (this rank's ids from the
// sampler) and keeps up to `depth` of them ready. The stream has no end: the caller stops
// calling next() and destroys the prefetcher. `prepare`, when given, runs on the reader thread
// for each batch in order, after `thread_start`; an exception from either reaches next() like a
// read failure.
//
// `dataset` must outlive the prefetcher; the sampler is copied (its permutation cache is not
// thread-safe, so the reader thread owns its copy). A sampler covering more samples than the
// dataset, or any read failure, reaches the caller as a DataError from next(), after the
// batches read before it. next() and total_wait_seconds() may be called from any one thread
// at a time; total_wait_seconds() is safe concurrently with next().
class Prefetcher {
 public:
  // DataError if depth < 1, world_size < 1, rank outside [0, world_size), first_step < 0,
  // or the sampler's global batch is not divisible by world_size.
  Prefetcher(const Dataset& dataset, const DistributedSampler& sampler, int rank, int world_size,
             int64_t first_step, int depth = 4, PrepareBatch prepare = nullptr,
             ThreadStart thread_start = nullptr);
  // Stops and joins the reader thread; returns promptly (after at most the batch being read)
  // even when the queue is full.
  ~Prefetcher();
  Prefetcher(const Prefetcher&) = delete;
  Prefetcher& operator=(const Prefetcher&) = delete;

  // Blocks until the next batch (in step order) is ready and returns it; rethrows the
  // exception that stopped the reader thread once the batches before it are consumed.
  Batch next();
  // Total time callers have spent blocked in next(), in seconds.
  double total_wait_seconds() const;

 private:
  void run();

  const Dataset& dataset_;
  const DistributedSampler sampler_;
  const int rank_;
  const int world_size_;
  const size_t depth_;
  const PrepareBatch prepare_;
  const ThreadStart thread_start_;

  mutable std::mutex mutex_;
  std::condition_variable ready_;  // a batch or an error arrived
  std::condition_variable space_;  // the queue has room, or we are stopping
  std::deque<Batch> queue_;
  std::exception_ptr error_;
  bool stopping_ = false;
  int64_t next_step_;  // reader thread only
  double wait_seconds_ = 0;
  std::thread thread_;  // last: started once everything above is initialised
};

}  // namespace difftrain::data
