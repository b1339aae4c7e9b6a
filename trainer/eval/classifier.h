// The evaluation classifier: a small CNN trained on the dataset itself, whose penultimate layer
// is the feature space of `difftrain eval`'s Fréchet distances, and its self-describing file.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <cstdint>
#include <string>

#include "data/manifest.h"

namespace difftrain::trainer {

struct ClassifierShape {
  data::SampleShape image;  // any C; H and W at least 4 (two 2x poolings)
  int64_t num_classes = 0;  // >= 2
  int64_t feature_dim = 128;
};

// conv3x3(C->32) ReLU maxpool2, conv3x3(32->64) ReLU maxpool2, linear(64*(H/4)*(W/4) ->
// feature_dim) ReLU = features, dropout 0.3, linear(feature_dim -> num_classes) = logits. Input:
// float images in [-1, 1] (to_model_input), [B, C, H, W]. About 0.5 M parameters for 28x28 inputs.
class ClassifierImpl : public torch::nn::Module {
 public:
  explicit ClassifierImpl(const ClassifierShape& shape);

  // The penultimate embedding, [B, feature_dim], non-negative (after ReLU).
  at::Tensor features(const at::Tensor& x);
  // Class logits, [B, num_classes].
  at::Tensor forward(const at::Tensor& x);
  const ClassifierShape& shape() const { return shape_; }

 private:
  ClassifierShape shape_;
  torch::nn::Conv2d conv1_{nullptr}, conv2_{nullptr};
  torch::nn::Linear embed_{nullptr}, head_{nullptr};
};
TORCH_MODULE(Classifier);

// uint8 images [B, C, H, W] (any device) -> float32 in [-1, 1], as the U-Net is trained on.
at::Tensor to_model_input(const at::Tensor& images_uint8);
// Samples in [-1, 1] (float) -> uint8 images, rounded and clamped exactly as a PNG of them would
// be, so generated and real images reach the classifier through the same quantisation.
at::Tensor to_uint8_images(const at::Tensor& samples);

// Features [N, feature_dim] and predicted classes [N] of uint8 images [N, C, H, W] (CPU), run in
// eval mode under no-grad in batches of batch_size on `device`; results on the CPU.
at::Tensor classifier_features(Classifier& model, const at::Tensor& images_uint8,
                               const c10::Device& device, int64_t batch_size = 500);
at::Tensor classifier_predictions(Classifier& model, const at::Tensor& images_uint8,
                                  const c10::Device& device, int64_t batch_size = 500);

// What a classifier file records beside the weights.
struct ClassifierInfo {
  static constexpr int64_t kFormatVersion = 1;
  ClassifierShape shape;
  std::string dataset_dir;   // --data it was trained on, as given
  std::string index_sha256;  // SHA-256 of that dataset's index.json
  std::string test_split;    // EvalData::test_description()
  int64_t train_images = 0, test_images = 0;
  int64_t steps = 0, batch_size = 0, seed = 0;
  double test_accuracy = 0.0;  // on the test split, in [0, 1]
  std::string versions;        // version_string()
};

// File layout: magic "DTCLSF01", header length (8 bytes LE), header (JSON: the ClassifierInfo
// fields plus the SHA-256 of the weights archive), weights (a LibTorch archive). `head -c 2000
// classifier.pt` shows what it is.
std::string encode_classifier(const ClassifierInfo& info, const ClassifierImpl& model);

struct LoadedClassifier {
  ClassifierInfo info;
  Classifier model{nullptr};
};
// Reads and verifies a classifier file (magic, header, weights checksum) and builds the model
// on `device`. std::runtime_error naming the file: missing, not a classifier, corrupt, or a
// format version this build does not read.
LoadedClassifier load_classifier(const std::string& path, const c10::Device& device);

}  // namespace difftrain::trainer
