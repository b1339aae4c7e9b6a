// Deterministic randomness keyed by (seed, purpose, step, position): what makes a resumed run
// continue bit for bit and a batch split over any number of ranks draw the same noise.
#pragma once

#include <cstdint>

namespace difftrain::trainer {

// SplitMix64 finaliser: a bijective, well-mixed 64-bit hash.
constexpr uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Seed for one purpose (a small tag), step and position; distinct inputs give unrelated seeds.
constexpr uint64_t derive_seed(uint64_t seed, uint64_t purpose, uint64_t step, uint64_t position) {
  return mix64(mix64(mix64(mix64(seed) ^ purpose) ^ step) ^ position);
}

// Purposes of derived seeds.
constexpr uint64_t kNoisePurpose = 1;    // timesteps and eps of one training sample
constexpr uint64_t kDropoutPurpose = 2;  // the global generator before one rank's forward
constexpr uint64_t kInitPurpose = 3;     // initial weights
constexpr uint64_t kSamplePurpose = 4;   // x_T and step noise of one generated image

}  // namespace difftrain::trainer
