// Split-invariant sampling, inpainting and denoising: image i is the same whatever batch draws
// it; inpainting keeps the known pixels exactly, noises them to the timestep the sampler is at
// and, with the exact predictor of flat images, fills the hole at the level the known pixels
// show; denoising starts where --strength says and, with the exact predictor of Gaussian data,
// follows the probability flow from the noised input.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/unit/trainer/test_util.h"
#include "trainer/diffusion/denoise.h"
#include "trainer/diffusion/image_noise.h"
#include "trainer/diffusion/inpaint.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/model/unet.h"
#include "trainer/sampling/distributed_sampling.h"
#include "trainer/sampling/image_grid.h"

namespace difftrain::trainer {
namespace {

at::Generator cpu_generator(uint64_t seed) {
  return at::make_generator<at::CPUGeneratorImpl>(seed);
}

SamplerOptions options_for(SamplerKind kind, int64_t steps, double eta = 0.0) {
  SamplerOptions options;
  options.kind = kind;
  options.steps = steps;
  options.eta = eta;
  return options;
}

// One of each sampler, the noisy ones included (DDPM, DDIM eta > 0 consume step noise).
std::vector<SamplerOptions> all_samplers(int64_t steps) {
  return {options_for(SamplerKind::kDdpm, steps), options_for(SamplerKind::kDdim, steps, 0.7),
          options_for(SamplerKind::kDdim, steps, 0.0),
          options_for(SamplerKind::kDpmSolverPP2M, steps)};
}

std::string name_of(const SamplerOptions& options) {
  return setting_name(options.kind) + " eta " + std::to_string(options.eta);
}

// A non-trivial predictor that treats batch rows independently (element-wise in x, uses t).
torch::Tensor row_wise_eps(const torch::Tensor& x, const torch::Tensor& t) {
  return 0.5 * torch::tanh(x) + 1e-4 * t.to(x.scalar_type()).reshape({-1, 1, 1, 1});
}

// The exact eps-predictor for flat images [B, C, H, W] with detail: x0 = c + d, one level
// c ~ N(mu, level_sd^2) for the whole image plus independent pixel detail d ~ N(0, detail_sd^2).
// The covariance level_sd^2 11^T + detail_sd^2 I has eigenvalue n level_sd^2 + detail_sd^2 along
// the image mean (n pixels) and detail_sd^2 across it; along an eigenvector of eigenvalue l,
// E[eps | x_t] = sqrt(1 - a) y / (a l + 1 - a), y = x_t - sqrt(a) mu.
EpsPredictor flat_image_predictor(const NoiseSchedule& schedule, double mu, double level_sd,
                                  double detail_sd) {
  return [&schedule, mu, level_sd, detail_sd](const torch::Tensor& x, const torch::Tensor& t) {
    const double a = schedule.alpha_bar(t[0].item<int64_t>());
    const double n = static_cast<double>(x[0].numel());
    const auto gain = [a](double l) { return std::sqrt(1 - a) / (a * l + 1 - a); };
    const torch::Tensor y = x - std::sqrt(a) * mu;
    const torch::Tensor mean = y.mean({1, 2, 3}, /*keepdim=*/true);
    const double detail = detail_sd * detail_sd;
    return (y - mean) * gain(detail) + mean * gain(n * level_sd * level_sd + detail);
  };
}

using test_util::error_of;

TEST(GenerationTest, ImageNoiseRowsDependOnlyOnSeedAndIndex) {
  ImageNoise all(7, 0, 6);
  ImageNoise tail(7, 3, 3);
  const torch::Tensor a1 = all.draw({2, 5});
  const torch::Tensor a2 = all.draw({2, 5});
  const torch::Tensor t1 = tail.draw({2, 5});
  const torch::Tensor t2 = tail.draw({2, 5});
  EXPECT_TRUE(torch::equal(a1.narrow(0, 3, 3), t1));
  EXPECT_TRUE(torch::equal(a2.narrow(0, 3, 3), t2));
  EXPECT_FALSE(torch::equal(a1, a2));        // successive draws differ
  EXPECT_FALSE(torch::equal(a1[0], a1[1]));  // images differ
  EXPECT_FALSE(torch::equal(ImageNoise(8, 0, 1).draw({4}), ImageNoise(7, 0, 1).draw({4})));
  EXPECT_THROW(ImageNoise(7, -1, 2), std::runtime_error);
  EXPECT_THROW(ImageNoise(7, 0, 0), std::runtime_error);
}

TEST(GenerationTest, DrawingAheadGivesTheSameNoise) {
  ImageNoise now(11, 2, 4);
  ImageNoise ahead(11, 2, 4, /*draw_ahead=*/true);
  for (int k = 0; k < 5; ++k) {
    const torch::Tensor expected = now.draw({3, 6, 6});
    const torch::Tensor got = ahead.draw({3, 6, 6});
    EXPECT_TRUE(torch::equal(expected, got)) << "draw " << k;
  }
  // A draw ahead was made for [4, 3, 6, 6]: another shape is a caller's error, named.
  try {
    ahead.draw({3, 5, 5});
    ADD_FAILURE() << "another shape after a draw ahead did not throw";
  } catch (const std::logic_error& e) {
    EXPECT_NE(std::string(e.what()).find("[4, 3, 5, 5]"), std::string::npos) << e.what();
  }
  // Destroyed with a draw in flight: waits for it.
  { ImageNoise(3, 0, 64, /*draw_ahead=*/true).draw({3, 32, 32}); }
}

TEST(GenerationTest, SamplesAreTheSameInOneBatchOrSeveral) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  for (const SamplerOptions& options : all_samplers(8)) {
    const torch::Tensor whole =
        sample(row_wise_eps, schedule, {8, 1, 4, 4}, options, 11, 0, torch::kCPU);
    const torch::Tensor halves =
        torch::cat({sample(row_wise_eps, schedule, {4, 1, 4, 4}, options, 11, 0, torch::kCPU),
                    sample(row_wise_eps, schedule, {4, 1, 4, 4}, options, 11, 4, torch::kCPU)});
    const torch::Tensor uneven =
        torch::cat({sample(row_wise_eps, schedule, {1, 1, 4, 4}, options, 11, 0, torch::kCPU),
                    sample(row_wise_eps, schedule, {5, 1, 4, 4}, options, 11, 1, torch::kCPU),
                    sample(row_wise_eps, schedule, {2, 1, 4, 4}, options, 11, 6, torch::kCPU)});
    EXPECT_TRUE(torch::equal(whole, halves)) << name_of(options);
    EXPECT_TRUE(torch::equal(whole, uneven)) << name_of(options);
    EXPECT_FALSE(torch::equal(whole[0], whole[1])) << name_of(options);
    // Another seed gives other images.
    EXPECT_FALSE(torch::equal(
        whole, sample(row_wise_eps, schedule, {8, 1, 4, 4}, options, 12, 0, torch::kCPU)))
        << name_of(options);
  }
}

TEST(GenerationTest, OneRankSampleAcrossRanksIsTheSeedOverload) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  const SamplerOptions options = options_for(SamplerKind::kDdpm, 5);
  const torch::Tensor gathered = sample_across_ranks(row_wise_eps, schedule, 5, {1, 4, 4}, options,
                                                     3, 8, torch::kCPU, nullptr);
  EXPECT_TRUE(torch::equal(
      gathered, sample(row_wise_eps, schedule, {5, 1, 4, 4}, options, 3, 0, torch::kCPU)));
  EXPECT_EQ(gathered.scalar_type(), torch::kFloat);
  const ImageRange first = rank_share(10, 0, 4), last = rank_share(10, 3, 4);
  EXPECT_EQ(first.begin, 0);
  EXPECT_EQ(first.end, 2);
  EXPECT_EQ(last.begin, 7);
  EXPECT_EQ(last.end, 10);
  EXPECT_EQ(rank_share(3, 0, 4).end, 0);  // fewer images than ranks: rank 0 draws none
}

