// The random part of one training step: timesteps, noise and label dropout for each sample,
// drawn from a generator seeded by (seed, step, the sample's position in the global batch).
#pragma once

#include <ATen/core/Generator.h>
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "trainer/config/settings.h"

namespace difftrain::trainer {

class NoiseSchedule;

// How a sample's training timestep is drawn (train.timestep_sampling).
class TimestepDistribution {
 public:
  // Uniform over [0, timesteps): the DDPM recipe.
  TimestepDistribution(int64_t timesteps);  // NOLINT(google-explicit-constructor): the default
  // EDM's log-normal noise levels, ln(sigma) ~ N(mean, std) with sigma = sqrt((1 - abar) /
  // abar), each taken to the timestep of `schedule` whose sigma is nearest in log (the
  // discrete-schedule equivalent: sigma below or above the schedule's range gives 0 or T-1).
  static TimestepDistribution log_normal(const NoiseSchedule& schedule, double mean, double std);

  int64_t timesteps() const { return timesteps_; }
  // One draw from `generator` (one randint or one normal draw): the timestep and, for
  // log_normal, the continuous noise level it was taken from (EDM trains at that sigma; 0 for
  // uniform).
  struct Draw {
    int64_t timestep;
    double sigma;
  };
  Draw draw(at::Generator& generator) const;
  // The timestep whose log sigma is nearest to `log_sigma` (log_normal only).
  int64_t nearest(double log_sigma) const;

 private:
  int64_t timesteps_;
  TimestepSampling kind_ = TimestepSampling::kUniform;
  double mean_ = 0.0, std_ = 1.0;
  std::vector<double> log_sigma_;  // per timestep, increasing
};

struct StepNoise {
  at::Tensor timesteps;   // int64 [B], from the TimestepDistribution
  at::Tensor sigmas;      // float32 [B]: the continuous noise levels drawn (log_normal; else 0)
  at::Tensor eps;         // float32 [B,C,H,W], standard normal
  at::Tensor drop_label;  // bool [B]: train this sample with "no label" (probability label_dropout)
  at::Tensor flip;        // bool [B]: flip the image left-right (data.hflip; all false when off)
};

// Draws for this rank's `batch` samples, which sit at global positions
// first_position .. first_position + batch - 1 of step `step`'s global batch. Each sample has
// its own generator, so the draws do not depend on how the global batch is split over ranks
// and a resumed run draws exactly what an uninterrupted one would. Tensors are on the CPU. The
// label-dropout draw comes after the timestep and noise, and the flip (only when `hflip`)
// after that, so each leaves the earlier draws unchanged.
// pin_memory: allocate the tensors in page-locked memory (needs a CUDA LibTorch and device),
// so that their copies to a GPU run asynchronously.
StepNoise draw_step_noise(uint64_t seed, int64_t step, int64_t first_position, int64_t batch,
                          const TimestepDistribution& timesteps, at::IntArrayRef sample_shape,
                          double label_dropout = 0.0, bool pin_memory = false, bool hflip = false);

}  // namespace difftrain::trainer
