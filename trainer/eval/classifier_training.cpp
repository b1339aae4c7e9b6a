// The classifier's training loop: shuffled mini-batches of the in-memory train split.
#include "trainer/eval/classifier_training.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <stdexcept>

namespace difftrain::trainer {
namespace {

constexpr double kProgressEvery_s = 5.0;
constexpr double kWeightDecay = 1e-4;

double cosine_lr(double peak, int64_t step, int64_t steps) {
  return 0.5 * peak *
         (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(steps)));
}

}  // namespace

TrainedClassifier train_classifier(const EvalData& data, const ClassifierTrainOptions& options,
                                   const c10::Device& device, const ClassifierProgress& progress) {
  const data::Manifest& manifest = data.manifest();
  if (manifest.label_count < 2) {
    throw std::runtime_error("--data " + data.data_dir() + ": " +
                             std::to_string(manifest.label_count) +
                             " labels; the classifier needs a labelled dataset (prepare with "
                             "--labels, or a folder of class folders)");
  }
  if (options.batch_size < 1 || options.steps < 0 || (options.steps == 0 && options.epochs < 1)) {
    throw std::runtime_error(
        "classifier training: batch size " + std::to_string(options.batch_size) + ", steps " +
        std::to_string(options.steps) + ", epochs " + std::to_string(options.epochs) +
        ": want batch size >= 1 and steps >= 1 or epochs >= 1");
  }
  const auto start = std::chrono::steady_clock::now();
  const LabelledImages train = data.read_all_train();
  const int64_t n = train.size();
  const int64_t batch_size = std::min(options.batch_size, n);
  const int64_t steps =
      options.steps > 0 ? options.steps : options.epochs * ((n + batch_size - 1) / batch_size);

  torch::manual_seed(static_cast<uint64_t>(options.seed));  // weights and dropout
  ClassifierShape shape{manifest.shape, manifest.label_count, options.feature_dim};
  Classifier model(shape);
  model->to(device);
  model->train();
  torch::optim::AdamW optimizer(model->parameters(),
                                torch::optim::AdamWOptions(options.lr).weight_decay(kWeightDecay));
  at::Generator order = at::detail::createCPUGenerator(static_cast<uint64_t>(options.seed));

  at::Tensor permutation;
  int64_t position = n;  // forces a fresh permutation on the first step
  double loss_sum = 0.0;
  int64_t loss_count = 0;
  auto last_report = std::chrono::steady_clock::now();
  for (int64_t step = 0; step < steps; ++step) {
    // Next batch of a per-epoch permutation (the last partial batch of an epoch is dropped).
    if (position + batch_size > n) {
      permutation = at::randperm(n, order, at::kLong);
      position = 0;
    }
    const at::Tensor batch = permutation.narrow(0, position, batch_size);
    position += batch_size;
    const at::Tensor x = to_model_input(train.images.index_select(0, batch).to(device));
    const at::Tensor y = train.labels.index_select(0, batch).to(device);

    for (auto& group : optimizer.param_groups()) {
      static_cast<torch::optim::AdamWOptions&>(group.options())
          .lr(cosine_lr(options.lr, step, steps));
    }
    optimizer.zero_grad();
    const at::Tensor loss = torch::cross_entropy_loss(model->forward(x), y);
    loss.backward();
    optimizer.step();
    loss_sum += loss.item<double>();
    ++loss_count;

    const auto now = std::chrono::steady_clock::now();
    if (progress &&
        (step + 1 == steps ||
         std::chrono::duration<double>(now - last_report).count() >= kProgressEvery_s)) {
      progress(step + 1, steps, loss_sum / static_cast<double>(loss_count));
      loss_sum = 0.0;
      loss_count = 0;
      last_report = now;
    }
  }

  TrainedClassifier out;
  out.model = model;
  out.info.shape = shape;
  out.info.dataset_dir = data.data_dir();
  out.info.index_sha256 = data.index_sha256();
  out.info.test_split = data.test_description();
  out.info.train_images = n;
  out.info.test_images = data.test_size();
  out.info.steps = steps;
  out.info.batch_size = batch_size;
  out.info.seed = options.seed;
  out.info.test_accuracy = classifier_accuracy(model, data.read_all_test(), device);
  out.train_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

double classifier_accuracy(Classifier& model, const LabelledImages& images,
                           const c10::Device& device) {
  if (images.size() == 0) return 0.0;
  const at::Tensor predicted = classifier_predictions(model, images.images, device);
  return predicted.eq(images.labels).to(torch::kDouble).mean().item<double>();
}

}  // namespace difftrain::trainer
