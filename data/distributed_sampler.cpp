// Reproducible epoch permutations (splitmix64-seeded mt19937_64, unbiased Fisher-Yates) and
// the step -> ids arithmetic.
#include "data/distributed_sampler.h"

#include <numeric>
#include <random>
#include <string>

#include "data/data_error.h"

namespace difftrain::data {
namespace {

// splitmix64 finaliser (Steele et al.): spreads nearby (seed, epoch) pairs far apart before
// they seed the Mersenne Twister, whose outputs from similar seeds are otherwise correlated.
uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Uniform in [0, bound) without modulo bias: reject draws below 2^64 mod bound.
uint64_t uniform_below(std::mt19937_64& rng, uint64_t bound) {
  const uint64_t threshold = (0 - bound) % bound;
  for (;;) {
    const uint64_t r = rng();
    if (r >= threshold) return r % bound;
  }
}

}  // namespace

DistributedSampler::DistributedSampler(int64_t dataset_size, int64_t global_batch, uint64_t seed)
    : dataset_size_(dataset_size), global_batch_(global_batch), seed_(seed) {
  if (dataset_size <= 0) {
    throw DataError("sampler: dataset size " + std::to_string(dataset_size) + ", want > 0");
  }
  if (global_batch <= 0 || global_batch > dataset_size) {
    throw DataError("sampler: global batch " + std::to_string(global_batch) +
                    " must be in [1, dataset size " + std::to_string(dataset_size) + "]");
  }
}

int64_t DistributedSampler::steps_per_epoch() const { return dataset_size_ / global_batch_; }

void DistributedSampler::check_step(int64_t step) const {
  if (step < 0) throw DataError("sampler: step " + std::to_string(step) + " is negative");
}

int64_t DistributedSampler::epoch_of(int64_t step) const {
  check_step(step);
  return step / steps_per_epoch();
}

const std::vector<int64_t>& DistributedSampler::cached_permutation(int64_t epoch) const {
  if (epoch < 0) throw DataError("sampler: epoch " + std::to_string(epoch) + " is negative");
  if (epoch == cached_epoch_) return cached_permutation_;
  std::mt19937_64 rng(splitmix64(splitmix64(seed_) ^ static_cast<uint64_t>(epoch)));
  std::vector<int64_t>& ids = cached_permutation_;
  cached_epoch_ = -1;  // stays invalid if anything below throws
  ids.resize(static_cast<size_t>(dataset_size_));
  std::iota(ids.begin(), ids.end(), int64_t{0});
  for (int64_t i = dataset_size_ - 1; i > 0; --i) {
    const auto j = static_cast<int64_t>(uniform_below(rng, static_cast<uint64_t>(i) + 1));
    std::swap(ids[i], ids[j]);
  }
  cached_epoch_ = epoch;
  return ids;
}

std::vector<int64_t> DistributedSampler::epoch_permutation(int64_t epoch) const {
  return cached_permutation(epoch);
}

std::vector<int64_t> DistributedSampler::global_batch(int64_t step) const {
  check_step(step);
  const std::vector<int64_t>& ids = cached_permutation(epoch_of(step));
  const int64_t begin = (step % steps_per_epoch()) * global_batch_;
  return std::vector<int64_t>(ids.begin() + begin, ids.begin() + begin + global_batch_);
}

std::vector<int64_t> DistributedSampler::rank_batch(int64_t step, int rank, int world_size) const {
  check_step(step);
  if (world_size < 1 || global_batch_ % world_size != 0 || rank < 0 || rank >= world_size) {
    throw DataError("sampler: rank " + std::to_string(rank) + " of world size " +
                    std::to_string(world_size) + " cannot split global batch " +
                    std::to_string(global_batch_) +
                    " (want world size dividing the global batch, 0 <= rank < world size)");
  }
  const int64_t per_rank = global_batch_ / world_size;
  const std::vector<int64_t>& ids = cached_permutation(epoch_of(step));
  const int64_t begin = (step % steps_per_epoch()) * global_batch_ + rank * per_rank;
  return std::vector<int64_t>(ids.begin() + begin, ids.begin() + begin + per_rank);
}

}  // namespace difftrain::data