TEST(GenerationTest, ChunkSharesCoverTheImagesOnceInWholeChunks) {
  for (const int64_t n : {1, 7, 10, 64, 100}) {
    for (const int64_t chunk : {1, 3, 8, 128}) {
      for (const int world : {1, 2, 3, 4, 16}) {
        int64_t next = 0;  // shares are in rank order and back to back
        for (int rank = 0; rank < world; ++rank) {
          const ImageRange share = chunk_share(n, chunk, rank, world);
          const std::string where = "n " + std::to_string(n) + " chunk " + std::to_string(chunk) +
                                    " rank " + std::to_string(rank) + "/" + std::to_string(world);
          EXPECT_EQ(share.begin, next) << where;
          EXPECT_LE(share.begin, share.end) << where;
          EXPECT_TRUE(share.begin % chunk == 0 || share.begin == n) << where;
          EXPECT_TRUE(share.end % chunk == 0 || share.end == n) << where;
          next = share.end;
        }
        EXPECT_EQ(next, n) << "n " << n << " chunk " << chunk << " world " << world;
      }
    }
  }
  // 10 images in chunks of 4 over 4 ranks: 3 chunks, so rank 0 draws none.
  EXPECT_EQ(chunk_share(10, 4, 0, 4).end, 0);
  EXPECT_EQ(chunk_share(10, 4, 3, 4).begin, 8);
  EXPECT_EQ(chunk_share(10, 4, 3, 4).end, 10);
  EXPECT_EQ(default_sample_chunk(torch::kCPU), 8);
  EXPECT_EQ(default_sample_chunk(torch::Device(torch::kCUDA, 0)), 128);
}

