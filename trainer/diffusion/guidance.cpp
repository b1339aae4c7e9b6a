// Classifier-free guidance; see guidance.h.
#include "trainer/diffusion/guidance.h"

#include <sstream>
#include <stdexcept>
#include <utility>

namespace difftrain::trainer {

at::Tensor guided_prediction(const at::Tensor& conditional, const at::Tensor& unconditional,
                             double guidance) {
  if (conditional.sizes() != unconditional.sizes()) {
    std::ostringstream message;
    message << "guided_prediction: conditional has shape " << conditional.sizes()
            << ", unconditional " << unconditional.sizes() << "; want equal shapes";
    throw std::runtime_error(message.str());
  }
  return conditional * (1.0 + guidance) - unconditional * guidance;
}

ModelFunction classifier_free_guidance(ConditionalModelFunction model, int64_t label,
                                       int64_t no_label, double guidance) {
  return [model = std::move(model), label, no_label, guidance](const at::Tensor& x_t,
                                                               const at::Tensor& t) {
    const int64_t batch = x_t.size(0);
    const at::TensorOptions options = at::TensorOptions().dtype(at::kLong).device(x_t.device());
    if (guidance == 0.0) return model(x_t, t, at::full({batch}, label, options));
    const at::Tensor labels =
        at::cat({at::full({batch}, label, options), at::full({batch}, no_label, options)});
    const at::Tensor both = model(at::cat({x_t, x_t}), at::cat({t, t}), labels);
    return guided_prediction(both.narrow(0, 0, batch), both.narrow(0, batch, batch), guidance);
  };
}

}  // namespace difftrain::trainer
