// render_loss_curve: axis ranges and ticks, then raw and smoothed curves on an RgbCanvas.
#include "monitoring/loss_curve.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "monitoring/bitmap_font.h"
#include "monitoring/rgb_canvas.h"

namespace difftrain::monitoring {
namespace {

constexpr Rgb kInkRgb = {40, 40, 40};
constexpr Rgb kGridRgb = {232, 232, 232};
// The smoothed curve averages each point with its neighbours, this fraction of all points.
constexpr double kSmoothingWindowFraction = 1.0 / 30.0;

struct Tick {
  double value;  // in axis units (log10 of the loss on a log axis)
  std::string label;
};

struct Axis {
  double min = 0, max = 1;  // in axis units
  std::vector<Tick> ticks;
};

std::string format_fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", std::max(0, decimals), value);
  std::string text = buffer;
  if (text.find_first_not_of("-0.") == std::string::npos) text = "0";  // no "-0.00"
  return text;
}

// Decimals needed to tell ticks `step` apart.
int decimals_for(double step) {
  return static_cast<int>(std::max(0.0, -std::floor(std::log10(step) + 1e-9)));
}

// A label with k/M suffixes for large values, so step counts stay short.
std::string format_linear(double value, double step, double largest) {
  if (std::abs(value) < step * 1e-6) return "0";
  if (largest >= 1e6 && step >= 1e5)
    return format_fixed(value / 1e6, decimals_for(step / 1e6)) + "M";
  if (largest >= 1e4 && step >= 1e3)
    return format_fixed(value / 1e3, decimals_for(step / 1e3)) + "k";
  return format_fixed(value, decimals_for(step));
}

// Ticks at 1, 2 or 5 times a power of ten, about target_count of them over [min, max].
Axis linear_axis(double min, double max, int target_count) {
  Axis axis{min, max, {}};
  const double raw = (max - min) / std::max(1, target_count);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double normalized = raw / magnitude;
  const double step = magnitude * (normalized < 1.5 ? 1
                                   : normalized < 3 ? 2
                                   : normalized < 7 ? 5
                                                    : 10);
  const double largest = std::max(std::abs(min), std::abs(max));
  for (double i = std::ceil(min / step); i * step <= max + step * 1e-9; ++i) {
    axis.ticks.push_back({i * step, format_linear(i * step, step, largest)});
  }
  return axis;
}

std::string format_power_of_ten_multiple(int mantissa, int exponent) {
  if (exponent >= -3 && exponent <= 4) {
    return format_fixed(mantissa * std::pow(10.0, exponent), -exponent);
  }
  return std::to_string(mantissa) + "e" + std::to_string(exponent);
}

// Axis units are log10(loss). Labels at every decade, and at 2x and 5x when few decades show.
Axis log_axis(double min_log, double max_log) {
  Axis axis{min_log, max_log, {}};
  const bool few_decades = max_log - min_log < 2.5;
  for (int exponent = static_cast<int>(std::floor(min_log));
       exponent <= static_cast<int>(std::ceil(max_log)); ++exponent) {
    for (int mantissa : {1, 2, 5}) {
      if (mantissa != 1 && !few_decades) continue;
      const double v = std::log10(mantissa) + exponent;
      if (v < min_log - 1e-9 || v > max_log + 1e-9) continue;
      axis.ticks.push_back({v, format_power_of_ten_multiple(mantissa, exponent)});
    }
  }
  return axis;
}

struct Point {
  double x, y;  // step and loss in axis units
  bool starts_segment;
};

}  // namespace

