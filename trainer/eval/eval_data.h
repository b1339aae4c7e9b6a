// Real images for evaluation: the train and test splits of prepared datasets, read into memory
// as uint8 tensors for the classifier and the Fréchet distances.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace difftrain::trainer {

// Images uint8 [N, C, H, W] and labels int64 [N] (zeros when unlabelled), on the CPU.
struct LabelledImages {
  at::Tensor images;
  at::Tensor labels;
  int64_t size() const { return images.defined() ? images.size(0) : 0; }
};

// With a test dataset, the train split is all of the data dataset and the test split all of the
// test dataset. Without one, every 10th sample of the data dataset (global index % 10 == 9) is
// held out as the test split and the rest is the train split: deterministic and, for a dataset
// stored in random or class-sorted order alike, spread over every class.
constexpr int64_t kHoldoutEvery = 10;

class EvalData {
 public:
  // Opens data_dir (and test_dir unless empty): DataError naming the file for a missing or bad
  // dataset; std::runtime_error when the test dataset's image shape or label count differs, or
  // a split would hold fewer than 2 images.
  EvalData(const std::string& data_dir, const std::string& test_dir);

  const data::Manifest& manifest() const { return data_->manifest(); }
  const std::string& data_dir() const { return data_->dir(); }
  // "DIR" of the test dataset, or "every 10th sample of DIR" for the held-out split.
  std::string test_description() const;
  // Lowercase hex SHA-256 of data_dir/index.json: names the dataset a classifier was trained on.
  const std::string& index_sha256() const { return index_sha256_; }

  int64_t train_size() const { return static_cast<int64_t>(train_indices_.size()); }
  int64_t test_size() const { return static_cast<int64_t>(test_indices_.size()); }

  // Train-split images at positions 0..train_size()-1 of the split (not dataset indices).
  LabelledImages read_train(const std::vector<int64_t>& positions) const;
  LabelledImages read_all_train() const;
  LabelledImages read_all_test() const;
  // Labels of the whole train split, read in blocks so memory stays small.
  std::vector<int64_t> train_labels() const;

 private:
  static LabelledImages read(const data::Dataset& dataset, const std::vector<int64_t>& indices);

  std::unique_ptr<data::Dataset> data_, test_;
  std::vector<int64_t> train_indices_, test_indices_;
  std::string index_sha256_;
};

}  // namespace difftrain::trainer
