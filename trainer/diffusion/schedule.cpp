// Noise schedules and q(x_t | x_0); see schedule.h. The tables are built once in float64 with
// plain loops (T scalars), so they are exact to double rounding whatever the device.
#include "trainer/diffusion/schedule.h"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "trainer/common/text.h"

namespace difftrain::trainer {
namespace {

constexpr double kCosineOffset = 0.008;  // s in Nichol & Dhariwal eq. 17
constexpr double kMaxBeta = 0.999;       // their clip, which avoids a singularity at t = T
constexpr double kPi = 3.14159265358979323846;

at::Tensor to_tensor(std::vector<double> values) {
  return at::from_blob(values.data(), {static_cast<int64_t>(values.size())}, at::kDouble).clone();
}

std::vector<double> linear_betas(int64_t timesteps, double beta_start, double beta_end) {
  if (!(beta_start > 0.0 && beta_start <= beta_end && beta_end < 1.0)) {
    throw std::runtime_error("diffusion.beta_start = " + format_double(beta_start) +
                             ", diffusion.beta_end = " + format_double(beta_end) +
                             ": need 0 < beta_start <= beta_end < 1");
  }
  std::vector<double> betas(static_cast<size_t>(timesteps));
  for (int64_t t = 0; t < timesteps; ++t) {
    const double fraction =
        timesteps == 1 ? 0.0 : static_cast<double>(t) / static_cast<double>(timesteps - 1);
    betas[static_cast<size_t>(t)] = beta_start + (beta_end - beta_start) * fraction;
  }
  return betas;
}

std::vector<double> cosine_betas(int64_t timesteps) {
  const auto f = [timesteps](int64_t t) {
    const double phase = (static_cast<double>(t) / static_cast<double>(timesteps) + kCosineOffset) /
                         (1.0 + kCosineOffset) * kPi / 2.0;
    return std::cos(phase) * std::cos(phase);
  };
  std::vector<double> betas(static_cast<size_t>(timesteps));
  for (int64_t t = 0; t < timesteps; ++t) {
    // alpha_bar(t+1) / alpha_bar(t) = f(t+1) / f(t): the f(0) normalisation cancels.
    betas[static_cast<size_t>(t)] = std::min(1.0 - f(t + 1) / f(t), kMaxBeta);
  }
  return betas;
}

}  // namespace

NoiseSchedule::NoiseSchedule(BetaSchedule kind, int64_t timesteps, double beta_start,
                             double beta_end)
    : kind_(kind), timesteps_(timesteps) {
  if (timesteps < 1) {
    throw std::runtime_error("diffusion.timesteps = " + std::to_string(timesteps) +
                             ": must be >= 1");
  }
  const std::vector<double> betas = kind == BetaSchedule::kLinear
                                        ? linear_betas(timesteps, beta_start, beta_end)
                                        : cosine_betas(timesteps);
  std::vector<double> alpha_bars(betas.size());
  std::vector<double> sqrt_alpha_bars(betas.size());
  std::vector<double> sqrt_one_minus(betas.size());
  double product = 1.0;
  for (size_t i = 0; i < betas.size(); ++i) {
    product *= 1.0 - betas[i];
    alpha_bars[i] = product;
    sqrt_alpha_bars[i] = std::sqrt(product);
    sqrt_one_minus[i] = std::sqrt(1.0 - product);
  }
  betas_ = to_tensor(betas);
  alpha_bars_ = to_tensor(alpha_bars);
  sqrt_alpha_bars_ = to_tensor(sqrt_alpha_bars);
  sqrt_one_minus_alpha_bars_ = to_tensor(sqrt_one_minus);
}

void NoiseSchedule::check_timestep(int64_t t) const {
  if (t < 0 || t >= timesteps_) {
    throw std::runtime_error("timestep " + std::to_string(t) + " outside [0, " +
                             std::to_string(timesteps_) + ")");
  }
}

double NoiseSchedule::beta(int64_t t) const {
  check_timestep(t);
  return betas_.data_ptr<double>()[t];
}

double NoiseSchedule::alpha_bar(int64_t t) const {
  check_timestep(t);
  return alpha_bars_.data_ptr<double>()[t];
}

double NoiseSchedule::snr(int64_t t) const {
  const double abar = alpha_bar(t);
  return abar / (1.0 - abar);
}

std::string NoiseSchedule::to_csv() const {
  std::ostringstream out;
  out << "t,beta_t,alpha_bar_t,snr\n" << std::setprecision(12);
  for (int64_t t = 0; t < timesteps_; ++t) {
    out << t << ',' << beta(t) << ',' << alpha_bar(t) << ',' << snr(t) << '\n';
  }
  return out.str();
}

void NoiseSchedule::check_forward_arguments(const at::Tensor& x0, const at::Tensor& t,
                                            const at::Tensor& eps, const char* caller) const {
  if (x0.dim() < 1 || x0.sizes() != eps.sizes() || t.dim() != 1 || t.size(0) != x0.size(0) ||
      t.is_floating_point() || t.is_complex()) {
    std::ostringstream message;
    message << caller << ": x0 " << x0.sizes() << ", eps " << eps.sizes() << ", t " << t.sizes()
            << " (" << t.scalar_type()
            << "): want x0 and eps [B, ...] of equal shape, t integer [B]";
    throw std::runtime_error(message.str());
  }
  if (t.device().is_cpu() && t.numel() > 0) {
    check_timestep(t.min().item<int64_t>());
    check_timestep(t.max().item<int64_t>());
  }
}

at::Tensor NoiseSchedule::gather(const at::Tensor& table, const at::Tensor& t,
                                 const at::Tensor& like) const {
  std::vector<int64_t> coefficient_shape(static_cast<size_t>(like.dim()), 1);
  coefficient_shape[0] = like.size(0);
  const at::Tensor index = t.to(at::kLong);
  return on_device(table, index.device())
      .index_select(0, index)
      .to(like.device(), like.scalar_type())
      .reshape(coefficient_shape);
}

at::Tensor NoiseSchedule::on_device(const at::Tensor& table, const c10::Device& device) const {
  if (device == table.device()) return table;
  std::lock_guard<std::mutex> lock(device_copies_->mutex);
  for (const DeviceCopy& entry : device_copies_->copies) {
    if (entry.device == device && entry.source.is_same(table)) return entry.copy;
  }
  device_copies_->copies.push_back({table, device, table.to(device)});
  return device_copies_->copies.back().copy;
}

at::Tensor NoiseSchedule::sqrt_alpha_bar_at(const at::Tensor& t, const at::Tensor& like) const {
  return gather(sqrt_alpha_bars_, t, like);
}

at::Tensor NoiseSchedule::sqrt_one_minus_alpha_bar_at(const at::Tensor& t,
                                                      const at::Tensor& like) const {
  return gather(sqrt_one_minus_alpha_bars_, t, like);
}

at::Tensor NoiseSchedule::q_sample(const at::Tensor& x0, const at::Tensor& t,
                                   const at::Tensor& eps) const {
  check_forward_arguments(x0, t, eps, "q_sample");
  return (gather(sqrt_alpha_bars_, t, x0) * x0 + gather(sqrt_one_minus_alpha_bars_, t, x0) * eps)
      .to(x0.scalar_type());
}

at::Tensor NoiseSchedule::v_target(const at::Tensor& x0, const at::Tensor& t,
                                   const at::Tensor& eps) const {
  check_forward_arguments(x0, t, eps, "v_target");
  return (gather(sqrt_alpha_bars_, t, x0) * eps - gather(sqrt_one_minus_alpha_bars_, t, x0) * x0)
      .to(x0.scalar_type());
}

}  // namespace difftrain::trainer
