// What the network predicts: the noise eps (Ho et al. 2020) or the velocity
// v = sqrt(abar) eps - sqrt(1 - abar) x0 (Salimans & Ho 2022), and the wrapper that turns either
// into the eps-predictor every sampler takes.
#pragma once

#include <string>

#include "trainer/diffusion/sampler.h"
#include "trainer/diffusion/schedule.h"

namespace difftrain::trainer {

enum class Prediction { kEps, kV };

// "eps" | "v"; anything else throws std::runtime_error naming the value (model.prediction).
Prediction parse_prediction(const std::string& name);
std::string to_string(Prediction prediction);

// The network's output for x_t at timesteps t, in `prediction`'s parameterisation; same
// signature and calling rules as EpsPredictor.
using ModelFunction = EpsPredictor;

// eps from the model's output: the model itself for kEps; for kV, with x_t = sqrt(a) x0 +
// sqrt(1-a) eps, eps = sqrt(a) v + sqrt(1-a) x_t (per sample, coefficients cast from float64 to
// the output's dtype). The returned predictor holds copies of `model` and `schedule` (the
// schedule's tables are shared, immutable tensors), so neither argument need outlive it.
EpsPredictor as_eps_predictor(ModelFunction model, const NoiseSchedule& schedule,
                              Prediction prediction);

}  // namespace difftrain::trainer