TEST(GenerationTest, GatherRejectsAChunkBelowOne) {
  const auto draw = [](int64_t begin, int64_t end) { return torch::zeros({end - begin, 1}); };
  EXPECT_THROW(
      {
        try {
          gather_across_ranks(4, {1}, 0, nullptr, draw);
        } catch (const std::runtime_error& e) {
          EXPECT_NE(std::string(e.what()).find("batch size 0"), std::string::npos) << e.what();
          throw;
        }
      },
      std::runtime_error);
}

TEST(GenerationTest, TinyUNetImagesAreDrawnInFixedChunks) {
  // A network's output for one image can change in the last bit with the batch size, so
  // sample_across_ranks draws fixed chunks [0, c), [c, 2c), ... on any rank count.
  const EpsPredictor predictor = test_util::random_unet_eps(0);
  const NoiseSchedule schedule(BetaSchedule::kLinear, 50);
  const SamplerOptions options = options_for(SamplerKind::kDdpm, 3);
  const torch::Tensor gathered =
      sample_across_ranks(predictor, schedule, 10, {1, 8, 8}, options, 5, 8, torch::kCPU, nullptr);
  const torch::Tensor chunks =
      torch::cat({sample(predictor, schedule, {8, 1, 8, 8}, options, 5, 0, torch::kCPU),
                  sample(predictor, schedule, {2, 1, 8, 8}, options, 5, 8, torch::kCPU)});
  EXPECT_TRUE(torch::equal(gathered, chunks)) << (gathered - chunks).abs().max().item<float>();
  const torch::Tensor in_fours =
      sample_across_ranks(predictor, schedule, 10, {1, 8, 8}, options, 5, 4, torch::kCPU, nullptr);
  const torch::Tensor fours =
      torch::cat({sample(predictor, schedule, {4, 1, 8, 8}, options, 5, 0, torch::kCPU),
                  sample(predictor, schedule, {4, 1, 8, 8}, options, 5, 4, torch::kCPU),
                  sample(predictor, schedule, {2, 1, 8, 8}, options, 5, 8, torch::kCPU)});
  EXPECT_TRUE(torch::equal(in_fours, fours)) << (in_fours - fours).abs().max().item<float>();
}

