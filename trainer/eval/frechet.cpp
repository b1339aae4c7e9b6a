// Fréchet distance: moments of features and a stable trace of the matrix square root.
#include "trainer/eval/frechet.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace difftrain::trainer {
namespace {

at::Tensor symmetrised(const at::Tensor& matrix) { return (matrix + matrix.transpose(0, 1)) * 0.5; }

void check_square(const at::Tensor& matrix, const char* name) {
  if (matrix.dim() != 2 || matrix.size(0) != matrix.size(1)) {
    throw std::runtime_error(
        std::string("frechet: ") + name + " has shape " + std::to_string(matrix.dim()) + "-D " +
        (matrix.dim() > 0 ? std::to_string(matrix.size(0)) : "") + ", want a square matrix");
  }
}

}  // namespace

FeatureStats feature_stats(const at::Tensor& features) {
  if (features.dim() != 2) {
    throw std::runtime_error("frechet: features have " + std::to_string(features.dim()) +
                             " dimensions, want [N, D]");
  }
  const int64_t count = features.size(0);
  if (count < 2) {
    throw std::runtime_error("frechet: " + std::to_string(count) +
                             " feature vectors; a covariance needs at least 2");
  }
  const at::Tensor x = features.to(at::kCPU, at::kDouble);
  FeatureStats stats;
  stats.count = count;
  stats.mean = x.mean(0);
  const at::Tensor centred = x - stats.mean;
  stats.covariance =
      symmetrised(centred.transpose(0, 1).matmul(centred) / static_cast<double>(count - 1));
  return stats;
}

at::Tensor sqrt_psd(const at::Tensor& matrix) {
  check_square(matrix, "matrix");
  const auto [eigenvalues, eigenvectors] =
      at::linalg_eigh(symmetrised(matrix.to(at::kDouble)), "L");
  const at::Tensor roots = eigenvalues.clamp_min(0.0).sqrt();
  return symmetrised((eigenvectors * roots).matmul(eigenvectors.transpose(0, 1)));
}

double trace_sqrt_product(const at::Tensor& s1, const at::Tensor& s2) {
  check_square(s1, "S1");
  check_square(s2, "S2");
  if (s1.size(0) != s2.size(0)) {
    throw std::runtime_error("frechet: covariances of dimension " + std::to_string(s1.size(0)) +
                             " and " + std::to_string(s2.size(0)));
  }
  const at::Tensor root1 = sqrt_psd(s1);
  const at::Tensor inner = symmetrised(root1.matmul(s2.to(at::kDouble)).matmul(root1));
  const at::Tensor eigenvalues = at::linalg_eigvalsh(inner, "L");
  return eigenvalues.clamp_min(0.0).sqrt().sum().item<double>();
}

double frechet_distance(const FeatureStats& a, const FeatureStats& b) {
  if (!a.mean.defined() || !b.mean.defined() || a.mean.numel() != b.mean.numel()) {
    throw std::runtime_error("frechet: feature dimensions differ (" +
                             std::to_string(a.mean.defined() ? a.mean.numel() : 0) + " vs " +
                             std::to_string(b.mean.defined() ? b.mean.numel() : 0) + ")");
  }
  const double mean_term = (a.mean - b.mean).pow(2).sum().item<double>();
  const double trace_term = a.covariance.trace().item<double>() +
                            b.covariance.trace().item<double>() -
                            2.0 * trace_sqrt_product(a.covariance, b.covariance);
  return std::max(0.0, mean_term + trace_term);
}

}  // namespace difftrain::trainer
