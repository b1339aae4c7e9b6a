// `difftrain sample`: load a checkpoint, run DDPM, DDIM or DPM-Solver++ (optionally for one
// class, with classifier-free guidance, or inpainting a masked image), write a PNG grid and
// optionally a reverse-process strip. Under mpirun every rank draws its share of the images
// (image i's noise depends only on the seed and i, so the grid is the same for any rank count)
// and rank 0 writes the files. --x-t starts from given noise instead (one rank), and
// --out-tensor keeps the images unquantised, so other implementations can be compared exactly.
#include <ATen/CPUGeneratorImpl.h>
#include <torch/torch.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <iostream>
#include <sstream>

#include "launch/mpi_communicator.h"
#include "launch/runtime.h"
#include "trainer/commands/commands.h"
#include "trainer/commands/sampling_setup.h"
#include "trainer/config/model_builder.h"
#include "trainer/diffusion/inpaint.h"
#include "trainer/export/safetensors.h"
#include "trainer/sampling/distributed_sampling.h"
#include "trainer/sampling/image_grid.h"

namespace difftrain::trainer {
namespace {

constexpr double kCollectiveTimeoutS = 600.0;

struct SampleArgs : GenerationArgs {
  std::string out = "samples.png", progression, inpaint, mask, x_t, out_tensor;
  int64_t n = 64, strip_frames = 10, strip_images = 8, batch_size = 0;
  double guidance = 0.0;
  int64_t label = -1;
};

// The reverse-step indices after which the progression strip takes a frame: the first, every
// frame_every-th and the last.
std::vector<int64_t> frame_steps(int64_t steps, int64_t strip_frames) {
  const int64_t frame_every = std::max<int64_t>(1, steps / (strip_frames - 1));
  std::vector<int64_t> result;
  for (int64_t index = 0; index < steps; ++index) {
    if (index == 0 || (index + 1) % frame_every == 0 || index + 1 == steps) result.push_back(index);
  }
  return result;
}

// The starting noise of --x-t: tensor "x_t" float [N, C, H, W] of the model's size, on `device`.
at::Tensor read_start_noise(const std::string& path, int64_t channels, int64_t size,
                            const c10::Device& device) {
  const at::Tensor x_t = read_safetensors(path).at("x_t", path);
  if (x_t.dim() != 4 || x_t.size(0) < 1 || x_t.size(1) != channels || x_t.size(2) != size ||
      x_t.size(3) != size || !x_t.is_floating_point()) {
    std::ostringstream message;
    message << "--x-t " << path << ": x_t is " << x_t.scalar_type() << " " << x_t.sizes()
            << ", the model wants floating point [N, " << channels << ", " << size << ", " << size
            << "]";
    throw std::runtime_error(message.str());
  }
  return x_t.to(device, at::kFloat);
}

// Runs on every rank once MPI is up; throws on any error.
void run_sample(const SampleArgs& args, const launch::Runtime& runtime) {
  const std::string path = resolve_checkpoint(args.run_dir, args.checkpoint);
  const c10::Device device = runtime.device();
  const SamplingModel loaded = load_sampling_model(path, args.weights, device);
  const Config& config = loaded.config;
  const EpsPredictor predictor = model_predictor(loaded, args.label, args.guidance);
  const int64_t channels = config.model.in_channels, size = config.model.image_size;
  at::Tensor known, fill_mask;
  if (!args.inpaint.empty()) {
    known = read_model_image("--inpaint", args.inpaint, channels, size);
    fill_mask = read_fill_mask("--mask", args.mask, size);
  }
  torch::NoGradGuard no_grad;

  const SamplerOptions options = sampler_options(args, config.diffusion.timesteps);
  const NoiseSchedule schedule = noise_schedule(config);
  const uint64_t seed = static_cast<uint64_t>(args.seed);

  launch::MpiCommunicator comm(kCollectiveTimeoutS);
  const int64_t chunk = args.batch_size > 0 ? args.batch_size : default_sample_chunk(device);
  // Progression: x_T and evenly spaced intermediate x_t of the first images, ending at x_0, as
  // [frame, image, C, H, W]; each rank fills the rows of its share, then they are summed.
  const int64_t strip_images = std::min(args.strip_images, args.n);
  const std::vector<int64_t> frame_indices = frame_steps(options.steps, args.strip_frames);
  at::Tensor strip;
  if (!args.progression.empty()) {
    strip =
        at::zeros({static_cast<int64_t>(frame_indices.size()), strip_images, channels, size, size});
  }
  // One chunk of images [begin, end) of this rank's share (gather_across_ranks() picks them).
  const auto draw = [&](int64_t begin, int64_t end) {
    const int64_t rows = std::min(end, strip_images) - begin;
    StepCallback on_step;
    if (strip.defined() && rows > 0) {
      on_step = [&, begin, rows](int64_t index, int64_t, const at::Tensor& x) {
        const auto frame = std::find(frame_indices.begin(), frame_indices.end(), index);
        if (frame == frame_indices.end()) return;
        strip[frame - frame_indices.begin()]
            .narrow(0, begin, rows)
            .copy_(x.narrow(0, 0, rows).to(torch::kCPU, torch::kFloat));
      };
    }
    if (known.defined()) {
      return inpaint(predictor, schedule, known, fill_mask, end - begin, options, seed, begin,
                     device, on_step);
    }
    return sample(predictor, schedule, {end - begin, channels, size, size}, options, seed, begin,
                  device, on_step);
  };

  const auto start = std::chrono::steady_clock::now();
  at::Tensor images;
  if (!args.x_t.empty()) {
    if (comm.world_size() > 1) throw std::runtime_error("--x-t: samples on one rank only");
    at::Generator generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    images = sample_from(predictor, schedule, read_start_noise(args.x_t, channels, size, device),
                         options, generator)
                 .to(torch::kCPU);
  } else {
    images = gather_across_ranks(args.n, {channels, size, size}, chunk, &comm, draw);
  }
  // Collective: every rank calls this, in the same order.
  if (strip.defined() && comm.world_size() > 1) comm.all_reduce_sum(strip);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (runtime.rank() != 0) return;
  write_image_grid(args.out, images);
  if (!args.out_tensor.empty()) {
    write_safetensors(args.out_tensor, {{{"images", images.to(torch::kFloat)}}, {}});
    std::cout << "wrote " << args.out_tensor << ": images [N, C, H, W] float32 in [-1, 1]\n";
  }
  std::cout << "wrote " << args.out << ": " << images.size(0) << " images"
            << (known.defined() ? " inpainting " + args.inpaint : std::string()) << ", "
            << setting_name(args.sampler) << " " << options.steps << " steps, " << args.weights
            << " weights of " << path << " (step " << loaded.step << ") on " << runtime.world_size()
            << " rank(s) in " << seconds << " s\n";
  if (!args.progression.empty()) {
    write_progression_strip(args.progression, strip.unbind(0));
    std::cout << "wrote " << args.progression << ": " << frame_indices.size() << " frames of "
              << strip_images << " images\n";
  }
}

}  // namespace

void add_sample_command(CLI::App& app) {
  auto args = std::make_shared<SampleArgs>();
  CLI::App* cmd = app.add_subcommand(
      "sample", "Generate images from a checkpoint into a PNG grid; under mpirun ranks share them");
  add_generation_options(cmd, args.get(), "Reverse steps (DDPM: T is the classic sampler)",
                         "Seed of the noise; image i's noise depends only on the seed and i");
  cmd->add_option("--class", args->label,
                  "Class label in [0, model.num_classes) of a class-conditional model; -1 "
                  "(default) = unconditional");
  cmd->add_option("--guidance", args->guidance,
                  "Classifier-free guidance w (Ho & Salimans): (1+w) eps_class - w eps_uncond; "
                  "0 = plain conditional (needs --class)");
  cmd->add_option("--n", args->n, "Number of images")->check(CLI::Range(1, 4096));
  cmd->add_option("--batch-size", args->batch_size,
                  "Images per sampler call; ranks draw whole batches, and the grid is the same "
                  "for any rank count with the same batch size. 0 (default) = 8 on a CPU, 128 "
                  "on a GPU")
      ->check(CLI::Range(0, 4096));
  cmd->add_option("--out", args->out, "Output PNG grid");
  cmd->add_option("--progression", args->progression,
                  "Also write a strip PNG of x_T -> x_0 for the first images");
  cmd->add_option("--inpaint", args->inpaint,
                  "PNG to complete (the model's size and channels): keeps its pixels outside "
                  "--mask, generates inside (RePaint); needs --mask");
  cmd->add_option("--mask", args->mask,
                  "Mask PNG for --inpaint, the model's size: white (>= 128) = generate, "
                  "black = keep");
  cmd->add_option("--x-t", args->x_t,
                  "Start from this noise: a safetensors file with x_t float [N, C, H, W] (N "
                  "images; one rank; not with --inpaint or --progression)");
  cmd->add_option("--out-tensor", args->out_tensor,
                  "Also write the images as safetensors: images float32 [N, C, H, W] in [-1, 1]");
  cmd->callback([args] {
    // Option errors first, before MPI starts.
    require_output_folder("--out", args->out);
    if (!args->out_tensor.empty()) require_output_folder("--out-tensor", args->out_tensor);
    if (!args->x_t.empty() && (!args->inpaint.empty() || !args->progression.empty())) {
      throw std::runtime_error("--x-t " + args->x_t +
                               ": cannot be combined with --inpaint or --progression");
    }
    if (args->inpaint.empty() != args->mask.empty()) {
      throw std::runtime_error(args->inpaint.empty()
                                   ? "--mask " + args->mask + ": needs --inpaint IMAGE"
                                   : "--inpaint " + args->inpaint + ": needs --mask MASK");
    }
    resolve_device(args->device);
    launch::Runtime runtime(nullptr, nullptr, args->device);
    try {
      if (runtime.world_size() > 1) torch::set_num_threads(runtime.default_threads());
      run_sample(*args, runtime);
    } catch (const std::exception& e) {
      runtime.report_error(e.what());
      if (runtime.world_size() > 1) runtime.abort(1);
      throw ReportedError(e.what());
    }
  });
}

}  // namespace difftrain::trainer