TEST(GenerationTest, InpaintingKeepsTheKnownPixelsExactly) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  // Known pixels as a PNG would give them: p / 127.5 - 1.
  const torch::Tensor pixels = torch::randint(0, 256, {3, 6, 6}, torch::kLong);
  const torch::Tensor known = pixels.to(torch::kFloat) / 127.5 - 1.0;
  torch::Tensor fill = torch::zeros({1, 6, 6});
  fill.narrow(1, 1, 3).narrow(2, 2, 3).fill_(1.0);
  const torch::Tensor keep = fill.eq(0).expand({3, 6, 6});
  for (const SamplerOptions& options : all_samplers(6)) {
    const torch::Tensor out =
        inpaint(row_wise_eps, schedule, known, fill, 4, options, 9, 0, torch::kCPU);
    ASSERT_EQ(out.sizes(), torch::IntArrayRef({4, 3, 6, 6}));
    for (int64_t i = 0; i < 4; ++i) {
      EXPECT_TRUE(torch::equal(out[i].masked_select(keep), known.masked_select(keep)))
          << name_of(options);
      EXPECT_FALSE(torch::equal(out[i], known)) << name_of(options);  // the hole is generated
    }
    // Through the PNG round trip the kept pixels come back as the input's bytes.
    const torch::Tensor bytes = to_uint8_hwc(out).permute({0, 3, 1, 2});
    EXPECT_TRUE(
        torch::equal(bytes[2].masked_select(keep), pixels.to(torch::kByte).masked_select(keep)));
    // Split invariance holds for inpainting too.
    const torch::Tensor split =
        torch::cat({inpaint(row_wise_eps, schedule, known, fill, 1, options, 9, 0, torch::kCPU),
                    inpaint(row_wise_eps, schedule, known, fill, 3, options, 9, 1, torch::kCPU)});
    EXPECT_TRUE(torch::equal(out, split)) << name_of(options);
  }
  EXPECT_NE(error_of([&] {
              inpaint(row_wise_eps, schedule, known, torch::zeros({1, 5, 6}), 1,
                      options_for(SamplerKind::kDdim, 5), 0, 0, torch::kCPU);
            }).find("mask [1, 5, 6]"),
            std::string::npos);
}

TEST(GenerationTest, InpaintingNoisesTheKnownRegionToTheTimestepTheSamplerIsAt) {
  // After every step but the last, the known pixels of the state must be q(x_t' | known) for the
  // timestep t' the sampler goes on from: r = (x - sqrt(abar') known) / sqrt(1 - abar') standard
  // normal, fresh at every step. 512 images x 81 known pixels: 5 standard errors are 0.025 on
  // the mean of r and 0.035 on its variance; noised to the step's start timestep instead, the
  // variance is 1.1 to 2e2 times too large, and not noised, 0.
  const NoiseSchedule schedule(BetaSchedule::kLinear, 100);
  const torch::Tensor known = torch::rand({3, 6, 6}, cpu_generator(4)) * 2 - 1;
  torch::Tensor fill = torch::zeros({1, 6, 6});
  fill.narrow(1, 1, 3).narrow(2, 2, 3).fill_(1.0);
  const torch::Tensor keep = fill.eq(0).expand({512, 3, 6, 6});
  const torch::Tensor known_kept = known.expand({512, 3, 6, 6}).masked_select(keep);
  const double values = static_cast<double>(known_kept.numel());
  for (const SamplerOptions& options : all_samplers(6)) {
    const std::vector<int64_t> ts = sampler_timesteps(schedule, options);
    const int64_t steps = static_cast<int64_t>(ts.size());
    int64_t checked = 0;
    const StepCallback on_step = [&](int64_t index, int64_t, const torch::Tensor& x) {
      if (index + 1 == steps) return;  // x_0: the known pixels themselves (tested above)
      const double a = schedule.alpha_bar(ts[static_cast<size_t>(steps - 2 - index)]);
      const torch::Tensor r =
          (x.masked_select(keep).to(torch::kDouble) - std::sqrt(a) * known_kept) / std::sqrt(1 - a);
      EXPECT_NEAR(r.mean().item<double>(), 0.0, 5 / std::sqrt(values))
          << name_of(options) << " step " << index;
      EXPECT_NEAR(r.var().item<double>(), 1.0, 5 * std::sqrt(2 / values))
          << name_of(options) << " step " << index;
      ++checked;
    };
    inpaint(row_wise_eps, schedule, known, fill, 512, options, 3, 0, torch::kCPU, on_step);
    EXPECT_EQ(checked, steps - 1) << name_of(options);
  }
}

