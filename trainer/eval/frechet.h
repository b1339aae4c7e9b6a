// Fréchet distance between two sets of feature vectors, each summarised as a Gaussian (mean and
// covariance, float64): ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) (Dowson & Landau 1982;
// the quantity FID reports, Heusel et al. 2017). LibTorch only; CPU float64 throughout.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace difftrain::trainer {

// Mean [D] and unbiased covariance [D, D] (divided by count - 1) of `count` feature vectors,
// both float64 on the CPU.
struct FeatureStats {
  at::Tensor mean;
  at::Tensor covariance;
  int64_t count = 0;
};

// Stats of features [N, D] (any float dtype, any device). Throws std::runtime_error when N < 2
// (no covariance) or features is not 2-D.
FeatureStats feature_stats(const at::Tensor& features);

// Square root of a symmetric positive semi-definite matrix through its eigendecomposition;
// eigenvalues below zero (rounding of a singular matrix) are clamped to 0. Input is symmetrised
// first, so a matrix that is symmetric only up to rounding is fine.
at::Tensor sqrt_psd(const at::Tensor& matrix);

// tr((S1 S2)^(1/2)) for symmetric PSD S1, S2, computed as tr((S1^(1/2) S2 S1^(1/2))^(1/2)):
// S1 S2 is not symmetric, but it is similar to the symmetric PSD S1^(1/2) S2 S1^(1/2), so both
// have the same (non-negative) eigenvalues and two symmetric eigendecompositions suffice.
double trace_sqrt_product(const at::Tensor& s1, const at::Tensor& s2);

// The Fréchet distance between the Gaussians of a and b (same dimension, else throws). Clamped
// at 0: for identical stats the rounding of the trace term would otherwise give about -1e-12.
double frechet_distance(const FeatureStats& a, const FeatureStats& b);

}  // namespace difftrain::trainer
