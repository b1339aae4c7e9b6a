// Forward-process noise schedules (beta_t, alpha_bar_t) and the closed-form forward sample
// q(x_t | x_0) of Ho et al. 2020. Timesteps are 0-based: index t here is the paper's t + 1.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "trainer/config/settings.h"

namespace difftrain::trainer {

// Immutable after construction; const methods are safe to call from several threads.
class NoiseSchedule {
 public:
  // linear: betas evenly spaced beta_start..beta_end (Ho et al. 2020, sec. 4).
  // cosine: alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t/T + s) / (1 + s)) pi/2), s = 0.008,
  //   beta_t = 1 - alpha_bar(t+1) / alpha_bar(t) clipped to <= 0.999 (Nichol & Dhariwal 2021,
  //   eq. 17); beta_start/beta_end are unused.
  // alpha_bars are the cumulative products of (1 - beta) in both cases. Throws
  // std::runtime_error for timesteps < 1 or, for linear, unless 0 < beta_start <= beta_end < 1.
  NoiseSchedule(BetaSchedule kind, int64_t timesteps, double beta_start = 1e-4,
                double beta_end = 0.02);

  BetaSchedule kind() const { return kind_; }
  int64_t timesteps() const { return timesteps_; }
  const at::Tensor& betas() const { return betas_; }            // float64, CPU, [T]
  const at::Tensor& alpha_bars() const { return alpha_bars_; }  // float64, CPU, [T]

  // Scalars at timestep t in [0, T); throw std::runtime_error outside.
  double beta(int64_t t) const;
  double alpha_bar(int64_t t) const;
  double snr(int64_t t) const;  // alpha_bar / (1 - alpha_bar), strictly decreasing in t

  // "t,beta_t,alpha_bar_t,snr" header then T rows, 12 significant digits.
  std::string to_csv() const;

  // x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps (eq. 4). x0 and eps [B, ...] of equal shape on
  // any device and floating dtype, t integer [B] (any device). The result has x0's device and
  // dtype; coefficients are computed in float64 and then cast. Throws std::runtime_error on a
  // shape mismatch, and (for CPU t only, to avoid a device sync) on t outside [0, T).
  at::Tensor q_sample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& eps) const;

  // The v-prediction target v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022,
  // sec. 4); same arguments, result and errors as q_sample().
  at::Tensor v_target(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& eps) const;

  // sqrt(abar_t) and sqrt(1 - abar_t) of each sample, shaped [B, 1, ...] to broadcast against
  // `like` [B, ...], on like's device and dtype (float64 tables cast once). t integer [B].
  at::Tensor sqrt_alpha_bar_at(const at::Tensor& t, const at::Tensor& like) const;
  at::Tensor sqrt_one_minus_alpha_bar_at(const at::Tensor& t, const at::Tensor& like) const;

 private:
  void check_timestep(int64_t t) const;
  // Checks shapes (and CPU t's range) for q_sample()/v_target(); `caller` names the function.
  void check_forward_arguments(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& eps,
                               const char* caller) const;
  at::Tensor gather(const at::Tensor& table, const at::Tensor& t, const at::Tensor& like) const;
  // `table` on `device`, copied there once: a copy from pageable host memory at every call
  // would make each q_sample (and each sampling step) wait for the GPU.
  at::Tensor on_device(const at::Tensor& table, const c10::Device& device) const;

  BetaSchedule kind_;
  int64_t timesteps_;
  at::Tensor betas_;
  at::Tensor alpha_bars_;
  at::Tensor sqrt_alpha_bars_;
  at::Tensor sqrt_one_minus_alpha_bars_;
  struct DeviceCopy {
    at::Tensor source;
    c10::Device device;
    at::Tensor copy;
  };
  struct DeviceCopies {
    std::mutex mutex;
    std::deque<DeviceCopy> copies;
  };
  std::shared_ptr<DeviceCopies> device_copies_ =
      std::make_shared<DeviceCopies>();  // shared by copies
};

}  // namespace difftrain::trainer
