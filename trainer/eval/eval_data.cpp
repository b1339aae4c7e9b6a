// EvalData: opening the datasets, the held-out split and reading images into tensors.
#include "trainer/eval/eval_data.h"

#include <algorithm>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include "data/data_error.h"
#include "data/sha256.h"

namespace difftrain::trainer {
namespace {

std::string file_sha256(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw data::DataError(path + ": cannot open");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return data::sha256_hex(reinterpret_cast<const uint8_t*>(bytes.data()),
                          static_cast<int64_t>(bytes.size()));
}

std::vector<int64_t> iota(int64_t n) {
  std::vector<int64_t> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) out[static_cast<size_t>(i)] = i;
  return out;
}

}  // namespace

EvalData::EvalData(const std::string& data_dir, const std::string& test_dir)
    : data_(std::make_unique<data::Dataset>(data_dir)) {
  index_sha256_ = file_sha256(data_dir + "/" + data::Manifest::kFileName);
  if (!test_dir.empty()) {
    test_ = std::make_unique<data::Dataset>(test_dir);
    const data::Manifest& train = data_->manifest();
    const data::Manifest& test = test_->manifest();
    if (test.shape != train.shape || test.label_count != train.label_count) {
      throw std::runtime_error("--test-data " + test_dir + ": images " + test.shape.str() +
                               " with " + std::to_string(test.label_count) +
                               " labels, but --data " + data_dir + " has " + train.shape.str() +
                               " with " + std::to_string(train.label_count) + " labels");
    }
    train_indices_ = iota(data_->size());
    test_indices_ = iota(test_->size());
  } else {
    for (int64_t i = 0; i < data_->size(); ++i) {
      (i % kHoldoutEvery == kHoldoutEvery - 1 ? test_indices_ : train_indices_).push_back(i);
    }
  }
  if (train_size() < 2 || test_size() < 2) {
    throw std::runtime_error("--data " + data_dir + ": train split of " +
                             std::to_string(train_size()) + " and test split (" +
                             test_description() + ") of " + std::to_string(test_size()) +
                             " images; each needs at least 2");
  }
}

std::string EvalData::test_description() const {
  return test_ ? test_->dir()
               : "every " + std::to_string(kHoldoutEvery) + "th sample of " + data_->dir();
}

LabelledImages EvalData::read(const data::Dataset& dataset, const std::vector<int64_t>& indices) {
  const data::SampleShape& shape = dataset.manifest().shape;
  const int64_t n = static_cast<int64_t>(indices.size());
  LabelledImages out;
  out.images = at::empty({n, shape.channels, shape.height, shape.width}, at::kByte);
  out.labels = at::zeros({n}, at::kLong);
  if (n > 0) dataset.read(indices, out.images.data_ptr<uint8_t>(), out.labels.data_ptr<int64_t>());
  return out;
}

LabelledImages EvalData::read_train(const std::vector<int64_t>& positions) const {
  std::vector<int64_t> indices;
  indices.reserve(positions.size());
  for (const int64_t position : positions) {
    if (position < 0 || position >= train_size()) {
      throw std::runtime_error("eval: train position " + std::to_string(position) +
                               " out of range [0, " + std::to_string(train_size()) + ")");
    }
    indices.push_back(train_indices_[static_cast<size_t>(position)]);
  }
  return read(*data_, indices);
}

LabelledImages EvalData::read_all_train() const { return read(*data_, train_indices_); }

LabelledImages EvalData::read_all_test() const {
  return read(test_ ? *test_ : *data_, test_indices_);
}

std::vector<int64_t> EvalData::train_labels() const {
  std::vector<int64_t> labels;
  labels.reserve(train_indices_.size());
  for (const int64_t index : train_indices_) labels.push_back(data_->label(index));
  return labels;
}

}  // namespace difftrain::trainer