std::vector<uint8_t> render_loss_curve(const std::vector<std::pair<double, double>>& step_loss,
                                       int width, int height) {
  if (width < kLossCurveMinWidthPx || height < kLossCurveMinHeightPx) {
    throw std::runtime_error("loss curve " + std::to_string(width) + "x" + std::to_string(height) +
                             " pixels: want at least " + std::to_string(kLossCurveMinWidthPx) +
                             "x" + std::to_string(kLossCurveMinHeightPx));
  }

  // Sort by step; a point without a finite step has no place on the x axis and is dropped.
  std::vector<std::pair<double, double>> sorted;
  sorted.reserve(step_loss.size());
  for (const auto& point : step_loss) {
    if (std::isfinite(point.first)) sorted.push_back(point);
  }
  std::stable_sort(sorted.begin(), sorted.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  double min_x = INFINITY, max_x = -INFINITY, min_y = INFINITY, max_y = -INFINITY;
  for (const auto& [x, y] : sorted) {
    if (!std::isfinite(y)) continue;
    min_x = std::min(min_x, x);
    max_x = std::max(max_x, x);
    min_y = std::min(min_y, y);
    max_y = std::max(max_y, y);
  }
  const bool has_data = min_x <= max_x;
  const bool log_y = has_data && min_y > 0 && max_y / min_y > 10;

  std::vector<Point> points;
  bool gap = true;
  for (const auto& [x, y] : sorted) {
    if (!std::isfinite(y)) {
      gap = true;
      continue;
    }
    points.push_back({x, log_y ? std::log10(y) : y, gap});
    gap = false;
  }

  // Axis ranges with a little headroom; a single value gets a range around it.
  if (!has_data) {
    min_x = 0, max_x = 1, min_y = 0, max_y = 1;
  } else if (log_y) {
    min_y = std::log10(min_y), max_y = std::log10(max_y);
  }
  if (max_x - min_x <= 0) min_x -= 1, max_x += 1;
  if (max_y - min_y <= 0) {
    const double pad = log_y ? 0.5 : std::max(std::abs(min_y) * 0.1, 1e-3);
    min_y -= pad, max_y += pad;
  } else {
    const double pad = (max_y - min_y) * 0.05;
    min_y -= pad, max_y += pad;
  }

  const int scale = std::min(width, height) >= 320 ? 2 : 1;
  const int glyph_h = kGlyphHeightPx * scale;
  const int pad = 3 * scale;
  const int tick_len = 3 * scale;
  const Axis y_axis =
      log_y ? log_axis(min_y, max_y) : linear_axis(min_y, max_y, height / (glyph_h * 5));

  int y_label_w = 0;
  for (const Tick& tick : y_axis.ticks)
    y_label_w = std::max(y_label_w, text_width_px(tick.label, scale));
  const int plot_x0 = pad + y_label_w + pad + tick_len;
  const int plot_y0 = pad + glyph_h + pad;  // room for the "loss" title
  const int plot_y1 =
      height - 1 - (tick_len + pad + glyph_h + pad + glyph_h + pad);  // ticks, labels, "step"
  const int plot_x1 = width - 1 - 4 * kGlyphAdvancePx * scale / 2;    // half a label overhangs
  const int plot_w = plot_x1 - plot_x0;
  const int plot_h = plot_y1 - plot_y0;
  const Axis x_axis =
      linear_axis(min_x, max_x, std::max(2, plot_w / (kGlyphAdvancePx * scale * 8)));

  auto px = [&](double x) {
    return plot_x0 + static_cast<int>(std::lround((x - min_x) / (max_x - min_x) * plot_w));
  };
  auto py = [&](double y) {
    return plot_y1 - static_cast<int>(std::lround((y - min_y) / (max_y - min_y) * plot_h));
  };

  RgbCanvas canvas(width, height, kLossCurveBackgroundRgb);

  // Grid, ticks and labels.
  for (const Tick& tick : y_axis.ticks) {
    const int y = py(tick.value);
    canvas.line(plot_x0 + 1, y, plot_x1, y, kGridRgb);
    canvas.line(plot_x0 - tick_len, y, plot_x0, y, kInkRgb);
    draw_text(canvas, plot_x0 - tick_len - pad - text_width_px(tick.label, scale), y - glyph_h / 2,
              tick.label, scale, kInkRgb);
  }
  for (const Tick& tick : x_axis.ticks) {
    const int x = px(tick.value);
    canvas.line(x, plot_y0, x, plot_y1 - 1, kGridRgb);
    canvas.line(x, plot_y1, x, plot_y1 + tick_len, kInkRgb);
    draw_text(canvas, x - text_width_px(tick.label, scale) / 2, plot_y1 + tick_len + pad,
              tick.label, scale, kInkRgb);
  }
  canvas.line(plot_x0, plot_y0, plot_x0, plot_y1, kInkRgb);
  canvas.line(plot_x0, plot_y1, plot_x1, plot_y1, kInkRgb);
  draw_text(canvas, pad, pad, "loss", scale, kInkRgb);
  draw_text(canvas, (plot_x0 + plot_x1 - text_width_px("step", scale)) / 2, height - pad - glyph_h,
            "step", scale, kInkRgb);

  // Curves, clipped to the plot: raw first, then a centred moving average over it (centred,
  // unlike an EMA, so the smoothed curve does not lag behind the raw one).
  canvas.set_clip(plot_x0 + 1, plot_y0, plot_x1, plot_y1 - 1);
  auto draw_curve = [&](const std::vector<Point>& curve, Rgb color, int thickness) {
    for (size_t i = 0; i < curve.size(); ++i) {
      const int x = px(curve[i].x), y = py(curve[i].y);
      if (curve[i].starts_segment) {
        canvas.line(x, y, x, y, color, thickness);
      } else {
        canvas.line(px(curve[i - 1].x), py(curve[i - 1].y), x, y, color, thickness);
      }
    }
  };
  draw_curve(points, kLossCurveRawRgb, 1);

  const size_t half_window = static_cast<size_t>(points.size() * kSmoothingWindowFraction / 2);
  std::vector<double> prefix_sum(points.size() + 1, 0.0);
  for (size_t i = 0; i < points.size(); ++i) prefix_sum[i + 1] = prefix_sum[i] + points[i].y;
  std::vector<Point> smooth = points;
  for (size_t i = 0; i < smooth.size(); ++i) {
    const size_t first = i > half_window ? i - half_window : 0;
    const size_t end = std::min(points.size(), i + half_window + 1);
    smooth[i].y = (prefix_sum[end] - prefix_sum[first]) / static_cast<double>(end - first);
    smooth[i].starts_segment = i == 0;
  }
  draw_curve(smooth, kLossCurveSmoothRgb, scale + 1);
  return canvas.release();
}

}  // namespace difftrain::monitoring
