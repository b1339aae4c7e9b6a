// Reference image sets: class filtering, class-matched random subsets, noise.
#include "trainer/eval/reference_sets.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace difftrain::trainer {

std::vector<int64_t> split_evenly(int64_t n, int64_t parts) {
  std::vector<int64_t> counts(static_cast<size_t>(parts), n / parts);
  for (int64_t i = 0; i < n % parts; ++i) ++counts[static_cast<size_t>(i)];
  return counts;
}

LabelledImages test_images(const EvalData& data, const std::vector<int64_t>& classes) {
  LabelledImages all = data.read_all_test();
  if (classes.empty()) return all;
  at::Tensor keep = at::zeros({all.size()}, at::kBool);
  for (const int64_t label : classes) keep = keep.logical_or(all.labels.eq(label));
  const at::Tensor rows = keep.nonzero().flatten();
  return {all.images.index_select(0, rows), all.labels.index_select(0, rows)};
}

LabelledImages train_subset(const EvalData& data, const std::vector<int64_t>& classes,
                            const std::vector<int64_t>& counts, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  std::vector<int64_t> positions;
  if (classes.empty()) {
    if (counts.at(0) > data.train_size()) {
      throw std::runtime_error("--n " + std::to_string(counts[0]) + ": the train split has " +
                               std::to_string(data.train_size()) +
                               " images; the floor compares as many real images as generated");
    }
    const at::Tensor picked =
        at::randperm(data.train_size(), generator, at::kLong).narrow(0, 0, counts[0]);
    positions.assign(picked.data_ptr<int64_t>(), picked.data_ptr<int64_t>() + counts[0]);
  } else {
    const std::vector<int64_t> labels = data.train_labels();
    for (size_t i = 0; i < classes.size(); ++i) {
      std::vector<int64_t> of_class;
      for (size_t p = 0; p < labels.size(); ++p) {
        if (labels[p] == classes[i]) of_class.push_back(static_cast<int64_t>(p));
      }
      const int64_t have = static_cast<int64_t>(of_class.size());
      if (counts[i] > have) {
        throw std::runtime_error("--class " + std::to_string(classes[i]) +
                                 ": the train split has " + std::to_string(have) +
                                 " images of it, the floor needs " + std::to_string(counts[i]) +
                                 " (lower --n)");
      }
      const at::Tensor picked = at::randperm(have, generator, at::kLong);
      for (int64_t k = 0; k < counts[i]; ++k) {
        positions.push_back(of_class[static_cast<size_t>(picked[k].item<int64_t>())]);
      }
    }
  }
  return data.read_train(positions);
}

at::Tensor uniform_noise_images(int64_t n, const data::SampleShape& shape, uint64_t seed) {
  at::Generator generator = at::detail::createCPUGenerator(seed);
  return at::randint(0, 256, {n, shape.channels, shape.height, shape.width}, generator,
                     at::TensorOptions().dtype(at::kByte));
}

}  // namespace difftrain::trainer
