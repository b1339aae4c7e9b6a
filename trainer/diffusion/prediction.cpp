// Prediction targets and the eps-predictor wrapper; see prediction.h.
#include "trainer/diffusion/prediction.h"

#include <sstream>
#include <stdexcept>
#include <utility>

namespace difftrain::trainer {

EpsPredictor as_eps_predictor(ModelFunction model, const NoiseSchedule& schedule,
                              Prediction prediction) {
  if (prediction == Prediction::kEps) return model;
  return EpsPredictor::with_x0(
      [model = std::move(model), schedule](const at::Tensor& x_t, const at::Tensor& t) {
        const at::Tensor output = model(x_t, t);
        if (output.sizes() != x_t.sizes()) {
          std::ostringstream message;
          message << "as_eps_predictor: the model returned shape " << output.sizes()
                  << " for x_t of shape " << x_t.sizes();
          throw std::runtime_error(message.str());
        }
        const at::ScalarType type = at::promote_types(output.scalar_type(), at::kFloat);
        const at::Tensor v = output.to(type);
        const at::Tensor x = x_t.to(type);
        const at::Tensor alpha = schedule.sqrt_alpha_bar_at(t, v);
        const at::Tensor sigma = schedule.sqrt_one_minus_alpha_bar_at(t, v);
        return PredictorOutput{alpha * v + sigma * x, alpha * x - sigma * v};
      });
}

}  // namespace difftrain::trainer
