// What the network predicts: the noise eps (Ho et al. 2020) or the velocity
// v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), and the wrapper that turns either
// into the predictor every sampler takes.
#pragma once

#include <functional>

#include "trainer/config/settings.h"
#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

// The network's output for x_t at timesteps t, in `prediction`'s parameterisation, for x_t
// float [B, ...] and t int64 [B] on x_t's device.
using ModelFunction = std::function<at::Tensor(const at::Tensor& x_t, const at::Tensor& t)>;

// The samplers' predictor for the model: the model itself for kEps (the samplers derive x0 from
// eps); for kV, with x_t = sqrt(a) x0 + sqrt(1-a) eps, both eps = sqrt(a) v + sqrt(1-a) x_t and
// x0 = sqrt(a) x_t - sqrt(1-a) v, the latter exact where abar -> 0 unlike x0 derived from eps
// (per sample, in float32 or v's dtype if wider, coefficients cast from float64). The returned
// predictor holds copies of `model` and `schedule` (the schedule's tables are shared, immutable
// tensors), so neither argument need outlive it.
EpsPredictor as_eps_predictor(ModelFunction model, const NoiseSchedule& schedule,
                              Prediction prediction);

}  // namespace difftrain::trainer
