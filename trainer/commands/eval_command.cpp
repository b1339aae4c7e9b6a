// `difftrain eval`: train the evaluation classifier (--train-classifier), measure the reference
// distances of a dataset (--baselines), or evaluate a checkpoint: Fréchet distance of generated
// to real test images in the classifier's feature space, the real-vs-real floor, and per-class
// accuracy of class-conditional samples; JSON out, one `eval` record in metrics.jsonl.
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "data/file_util.h"
#include "monitoring/clock.h"
#include "monitoring/metrics_log.h"
#include "trainer/commands/commands.h"
#include "trainer/commands/sampling_setup.h"
#include "trainer/commands/setting_option.h"
#include "trainer/common/step_name.h"
#include "trainer/common/version.h"
#include "trainer/config/config.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/prediction.h"
#include "trainer/eval/classifier.h"
#include "trainer/eval/classifier_training.h"
#include "trainer/eval/eval_data.h"
#include "trainer/eval/frechet.h"
#include "trainer/eval/reference_sets.h"

namespace difftrain::trainer {
namespace {

namespace fs = std::filesystem;

struct EvalArgs {
  bool train_classifier = false, baselines = false;
  std::string run_dir, checkpoint, data_dir, test_dir, classifier, out, weights = "ema";
  SamplerKind sampler = SamplerKind::kDdim;
  DeviceRequest device = DeviceRequest::kAuto;
  int64_t steps = -1, epochs = 2, n = 1000, seed = 0, batch_size = 0, threads = 0;
  double eta = 0.0, churn = 0.0, guidance = 0.0;
  std::vector<int64_t> classes;
};

using monitoring::seconds_since;
using monitoring::unix_now_s;

std::string default_classifier_path(const std::string& data_dir) {
  return data_dir + "/classifier.pt";
}

// The classifier for `data`, checked to be the one trained on this dataset.
LoadedClassifier open_classifier(const std::string& given, const EvalData& data,
                                 const c10::Device& device) {
  const std::string path = given.empty() ? default_classifier_path(data.data_dir()) : given;
  if (!fs::exists(path)) {
    throw std::runtime_error("classifier " + path +
                             ": no such file (train one with `difftrain "
                             "eval --train-classifier --data " +
                             data.data_dir() + "`)");
  }
  LoadedClassifier loaded = load_classifier(path, device);
  const ClassifierInfo& info = loaded.info;
  if (info.shape.image != data.manifest().shape ||
      info.shape.num_classes != data.manifest().label_count) {
    throw std::runtime_error("classifier " + path + ": made for images " + info.shape.image.str() +
                             " with " + std::to_string(info.shape.num_classes) +
                             " classes, but --data " + data.data_dir() + " has " +
                             data.manifest().shape.str() + " with " +
                             std::to_string(data.manifest().label_count) + " labels");
  }
  if (info.index_sha256 != data.index_sha256()) {
    throw std::runtime_error(
        "classifier " + path + ": trained on dataset " + info.dataset_dir + " (index.json sha256 " +
        info.index_sha256.substr(0, 12) + "), not --data " + data.data_dir() + " (" +
        data.index_sha256().substr(0, 12) + "); retrain with --train-classifier");
  }
  return loaded;
}

FeatureStats stats_of(LoadedClassifier& classifier, const at::Tensor& images_uint8,
                      const c10::Device& device) {
  return feature_stats(classifier_features(classifier.model, images_uint8, device));
}

// The default folder (RUN/eval/) is made here; a folder the user named is checked up front.
void write_json(const std::string& path, const nlohmann::json& record, bool default_path) {
  const fs::path parent = fs::path(path).parent_path();
  if (default_path && !parent.empty()) fs::create_directories(parent);
  data::write_file_atomic(path, record.dump(2) + "\n");
}

std::string fixed(double value, int digits = 3) {
  std::ostringstream out;
  out.setf(std::ios::fixed);
  out.precision(digits);
  out << value;
  return out.str();
}

void run_train_classifier(const EvalArgs& args, const c10::Device& device) {
  const EvalData data(args.data_dir, args.test_dir);
  const std::string out = args.out.empty() ? default_classifier_path(args.data_dir) : args.out;
  require_output_folder("--out", out);
  if (args.steps != -1 && args.steps < 1) {
    throw std::runtime_error("--steps " + std::to_string(args.steps) +
                             ": want >= 1 optimizer steps (leave it out to train --epochs " +
                             std::to_string(args.epochs) + ")");
  }
  ClassifierTrainOptions options;
  options.epochs = args.epochs;
  options.steps = std::max<int64_t>(0, args.steps);
  if (args.batch_size > 0) options.batch_size = args.batch_size;
  options.seed = args.seed;
  std::cout << "training the eval classifier on " << data.train_size() << " images of "
            << args.data_dir << ", testing on " << data.test_size() << " ("
            << data.test_description() << ")" << std::endl;
  TrainedClassifier trained =
      train_classifier(data, options, device, [](int64_t step, int64_t steps, double loss) {
        std::cout << "  step " << step << "/" << steps << " loss " << fixed(loss, 4) << std::endl;
      });
  trained.info.versions = version_string();
  data::write_file_atomic(out, encode_classifier(trained.info, *trained.model));
  std::cout << "classifier: test accuracy " << fixed(trained.info.test_accuracy, 4) << " on "
            << trained.info.test_images << " images after " << trained.info.steps << " steps in "
            << fixed(trained.train_s, 1) << " s; wrote " << out << "\n";
}

// FD of real sets only: a train subset against itself (~0), against the test split (the
// floor), and uniform noise against the test split.
void run_baselines(const EvalArgs& args, const c10::Device& device) {
  if (!args.out.empty()) require_output_folder("--out", args.out);
  const EvalData data(args.data_dir, args.test_dir);
  LoadedClassifier classifier = open_classifier(args.classifier, data, device);
  const auto start = std::chrono::steady_clock::now();
  const FeatureStats test = stats_of(classifier, test_images(data, {}).images, device);
  const FeatureStats train =
      stats_of(classifier, train_subset(data, {}, {args.n}, args.seed).images, device);
  const FeatureStats noise = stats_of(
      classifier, uniform_noise_images(args.n, data.manifest().shape, args.seed + 1), device);
  const nlohmann::json record = {
      {"event", "eval_baselines"},
      {"data", args.data_dir},
      {"test_data", data.test_description()},
      {"n", args.n},
      {"test_images", test.count},
      {"seed", args.seed},
      {"classifier_test_accuracy", classifier.info.test_accuracy},
      {"fd_self", frechet_distance(train, train)},
      {"fd_floor", frechet_distance(train, test)},
      {"fd_noise", frechet_distance(noise, test)},
      {"seconds", seconds_since(start)},
  };
  std::cout << "FD(train subset, itself) = " << fixed(record["fd_self"].get<double>(), 6) << "\n"
            << "FD(train subset, test)   = " << fixed(record["fd_floor"].get<double>()) << "\n"
            << "FD(noise, test)          = " << fixed(record["fd_noise"].get<double>()) << "\n"
            << "(" << args.n << " images vs " << test.count << " test images; classifier test "
            << "accuracy " << fixed(classifier.info.test_accuracy, 4) << ")\n";
  if (!args.out.empty()) {
    write_json(args.out, record, false);
    std::cout << "wrote " << args.out << "\n";
  }
}

void run_checkpoint_eval(const EvalArgs& args, const c10::Device& device) {
  // Everything that can be wrong is checked before the first image is generated.
  if (args.n < 2) {
    throw std::runtime_error("--n " + std::to_string(args.n) +
                             ": want at least 2 (a covariance needs 2 images)");
  }
  const std::string path = resolve_checkpoint(args.run_dir, args.checkpoint);
  std::string run_dir = args.run_dir;
  if (run_dir.empty() && fs::path(path).parent_path().filename() == "checkpoints") {
    run_dir = fs::path(path).parent_path().parent_path().string();
  }
  const SamplingModel loaded = load_sampling_model(path, args.weights, device);
  const int64_t step = loaded.step;
  const Config& config = loaded.config;
  std::string out = args.out;
  if (!out.empty()) require_output_folder("--out", out);
  if (out.empty()) {
    if (run_dir.empty()) {
      throw std::runtime_error("--checkpoint " + path +
                               ": not inside a run's checkpoints/ folder; pass --out FILE");
    }
    out = run_dir + "/eval/" + step_file_name(step, ".json");
  }
  const std::string data_dir = args.data_dir.empty() ? config.data.dir : args.data_dir;
  if (!fs::is_directory(data_dir)) {
    throw std::runtime_error(
        "--data " + data_dir + ": no such directory" +
        (args.data_dir.empty() ? " (the checkpoint's data.dir; pass --data)" : ""));
  }
  const EvalData data(data_dir, args.test_dir);
  const data::SampleShape model_shape{config.model.in_channels, config.model.image_size,
                                      config.model.image_size};
  if (model_shape != data.manifest().shape) {
    throw std::runtime_error("checkpoint " + path + ": makes images " + model_shape.str() +
                             ", but --data " + data_dir + " holds " + data.manifest().shape.str());
  }
  LoadedClassifier classifier = open_classifier(args.classifier, data, device);
  const int64_t num_classes = config.model.num_classes;
  std::set<int64_t> seen;
  for (const int64_t label : args.classes) {
    if (label < 0 || label >= num_classes) {
      throw std::runtime_error("--class " + std::to_string(label) + ": the model has " +
                               std::to_string(num_classes) +
                               " classes (model.num_classes); want a label below that");
    }
    if (!seen.insert(label).second) {
      throw std::runtime_error("--class " + std::to_string(label) + ": given twice");
    }
  }
  if (num_classes > data.manifest().label_count) {
    throw std::runtime_error("checkpoint " + path + ": model.num_classes " +
                             std::to_string(num_classes) + " but --data " + data_dir + " has " +
                             std::to_string(data.manifest().label_count) + " labels");
  }
  if (args.guidance != 0.0 && args.classes.empty()) {
    throw std::runtime_error("--guidance " + fixed(args.guidance) +
                             ": needs --class K (guidance is towards a class)");
  }
  const int64_t groups = args.classes.empty() ? 1 : static_cast<int64_t>(args.classes.size());
  if (args.n < groups) {
    throw std::runtime_error("--n " + std::to_string(args.n) + ": fewer images than the " +
                             std::to_string(groups) + " classes asked for");
  }
  SamplerOptions options;
  options.kind = args.sampler;
  options.steps = args.steps < 0 ? 50 : args.steps;
  options.eta = args.eta;
  options.churn = args.churn;
  validate(options, config.diffusion.timesteps);
  const std::vector<int64_t> counts = split_evenly(args.n, groups);
  const LabelledImages test = test_images(data, args.classes);
  if (test.size() < 2) {
    throw std::runtime_error("test split (" + data.test_description() + ") holds " +
                             std::to_string(test.size()) + " images of the classes asked for");
  }
  const LabelledImages floor_set = train_subset(data, args.classes, counts, args.seed + 2);

  // Generate: n images, split evenly over the requested classes, in batches; image i's noise
  // comes from (seed, i).
  torch::NoGradGuard no_grad;
  const NoiseSchedule schedule = noise_schedule(config);
  const int64_t batch_size = args.batch_size > 0 ? args.batch_size : 250;
  std::vector<at::Tensor> generated(static_cast<size_t>(groups));
  const auto start = std::chrono::steady_clock::now();
  int64_t first_index = 0;
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t label = args.classes.empty() ? -1 : args.classes[static_cast<size_t>(g)];
    const EpsPredictor predictor = model_predictor(loaded, label, args.guidance);
    std::vector<at::Tensor> parts;
    for (int64_t done = 0; done < counts[static_cast<size_t>(g)]; done += batch_size) {
      const int64_t count = std::min(batch_size, counts[static_cast<size_t>(g)] - done);
      const at::Tensor x = sample(
          predictor, schedule, {count, model_shape.channels, model_shape.height, model_shape.width},
          options, static_cast<uint64_t>(args.seed), first_index, device);
      first_index += count;
      parts.push_back(to_uint8_images(x).to(torch::kCPU));
    }
    generated[static_cast<size_t>(g)] = torch::cat(parts);
  }
  const double sample_s = seconds_since(start);

