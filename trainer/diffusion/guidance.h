// Classifier-free guidance (Ho & Salimans 2022): one class-conditional network, trained with
// label dropout, predicts both conditionally and with "no label"; sampling extrapolates from
// the unconditional towards the conditional prediction.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <functional>

#include "trainer/diffusion/prediction.h"

namespace difftrain::trainer {

// Ho & Salimans eq. 6: guided = (1 + w) conditional - w unconditional. w = 0 is the plain
// conditional prediction, w = -1 the unconditional one, w > 0 strengthens the class. Works on
// eps or v outputs alike (linear with weights summing to 1, so it commutes with the affine
// v -> eps and v -> x0 conversions). Shapes must be equal (throws std::runtime_error naming
// both).
at::Tensor guided_prediction(const at::Tensor& conditional, const at::Tensor& unconditional,
                             double guidance);

// The network with labels: output = model(x_t, t, labels), labels int64 [B] on x_t's device.
using ConditionalModelFunction =
    std::function<at::Tensor(const at::Tensor& x_t, const at::Tensor& t, const at::Tensor& labels)>;

// A ModelFunction for class `label` with guidance w: for w == 0 one call with `label`, otherwise
// one call on the doubled batch [x_t; x_t] with labels [label; no_label] (no_label is the
// model's num_classes), combined by guided_prediction(). Holds a copy of `model`.
ModelFunction classifier_free_guidance(ConditionalModelFunction model, int64_t label,
                                       int64_t no_label, double guidance);

}  // namespace difftrain::trainer
