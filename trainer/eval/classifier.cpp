// The evaluation CNN, image conversions, batched inference and the classifier file format.
#include "trainer/eval/classifier.h"

#include <torch/torch.h>

#include <cstring>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "data/sha256.h"

namespace difftrain::trainer {
namespace {

constexpr char kMagic[8] = {'D', 'T', 'C', 'L', 'S', 'F', '0', '1'};
constexpr int64_t kConv1Channels = 32, kConv2Channels = 64;
constexpr double kDropout = 0.3;

void check_shape(const ClassifierShape& shape) {
  if (shape.image.channels < 1 || shape.image.height < 4 || shape.image.width < 4 ||
      shape.num_classes < 2 || shape.feature_dim < 2) {
    throw std::runtime_error("classifier: images " + shape.image.str() + ", " +
                             std::to_string(shape.num_classes) + " classes, " +
                             std::to_string(shape.feature_dim) +
                             " features: want images at least 4x4 and 2+ classes (a labelled "
                             "dataset)");
  }
}

template <typename Fn>
at::Tensor batched(Classifier& model, const at::Tensor& images_uint8, const c10::Device& device,
                   int64_t batch_size, Fn fn) {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<at::Tensor> parts;
  for (int64_t begin = 0; begin < images_uint8.size(0); begin += batch_size) {
    const int64_t count = std::min(batch_size, images_uint8.size(0) - begin);
    const at::Tensor x = to_model_input(images_uint8.narrow(0, begin, count).to(device));
    parts.push_back(fn(x).to(torch::kCPU));
  }
  return torch::cat(parts);
}

nlohmann::json to_json(const ClassifierInfo& info) {
  return {
      {"format_version", ClassifierInfo::kFormatVersion},
      {"image_shape", {info.shape.image.channels, info.shape.image.height, info.shape.image.width}},
      {"num_classes", info.shape.num_classes},
      {"feature_dim", info.shape.feature_dim},
      {"dataset_dir", info.dataset_dir},
      {"dataset_index_sha256", info.index_sha256},
      {"test_split", info.test_split},
      {"train_images", info.train_images},
      {"test_images", info.test_images},
      {"steps", info.steps},
      {"batch_size", info.batch_size},
      {"seed", info.seed},
      {"test_accuracy", info.test_accuracy},
      {"versions", info.versions}};
}

ClassifierInfo from_json(const nlohmann::json& j) {
  ClassifierInfo info;
  const auto& shape = j.at("image_shape");
  info.shape.image = {shape.at(0).get<int64_t>(), shape.at(1).get<int64_t>(),
                      shape.at(2).get<int64_t>()};
  info.shape.num_classes = j.at("num_classes").get<int64_t>();
  info.shape.feature_dim = j.at("feature_dim").get<int64_t>();
  info.dataset_dir = j.at("dataset_dir").get<std::string>();
  info.index_sha256 = j.at("dataset_index_sha256").get<std::string>();
  info.test_split = j.at("test_split").get<std::string>();
  info.train_images = j.at("train_images").get<int64_t>();
  info.test_images = j.at("test_images").get<int64_t>();
  info.steps = j.at("steps").get<int64_t>();
  info.batch_size = j.at("batch_size").get<int64_t>();
  info.seed = j.at("seed").get<int64_t>();
  info.test_accuracy = j.at("test_accuracy").get<double>();
  info.versions = j.at("versions").get<std::string>();
  return info;
}

std::string sha256_of(const std::string& bytes) {
  return data::sha256_hex(reinterpret_cast<const uint8_t*>(bytes.data()),
                          static_cast<int64_t>(bytes.size()));
}

}  // namespace

ClassifierImpl::ClassifierImpl(const ClassifierShape& shape) : shape_(shape) {
  check_shape(shape);
  namespace nn = torch::nn;
  conv1_ = register_module(
      "conv1", nn::Conv2d(nn::Conv2dOptions(shape.image.channels, kConv1Channels, 3).padding(1)));
  conv2_ = register_module(
      "conv2", nn::Conv2d(nn::Conv2dOptions(kConv1Channels, kConv2Channels, 3).padding(1)));
  const int64_t flat = kConv2Channels * (shape.image.height / 4) * (shape.image.width / 4);
  embed_ = register_module("embed", nn::Linear(flat, shape.feature_dim));
  head_ = register_module("head", nn::Linear(shape.feature_dim, shape.num_classes));
}

at::Tensor ClassifierImpl::features(const at::Tensor& x) {
  at::Tensor h = torch::max_pool2d(torch::relu(conv1_->forward(x)), 2);
  h = torch::max_pool2d(torch::relu(conv2_->forward(h)), 2);
  return torch::relu(embed_->forward(h.flatten(1)));
}

at::Tensor ClassifierImpl::forward(const at::Tensor& x) {
  return head_->forward(torch::dropout(features(x), kDropout, is_training()));
}

at::Tensor to_model_input(const at::Tensor& images_uint8) {
  return images_uint8.to(torch::kFloat).div(127.5).sub(1.0);
}

at::Tensor to_uint8_images(const at::Tensor& samples) {
  return samples.to(torch::kFloat).add(1.0).mul(127.5).round().clamp(0, 255).to(torch::kByte);
}

at::Tensor classifier_features(Classifier& model, const at::Tensor& images_uint8,
                               const c10::Device& device, int64_t batch_size) {
  return batched(model, images_uint8, device, batch_size,
                 [&](const at::Tensor& x) { return model->features(x); });
}

at::Tensor classifier_predictions(Classifier& model, const at::Tensor& images_uint8,
                                  const c10::Device& device, int64_t batch_size) {
  return batched(model, images_uint8, device, batch_size,
                 [&](const at::Tensor& x) { return model->forward(x).argmax(1); });
}

std::string encode_classifier(const ClassifierInfo& info, const ClassifierImpl& model) {
  torch::serialize::OutputArchive archive;
  model.save(archive);
  std::ostringstream weights_stream;
  archive.save_to(weights_stream);
  const std::string weights = weights_stream.str();

  nlohmann::json header = to_json(info);
  header["weights_sha256"] = sha256_of(weights);
  const std::string header_text = header.dump(2) + "\n";
  std::string out(kMagic, sizeof(kMagic));
  const uint64_t length = header_text.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((length >> (8 * i)) & 0xff));
  return out + header_text + weights;
}