  const auto fd_start = std::chrono::steady_clock::now();
  const FeatureStats test_stats = stats_of(classifier, test.images, device);
  const at::Tensor all_generated = torch::cat(generated);
  const double fd = frechet_distance(stats_of(classifier, all_generated, device), test_stats);
  const double fd_floor =
      frechet_distance(stats_of(classifier, floor_set.images, device), test_stats);
  const double fd_noise = frechet_distance(
      stats_of(classifier, uniform_noise_images(args.n, model_shape, args.seed + 1), device),
      test_stats);
  nlohmann::json class_accuracy = nlohmann::json::object();
  for (size_t g = 0; g < args.classes.size(); ++g) {
    const at::Tensor predicted = classifier_predictions(classifier.model, generated[g], device);
    class_accuracy[std::to_string(args.classes[g])] =
        predicted.eq(args.classes[g]).to(torch::kDouble).mean().item<double>();
  }
  const double fd_s = seconds_since(fd_start);

  const nlohmann::json record = {
      {"event", "eval"},
      {"time_s", unix_now_s()},
      {"checkpoint", path},
      {"checkpoint_step", step},
      {"weights", args.weights},
      {"sampler", setting_name(options.kind)},
      {"steps", options.steps},
      {"eta", options.eta},
      {"churn", options.churn},
      {"guidance", args.guidance},
      {"classes", args.classes},
      {"n", args.n},
      {"seed", args.seed},
      {"data", data_dir},
      {"test_data", data.test_description()},
      {"test_images", test.size()},
      {"classifier", args.classifier.empty() ? default_classifier_path(data_dir) : args.classifier},
      {"classifier_test_accuracy", classifier.info.test_accuracy},
      {"fd", fd},
      {"fd_floor", fd_floor},
      {"fd_noise", fd_noise},
      {"class_accuracy", class_accuracy},
      {"sample_s", sample_s},
      {"fd_s", fd_s},
  };
  write_json(out, record, args.out.empty());
  if (!run_dir.empty()) {
    nlohmann::json line = record;
    line["eval_file"] = out;
    monitoring::MetricsLog(run_dir + "/metrics.jsonl").append(line);
  }