TEST(GenerationTest, InpaintingAFlatImageFillsTheHoleAtTheLevelOfTheKnownPixels) {
  // Flat images (flat_image_predictor: level ~ N(0, 0.5^2), detail sd 0.05), 16x16 with a 4x4
  // hole. The hole's expected value is E[c | known] = (sum of the m = 240 known pixels /
  // detail_sd^2) / (1 / level_sd^2 + m / detail_sd^2), ~0.7 here. The model sees the known
  // pixels only as they are noised at each step, so the hole gets there only if they are noised
  // to the timestep the sampler is at: noised to the step's start timestep (one step too much),
  // the hole mean lands ~0.03 low; not noised at all, ~0.02 high (clean pixels look like a strong
  // signal). Replacement without RePaint's resampling is itself off by ~0.002 here.
  // Tolerance: 0.005 + 5 standard errors of the mean over images. Deterministic DDIM is left out:
  // its own shrinkage at 10 steps (see sampler_test) puts it ~0.012 low.
  constexpr int64_t n = 2048;
  constexpr double level_sd = 0.5;
  constexpr double detail_sd = 0.05;
  const NoiseSchedule schedule(BetaSchedule::kLinear, 200);
  const torch::Tensor known = 0.7 + detail_sd * torch::randn({1, 16, 16}, cpu_generator(1));
  torch::Tensor fill = torch::zeros({1, 16, 16});
  fill.narrow(1, 6, 4).narrow(2, 6, 4).fill_(1.0);
  const torch::Tensor kept = known.masked_select(fill.eq(0)).to(torch::kDouble);
  const double detail = detail_sd * detail_sd;
  const double expected = kept.sum().item<double>() / detail /
                          (1 / (level_sd * level_sd) + static_cast<double>(kept.numel()) / detail);
  const EpsPredictor predictor = flat_image_predictor(schedule, 0.0, level_sd, detail_sd);
  for (SamplerOptions options :
       {options_for(SamplerKind::kDdpm, 10), options_for(SamplerKind::kDdim, 10, 1.0)}) {
    options.clip_x0 = false;
    const torch::Tensor out =
        inpaint(predictor, schedule, known, fill, n, options, 5, 0, torch::kCPU);
    const torch::Tensor hole_means =
        out.masked_select(fill.ne(0).expand_as(out)).reshape({n, 16}).mean(1).to(torch::kDouble);
    const double standard_error =
        hole_means.std().item<double>() / std::sqrt(static_cast<double>(n));
    EXPECT_NEAR(hole_means.mean().item<double>(), expected, 0.005 + 5 * standard_error)
        << name_of(options);
  }
}

TEST(GenerationTest, DenoiseStartTimestepAndGrid) {
  EXPECT_EQ(denoise_start_timestep(1.0, 1000), 999);
  EXPECT_EQ(denoise_start_timestep(0.5, 1000), 500);  // round(499.5), half away from zero
  EXPECT_EQ(denoise_start_timestep(0.25, 1001), 250);
  EXPECT_EQ(denoise_start_timestep(1e-4, 1000), 0);
  EXPECT_NE(error_of([] { denoise_start_timestep(0.0, 1000); }).find("--strength 0:"),
            std::string::npos);
  EXPECT_NE(error_of([] { denoise_start_timestep(1.5, 1000); }).find("--strength 1.5:"),
            std::string::npos);
  EXPECT_THROW(denoise_start_timestep(std::nan(""), 1000), std::runtime_error);
  EXPECT_THROW(denoise_start_timestep(-0.2, 1000), std::runtime_error);

  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const SamplerOptions ddim = options_for(SamplerKind::kDdim, 10);  // grid 0, 111, ..., 999
  EXPECT_EQ(denoise_timesteps(schedule, ddim, 500),
            std::vector<int64_t>({0, 111, 222, 333, 444, 500}));
  EXPECT_EQ(denoise_timesteps(schedule, ddim, 999), sampler_timesteps(schedule, ddim));
  EXPECT_EQ(denoise_timesteps(schedule, ddim, 0), std::vector<int64_t>({0}));
  EXPECT_EQ(denoise_timesteps(schedule, ddim, 111), std::vector<int64_t>({0, 111}));
  EXPECT_THROW(denoise_timesteps(schedule, ddim, 1000), std::runtime_error);
}

