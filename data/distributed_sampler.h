// DistributedSampler: which sample ids each rank reads at each step. Stateless by design: the
// ids of any step follow from (dataset size, global batch, seed, step) alone, so resuming at
// any step, on any number of ranks, needs no saved sampler state.
#pragma once

#include <cstdint>
#include <vector>

namespace difftrain::data {

// Epoch e is a permutation of [0, N) derived only from (seed, e) by our own Fisher-Yates over
// std::mt19937_64 (std::shuffle and uniform_int_distribution are implementation-defined, and
// the order must be the same on every platform). Global batch `step` is the step-th group of
// global_batch consecutive ids across epochs; the last N % global_batch ids of each epoch are
// dropped. Rank r of W takes positions [r*B, (r+1)*B) of its global batch, B = global_batch/W,
// so changing the world size at a fixed global batch keeps the global sample order.
//
// Thread-compatible: const methods cache the last epoch's permutation, so concurrent calls on
// one object need external locking (or one copy per thread; copies are independent).
class DistributedSampler {
 public:
  // DataError if dataset_size <= 0, global_batch <= 0 or global_batch > dataset_size.
  DistributedSampler(int64_t dataset_size, int64_t global_batch, uint64_t seed);

  int64_t dataset_size() const { return dataset_size_; }
  int64_t global_batch_size() const { return global_batch_; }
  uint64_t seed() const { return seed_; }

  int64_t steps_per_epoch() const;  // dataset_size / global_batch
  // Precondition for the step functions: step >= 0 (DataError otherwise).
  int64_t epoch_of(int64_t step) const;
  // The global_batch ids of this step, in order.
  std::vector<int64_t> global_batch(int64_t step) const;
  // This rank's B = global_batch/world_size ids of the step. DataError unless world_size >= 1,
  // global_batch % world_size == 0 and 0 <= rank < world_size.
  std::vector<int64_t> rank_batch(int64_t step, int rank, int world_size) const;
  // The permutation of [0, dataset_size) for epoch >= 0; caches the last one computed.
  std::vector<int64_t> epoch_permutation(int64_t epoch) const;

 private:
  const std::vector<int64_t>& cached_permutation(int64_t epoch) const;
  void check_step(int64_t step) const;

  int64_t dataset_size_;
  int64_t global_batch_;
  uint64_t seed_;
  mutable int64_t cached_epoch_ = -1;
  mutable std::vector<int64_t> cached_permutation_;
};

}  // namespace difftrain::data
