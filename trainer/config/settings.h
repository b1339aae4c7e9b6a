// The run's enumerated settings and their names, one table per setting: config keys, command
// options, log lines and stored configs parse and print them only through parse_setting(),
// setting_name() and setting_choices() here.
#pragma once

#include <array>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "launch/settings.h"

namespace difftrain::trainer {

// What the network predicts: the noise eps, or v = sqrt(abar) eps - sqrt(1-abar) x0.
enum class Prediction { kEps, kV };
// Forward-process betas: linear (Ho et al. 2020) or cosine (Nichol & Dhariwal 2021).
enum class BetaSchedule { kLinear, kCosine };
// diffusion.formulation: DDPM's discrete timesteps, or EDM's preconditioned network over
// continuous noise levels (Karras et al. 2022).
enum class Formulation { kDdpm, kEdm };
// Reverse-process sampler: ancestral DDPM, DDIM, DPM-Solver++(2M).
enum class SamplerKind { kDdpm, kDdim, kDpmSolverPP2M, kHeun };
// DDPM's reverse-step variance: beta_t or the posterior variance beta~_t.
enum class DdpmVariance { kBeta, kPosterior };
// Training precision: fp32, or bf16 autocast of the forward with fp32 master weights.
enum class Precision { kFp32, kBf16 };
// Per-sample loss weight: none (L_simple), or min-SNR-gamma (Hang et al. 2023).
enum class LossWeighting { kNone, kMinSnr };
// Training timesteps: uniform over [0, T) (Ho et al.), or EDM's log-normal noise levels
// (Karras et al. 2022) taken to the nearest timestep of the schedule.
enum class TimestepSampling { kUniform, kLogNormal };
// train.lr_decay: after the warm-up, the learning rate stays (none) or falls to 0 at
// train.steps along half a cosine (Loshchilov & Hutter 2017).
enum class LrDecay { kNone, kCosine };
using launch::Backend;
using launch::DeviceRequest;

template <typename E>
struct SettingName {
  E value;
  const char* name;
};

// SettingNames<E>::kAll lists every value of E with its name, in documentation order.
template <typename E>
struct SettingNames;

template <>
struct SettingNames<Prediction> {
  static constexpr std::array<SettingName<Prediction>, 2> kAll{
      {{Prediction::kEps, "eps"}, {Prediction::kV, "v"}}};
};
template <>
struct SettingNames<BetaSchedule> {
  static constexpr std::array<SettingName<BetaSchedule>, 2> kAll{
      {{BetaSchedule::kLinear, "linear"}, {BetaSchedule::kCosine, "cosine"}}};
};
template <>
struct SettingNames<SamplerKind> {
  static constexpr std::array<SettingName<SamplerKind>, 4> kAll{
      {{SamplerKind::kDdpm, "ddpm"},
       {SamplerKind::kDdim, "ddim"},
       {SamplerKind::kDpmSolverPP2M, "dpmpp2m"},
       {SamplerKind::kHeun, "heun"}}};
};
template <>
struct SettingNames<Formulation> {
  static constexpr std::array<SettingName<Formulation>, 2> kAll{
      {{Formulation::kDdpm, "ddpm"}, {Formulation::kEdm, "edm"}}};
};
template <>
struct SettingNames<DdpmVariance> {
  static constexpr std::array<SettingName<DdpmVariance>, 2> kAll{
      {{DdpmVariance::kBeta, "beta"}, {DdpmVariance::kPosterior, "posterior"}}};
};
template <>
struct SettingNames<Precision> {
  static constexpr std::array<SettingName<Precision>, 2> kAll{
      {{Precision::kFp32, "fp32"}, {Precision::kBf16, "bf16"}}};
};
template <>
struct SettingNames<LossWeighting> {
  static constexpr std::array<SettingName<LossWeighting>, 2> kAll{
      {{LossWeighting::kNone, "none"}, {LossWeighting::kMinSnr, "min_snr"}}};
};
template <>
struct SettingNames<TimestepSampling> {
  static constexpr std::array<SettingName<TimestepSampling>, 2> kAll{
      {{TimestepSampling::kUniform, "uniform"}, {TimestepSampling::kLogNormal, "lognormal"}}};
};
template <>
struct SettingNames<LrDecay> {
  static constexpr std::array<SettingName<LrDecay>, 2> kAll{
      {{LrDecay::kNone, "none"}, {LrDecay::kCosine, "cosine"}}};
};
template <>
struct SettingNames<DeviceRequest> {
  static constexpr std::array<SettingName<DeviceRequest>, 3> kAll{{{DeviceRequest::kAuto, "auto"},
                                                                   {DeviceRequest::kCpu, "cpu"},
                                                                   {DeviceRequest::kCuda, "cuda"}}};
};
template <>
struct SettingNames<Backend> {
  static constexpr std::array<SettingName<Backend>, 3> kAll{
      {{Backend::kAuto, "auto"}, {Backend::kMpi, "mpi"}, {Backend::kNccl, "nccl"}}};
};

// The name of `value`.
template <typename E>
requires std::is_enum_v<E> std::string setting_name(E value) {
  for (const auto& entry : SettingNames<E>::kAll) {
    if (entry.value == value) return entry.name;
  }
  throw std::logic_error("to_string: a setting value without a name");
}

// Every name, in order (for command-line checks).
template <typename E>
std::vector<std::string> setting_names() {
  std::vector<std::string> names;
  for (const auto& entry : SettingNames<E>::kAll) names.emplace_back(entry.name);
  return names;
}

// "`a`, `b` or `c`" for documentation, "a, b or c" with quote = "".
template <typename E>
std::string setting_choices(const std::string& quote = "") {
  const auto& all = SettingNames<E>::kAll;
  std::string text;
  for (size_t i = 0; i < all.size(); ++i) {
    if (i > 0) text += i + 1 == all.size() ? " or " : ", ";
    text += quote + all[i].name + quote;
  }
  return text;
}

// The value named `text`; throws std::runtime_error "<what> = '<text>': want a, b or c".
template <typename E>
E parse_setting(const std::string& text, const std::string& what) {
  for (const auto& entry : SettingNames<E>::kAll) {
    if (text == entry.name) return entry.value;
  }
  throw std::runtime_error(what + " = '" + text + "': want " + setting_choices<E>());
}

}  // namespace difftrain::trainer