  std::cout << "eval of " << path << " (step " << step << ", " << args.weights
            << " weights): " << args.n << " images, " << setting_name(args.sampler) << " "
            << options.steps << " steps in " << fixed(sample_s, 1) << " s\n"
            << "  FD(generated, test)  = " << fixed(fd) << "\n"
            << "  FD(train, test)      = " << fixed(fd_floor) << "   (floor: " << args.n
            << " real images)\n"
            << "  FD(noise, test)      = " << fixed(fd_noise) << "\n";
  if (!args.classes.empty()) {
    std::cout << "  class accuracy:";
    for (const auto& [label, accuracy] : class_accuracy.items()) {
      std::cout << " " << label << ": " << fixed(accuracy.get<double>());
    }
    std::cout << "\n";
  }
  std::cout << "  (classifier test accuracy " << fixed(classifier.info.test_accuracy, 4) << ", "
            << test.size() << " test images)\nwrote " << out << "\n";
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto args = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "eval",
      "Fréchet distance of generated to real images in the features of a classifier "
      "trained on the dataset, the real-vs-real floor, per-class accuracy");
  cmd->add_flag("--train-classifier", args->train_classifier,
                "Train the eval classifier on --data and write it (default DIR/classifier.pt)");
  cmd->add_flag("--baselines", args->baselines,
                "No model: FD of a train subset to itself, to the test split, and of noise");
  cmd->add_option("--run-dir", args->run_dir, "Evaluate this run's newest checkpoint");
  cmd->add_option("--checkpoint", args->checkpoint, "Evaluate this checkpoint file");
  cmd->add_option("--data", args->data_dir,
                  "Dataset directory (default: the checkpoint's data.dir)");
  cmd->add_option("--test-data", args->test_dir,
                  "Prepared test dataset; default: every 10th sample of --data is held out");
  cmd->add_option("--classifier", args->classifier, "Classifier file (default DATA/classifier.pt)");
  cmd->add_option("--n", args->n, "Images generated (and real train images for the floor)");
  add_setting_option(cmd, "--sampler", &args->sampler, "Sampler");
  cmd->add_option("--steps", args->steps,
                  "Reverse steps (default 50); with --train-classifier: optimizer steps "
                  "(overrides --epochs)");
  cmd->add_option("--epochs", args->epochs, "--train-classifier: passes over the train split");
  cmd->add_option("--eta", args->eta, "DDIM eta in [0,1]");
  cmd->add_option("--churn", args->churn, "heun: EDM's S_churn (>= 0); 0 = deterministic");
  cmd->add_option("--weights", args->weights, "ema (default) or raw")
      ->check(CLI::IsMember({"ema", "raw"}));
  cmd->add_option("--class", args->classes,
                  "Classes of a class-conditional model (--n is split evenly over them); FD is "
                  "then against real images of these classes");
  cmd->add_option("--guidance", args->guidance, "Classifier-free guidance w (needs --class)");
  cmd->add_option("--seed", args->seed, "Seed of the noise, the real subset and training");
  cmd->add_option("--batch-size", args->batch_size,
                  "Images per sampler call (default 250); classifier batch (default 128)");
  cmd->add_option("--threads", args->threads, "CPU threads (0 = LibTorch's default)");
  add_device_option(cmd, &args->device);
  cmd->add_option("--out", args->out,
                  "Output: classifier file, or eval JSON (default RUN/eval/step-N.json)");
  cmd->callback([args] {
    const int modes = int(args->train_classifier) + int(args->baselines) +
                      int(!args->run_dir.empty()) + int(!args->checkpoint.empty());
    if (modes != 1) {
      throw std::runtime_error(
          "eval: give exactly one of --train-classifier, --baselines, "
          "--run-dir RUN, --checkpoint FILE (got " +
          std::to_string(modes) + ")");
    }
    if ((args->train_classifier || args->baselines) && args->data_dir.empty()) {
      throw std::runtime_error("eval: --train-classifier and --baselines need --data DIR");
    }
    if (args->baselines && args->n < 2) {
      throw std::runtime_error("--n " + std::to_string(args->n) +
                               ": want at least 2 (a covariance needs 2 images)");
    }
    if (args->threads < 0) {
      throw std::runtime_error("--threads " + std::to_string(args->threads) + ": want >= 0");
    }
    if (args->threads > 0) torch::set_num_threads(static_cast<int>(args->threads));
    const c10::Device device = resolve_device(args->device);
    if (args->train_classifier) {
      run_train_classifier(*args, device);
    } else if (args->baselines) {
      run_baselines(*args, device);
    } else {
      run_checkpoint_eval(*args, device);
    }
  });
}

}  // namespace difftrain::trainer
