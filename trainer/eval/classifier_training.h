// Training the evaluation classifier on a dataset's train split (AdamW, cosine-decayed learning
// rate, cross-entropy) and measuring its accuracy on the test split.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <functional>

#include "trainer/eval/classifier.h"
#include "trainer/eval/eval_data.h"

namespace difftrain::trainer {

struct ClassifierTrainOptions {
  int64_t epochs = 2;  // passes over the train split, used when steps == 0
  int64_t steps = 0;   // optimizer steps; 0 = epochs * ceil(train images / batch_size)
  int64_t batch_size = 128;
  double lr = 2e-3;  // peak; cosine decay to 0 over the steps
  int64_t seed = 0;  // weights, dropout and batch order
  int64_t feature_dim = 128;
};

struct TrainedClassifier {
  Classifier model{nullptr};
  ClassifierInfo info;  // everything but `versions`
  double train_s = 0.0;
};

// Called every few seconds and after the last step with the mean training loss since the last
// call.
using ClassifierProgress = std::function<void(int64_t step, int64_t steps, double mean_loss)>;

// Trains on data's train split and evaluates on its test split. Throws std::runtime_error for an
// unlabelled dataset (label_count < 2) or options out of range (batch_size < 1, steps < 0,
// epochs < 1 with steps == 0). Deterministic for a seed on one thread count.
TrainedClassifier train_classifier(const EvalData& data, const ClassifierTrainOptions& options,
                                   const c10::Device& device, const ClassifierProgress& progress);

// Fraction of `images` the classifier labels correctly, in [0, 1]; 0 for an empty set.
double classifier_accuracy(Classifier& model, const LabelledImages& images,
                           const c10::Device& device);

}  // namespace difftrain::trainer
