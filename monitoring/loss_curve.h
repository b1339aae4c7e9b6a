// render_loss_curve: loss against step as an RGB image, for the run folder (the trainer encodes
// it as PNG with its own writer) and for a glance at a run without Grafana.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace difftrain::monitoring {

inline constexpr std::array<uint8_t, 3> kLossCurveBackgroundRgb = {255, 255, 255};
inline constexpr std::array<uint8_t, 3> kLossCurveRawRgb = {166, 196, 234};   // light blue
inline constexpr std::array<uint8_t, 3> kLossCurveSmoothRgb = {16, 62, 140};  // dark blue
inline constexpr int kLossCurveMinWidthPx = 96;
inline constexpr int kLossCurveMinHeightPx = 64;

// step_loss: (step, loss) pairs in any order (sorted by step here; repeated steps after a
// resume are kept). A non-finite loss leaves a gap in the raw curve at its step; a point with a
// non-finite step is dropped.
// Returns width*height*3 bytes, row-major RGB, top row first: white background, axes with
// tick labels (steps as 20k / 1.5M), the raw curve in kLossCurveRawRgb and a smoothed
// curve (centred moving average over ~1/30 of the points) in kLossCurveSmoothRgb on top. The y axis
// is log10 when every loss is positive and max/min > 10 (more than one decade), else linear. An
// empty input gives the empty axes. Throws std::runtime_error if width < kLossCurveMinWidthPx or
// height < kLossCurveMinHeightPx. Thread safety: a pure function.
std::vector<uint8_t> render_loss_curve(const std::vector<std::pair<double, double>>& step_loss,
                                       int width, int height);

}  // namespace difftrain::monitoring
