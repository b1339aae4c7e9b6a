// Prediction targets and the eps-predictor wrapper; see prediction.h.
#include "trainer/diffusion/prediction.h"

#include <sstream>
#include <stdexcept>
#include <utility>

namespace difftrain::trainer {

Prediction parse_prediction(const std::string& name) {
  if (name == "eps") return Prediction::kEps;
  if (name == "v") return Prediction::kV;
  throw std::runtime_error("model.prediction = '" + name + "': must be 'eps' or 'v'");
}

std::string to_string(Prediction prediction) {
  return prediction == Prediction::kEps ? "eps" : "v";
}

EpsPredictor as_eps_predictor(ModelFunction model, const NoiseSchedule& schedule,
                              Prediction prediction) {
  if (prediction == Prediction::kEps) return model;
  return [model = std::move(model), schedule](const at::Tensor& x_t, const at::Tensor& t) {
    const at::Tensor v = model(x_t, t);
    if (v.sizes() != x_t.sizes()) {
      std::ostringstream message;
      message << "as_eps_predictor: the model returned shape " << v.sizes() << " for x_t of shape "
              << x_t.sizes();
      throw std::runtime_error(message.str());
    }
    return schedule.sqrt_alpha_bar_at(t, v) * v +
           schedule.sqrt_one_minus_alpha_bar_at(t, v) * x_t.to(v.scalar_type());
  };
}

}  // namespace difftrain::trainer