LoadedClassifier load_classifier(const std::string& path, const c10::Device& device) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("classifier " + path + ": cannot open file");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (bytes.size() < sizeof(kMagic) + 8 || std::memcmp(bytes.data(), kMagic, sizeof(kMagic)) != 0) {
    throw std::runtime_error("classifier " + path +
                             ": not a difftrain classifier file (bad header)");
  }
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) {
    length |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[sizeof(kMagic) + i])) << (8 * i);
  }
  const size_t header_begin = sizeof(kMagic) + 8;
  if (length > bytes.size() - header_begin) {
    throw std::runtime_error("classifier " + path + ": truncated (header of " +
                             std::to_string(length) + " bytes, file of " +
                             std::to_string(bytes.size()) + ")");
  }
  const nlohmann::json header =
      nlohmann::json::parse(bytes.substr(header_begin, length), nullptr, false);
  if (!header.is_object()) throw std::runtime_error("classifier " + path + ": header is not JSON");
  LoadedClassifier loaded;
  try {
    const int64_t version = header.at("format_version").get<int64_t>();
    if (version != ClassifierInfo::kFormatVersion) {
      throw std::runtime_error("format version " + std::to_string(version) + ", this build reads " +
                               std::to_string(ClassifierInfo::kFormatVersion));
    }
    loaded.info = from_json(header);
    const std::string weights = bytes.substr(header_begin + length);
    if (sha256_of(weights) != header.at("weights_sha256").get<std::string>()) {
      throw std::runtime_error("weights checksum mismatch (file is corrupt)");
    }
    loaded.model = Classifier(loaded.info.shape);
    torch::serialize::InputArchive archive;
    archive.load_from(weights.data(), weights.size(), device);
    loaded.model->load(archive);
    loaded.model->to(device);
    loaded.model->eval();
  } catch (const std::exception& e) {
    throw std::runtime_error("classifier " + path + ": " + std::string(e.what()).substr(0, 200));
  }
  return loaded;
}

}  // namespace difftrain::trainer
