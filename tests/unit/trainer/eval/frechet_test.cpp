// Fréchet distance: moments, the PSD square root, the trace term against closed forms, and the
// distance's zero, symmetry and Gaussian closed form.
#include "trainer/eval/frechet.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace difftrain::trainer {
namespace {

at::Tensor doubles(const at::Tensor& x) { return x.to(torch::kDouble); }

// A random orthogonal matrix (QR of a Gaussian matrix).
at::Tensor random_rotation(int64_t d) {
  return std::get<0>(torch::linalg_qr(torch::randn({d, d}, torch::kDouble)));
}

// A random symmetric positive definite matrix with eigenvalues in [0.1, 2.1].
at::Tensor random_spd(int64_t d) {
  const at::Tensor q = random_rotation(d);
  return q.matmul(torch::diag(torch::rand({d}, torch::kDouble) * 2 + 0.1)).matmul(q.t());
}

FeatureStats gaussian(const at::Tensor& mean, const at::Tensor& covariance) {
  return {doubles(mean), doubles(covariance), 1000};
}

TEST(FrechetTest, FeatureStatsAreTheMeanAndUnbiasedCovariance) {
  const at::Tensor x = torch::tensor({{1.0, 2.0}, {3.0, 2.0}, {5.0, 8.0}});
  const FeatureStats stats = feature_stats(x);
  EXPECT_EQ(stats.count, 3);
  EXPECT_EQ(stats.mean.scalar_type(), torch::kDouble);
  EXPECT_TRUE(torch::allclose(stats.mean, torch::tensor({3.0, 4.0}, torch::kDouble)));
  // Centred rows (-2,-2), (0,-2), (2,4); X^T X / (3 - 1).
  EXPECT_TRUE(
      torch::allclose(stats.covariance, torch::tensor({{4.0, 6.0}, {6.0, 12.0}}, torch::kDouble)));
  EXPECT_THROW(feature_stats(torch::ones({1, 4})), std::runtime_error);
  EXPECT_THROW(feature_stats(torch::ones({8})), std::runtime_error);
}

TEST(FrechetTest, SqrtPsdSquaresBackAndClampsRoundingNegatives) {
  torch::manual_seed(1);
  const at::Tensor s = random_spd(12);
  const at::Tensor root = sqrt_psd(s);
  EXPECT_TRUE(torch::allclose(root.matmul(root), s, 1e-10, 1e-10));
  EXPECT_TRUE(torch::allclose(root, root.t()));
  // Rank 1 with a tiny negative eigenvalue from rounding: the root is still finite and real.
  const at::Tensor v = torch::tensor({{1.0}, {2.0}, {3.0}}, torch::kDouble);
  const at::Tensor singular = v.matmul(v.t()) - 1e-14 * torch::eye(3, torch::kDouble);
  const at::Tensor singular_root = sqrt_psd(singular);
  EXPECT_TRUE(torch::isfinite(singular_root).all().item<bool>());
  EXPECT_TRUE(torch::allclose(singular_root.matmul(singular_root), v.matmul(v.t()), 1e-6, 1e-6));
}

TEST(FrechetTest, TraceSqrtProductMatchesAnalyticCases) {
  torch::manual_seed(2);
  // Commuting matrices (shared eigenvectors): tr((S1 S2)^1/2) = sum_i sqrt(a_i b_i).
  const int64_t d = 10;
  const at::Tensor q = random_rotation(d);
  const at::Tensor a = torch::rand({d}, torch::kDouble) + 0.05;
  const at::Tensor b = torch::rand({d}, torch::kDouble) + 0.05;
  const at::Tensor s1 = q.matmul(torch::diag(a)).matmul(q.t());
  const at::Tensor s2 = q.matmul(torch::diag(b)).matmul(q.t());
  EXPECT_NEAR(trace_sqrt_product(s1, s2), (a * b).sqrt().sum().item<double>(), 1e-10);
  // Non-commuting, with S1 = c I: tr((c S2)^1/2) = sqrt(c) tr(S2^1/2).
  const at::Tensor s3 = random_spd(d);
  const double c = 2.5;
  EXPECT_NEAR(trace_sqrt_product(c * torch::eye(d, torch::kDouble), s3),
              std::sqrt(c) * torch::trace(sqrt_psd(s3)).item<double>(), 1e-10);
  // 2x2 by hand: S1 = diag(4, 1), S2 = [[2, 1], [1, 2]]; S1 S2 = [[8, 4], [1, 2]] has
  // trace 10 and determinant 12, and for a 2x2 matrix with non-negative eigenvalues
  // tr(M^1/2) = sqrt(tr M + 2 sqrt(det M)).
  const at::Tensor d1 = torch::tensor({{4.0, 0.0}, {0.0, 1.0}}, torch::kDouble);
  const at::Tensor d2 = torch::tensor({{2.0, 1.0}, {1.0, 2.0}}, torch::kDouble);
  EXPECT_NEAR(trace_sqrt_product(d1, d2), std::sqrt(10.0 + 2.0 * std::sqrt(12.0)), 1e-12);
  EXPECT_NEAR(trace_sqrt_product(d2, d1), std::sqrt(10.0 + 2.0 * std::sqrt(12.0)), 1e-12);
}

TEST(FrechetTest, SetAgainstItselfIsZero) {
  torch::manual_seed(3);
  // Correlated 64-d features with a few dead (constant) dimensions, like ReLU outputs: the
  // covariance is singular, which the clamping must handle. Tolerance: 1e-8 of the trace.
  at::Tensor features = torch::relu(torch::randn({400, 64}).matmul(torch::randn({64, 64})));
  features.narrow(1, 0, 4).zero_();
  const FeatureStats stats = feature_stats(features);
  const double scale = torch::trace(stats.covariance).item<double>();
  EXPECT_GT(scale, 1.0);
  EXPECT_NEAR(frechet_distance(stats, stats), 0.0, 1e-8 * scale);
  // Fewer vectors than dimensions (rank-deficient covariance): still ~0, never NaN.
  const FeatureStats few = feature_stats(torch::randn({10, 64}));
  const double few_fd = frechet_distance(few, few);
  EXPECT_TRUE(std::isfinite(few_fd));
  EXPECT_NEAR(few_fd, 0.0, 1e-8 * torch::trace(few.covariance).item<double>());
}

TEST(FrechetTest, GaussiansWithDiagonalCovariancesMatchTheClosedForm) {
  // FD = ||mu1 - mu2||^2 + sum_i (sqrt(s1_i) - sqrt(s2_i))^2 for diagonal covariances.
  const at::Tensor mu1 = torch::tensor({0.0, 1.0, -2.0});
  const at::Tensor mu2 = torch::tensor({1.0, 1.0, 0.0});
  const at::Tensor var1 = torch::tensor({1.0, 4.0, 9.0});
  const at::Tensor var2 = torch::tensor({4.0, 4.0, 1.0});
  // 1 + 4 from the means; (1-2)^2 + 0 + (3-1)^2 = 5 from the covariances.
  EXPECT_NEAR(frechet_distance(gaussian(mu1, torch::diag(var1)), gaussian(mu2, torch::diag(var2))),
              10.0, 1e-12);
  // The same in a rotated basis: the distance is invariant under a rotation of both.
  torch::manual_seed(4);
  const at::Tensor q = random_rotation(3);
  const FeatureStats r1 =
      gaussian(q.matmul(doubles(mu1)), q.matmul(torch::diag(doubles(var1))).matmul(q.t()));
  const FeatureStats r2 =
      gaussian(q.matmul(doubles(mu2)), q.matmul(torch::diag(doubles(var2))).matmul(q.t()));
  EXPECT_NEAR(frechet_distance(r1, r2), 10.0, 1e-10);
  // Estimated from samples: 20000 draws of each, within sampling error of the closed form.
  const int64_t n = 20000;
  const at::Tensor x1 = doubles(mu1) + torch::randn({n, 3}, torch::kDouble) * doubles(var1).sqrt();
  const at::Tensor x2 = doubles(mu2) + torch::randn({n, 3}, torch::kDouble) * doubles(var2).sqrt();
  EXPECT_NEAR(frechet_distance(feature_stats(x1), feature_stats(x2)), 10.0, 0.3);
}

TEST(FrechetTest, IsSymmetric) {
  torch::manual_seed(5);
  const int64_t d = 16;
  const FeatureStats a = gaussian(torch::randn({d}), random_spd(d));
  const FeatureStats b = gaussian(torch::randn({d}), random_spd(d));
  const double ab = frechet_distance(a, b);
  EXPECT_GT(ab, 0.1);
  EXPECT_NEAR(ab, frechet_distance(b, a), 1e-10 * ab);
  EXPECT_THROW(frechet_distance(a, gaussian(torch::zeros({d + 1}), torch::eye(d + 1))),
               std::runtime_error);
}

}  // namespace
}  // namespace difftrain::trainer