TEST(GenerationTest, DenoiseChangesALightlyNoisedImageLittle) {
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const torch::Tensor images = torch::rand({3, 1, 6, 6}) * 2 - 1;
  for (const SamplerOptions& options : all_samplers(20)) {
    // t = 2: noise sqrt(1 - abar_2) ~ 0.017, then two steps whose x0 estimate moves x by
    // sqrt(1 - abar) |eps| <= 0.017 * 0.5 each.
    const torch::Tensor light = denoise(row_wise_eps, schedule, images, 0.002, options, 1, 0);
    const double light_change = (light - images).abs().max().item<double>();
    EXPECT_LT(light_change, 0.1) << name_of(options);
    // From pure noise the input is forgotten.
    const torch::Tensor full = denoise(row_wise_eps, schedule, images, 1.0, options, 1, 0);
    EXPECT_GT((full - images).abs().max().item<double>(), 0.5) << name_of(options);
    // Per-image noise: denoising one image alone gives its row of the batch.
    EXPECT_TRUE(torch::equal(
        light[2], denoise(row_wise_eps, schedule, images.narrow(0, 2, 1), 0.002, options, 1, 2)[0]))
        << name_of(options);
  }
}

TEST(GenerationTest, DenoisingGaussianDataFollowsTheFlowFromTheNoisedInput) {
  // Data N(mu, s^2) per pixel with its exact predictor. Deterministic DDIM from x_t, the input
  // noised to t = round(strength (T - 1)), must land at mu + s g w_t: w_t is x_t standardised
  // and g the product of the cosines of the angles the run steps (test_util's
  // ddim_gaussian_gain, on the grid the run visits). x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) z,
  // z image i's first draw from ImageNoise(seed, i). An input noised to another timestep lands
  // elsewhere: one timestep off moves pixels by ~3e-3, not noised at all by ~1.
  constexpr double mu = 0.2;
  constexpr double s = 0.6;
  const NoiseSchedule schedule(BetaSchedule::kLinear, 1000);
  const EpsPredictor predictor = test_util::gaussian_eps_predictor(schedule, mu, s);
  const torch::Tensor images = mu + s * torch::randn({4, 1, 6, 6}, cpu_generator(2));
  for (const int64_t steps : {20, 1000}) {
    for (const double strength : {0.3, 0.75}) {
      SamplerOptions options = options_for(SamplerKind::kDdim, steps);
      options.clip_x0 = false;
      const torch::Tensor out = denoise(predictor, schedule, images, strength, options, 7, 2);
      const int64_t t = denoise_start_timestep(strength, schedule.timesteps());
      const double a = schedule.alpha_bar(t);
      ImageNoise noise(7, 2, 4);
      const torch::Tensor x_t = std::sqrt(a) * images.to(torch::kDouble) +
                                std::sqrt(1 - a) * noise.draw({1, 6, 6}).to(torch::kDouble);
      const double gain =
          test_util::ddim_gaussian_gain(schedule, denoise_timesteps(schedule, options, t), s);
      const torch::Tensor expected = mu + s * gain * test_util::standardised(x_t, a, mu, s);
      EXPECT_LT((out - expected).abs().max().item<double>(), 2e-5)
          << steps << " steps, strength " << strength;
    }
  }
}

}  // namespace
}  // namespace difftrain::trainer
