// The image sets an evaluation compares: real test images, a random real train subset with the
// same class counts as the generated images (the floor), and uniform noise (the ceiling).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "data/manifest.h"
#include "trainer/eval/eval_data.h"

namespace difftrain::trainer {

// n split into `parts` near-equal counts (the first n % parts get one more). parts >= 1.
std::vector<int64_t> split_evenly(int64_t n, int64_t parts);

// The test split, restricted to `classes` when not empty (in split order).
LabelledImages test_images(const EvalData& data, const std::vector<int64_t>& classes);

// A random train-split subset drawn without replacement with `seed`: counts[i] images of
// classes[i], or counts[0] images of any class when `classes` is empty. Throws
// std::runtime_error naming the class when the split holds too few.
LabelledImages train_subset(const EvalData& data, const std::vector<int64_t>& classes,
                            const std::vector<int64_t>& counts, uint64_t seed);

// n images of uniform noise, uint8 [n, C, H, W], each pixel uniform on 0..255, from `seed`.
at::Tensor uniform_noise_images(int64_t n, const data::SampleShape& shape, uint64_t seed);

}  // namespace difftrain::trainer
