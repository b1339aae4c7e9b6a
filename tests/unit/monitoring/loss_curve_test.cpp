// render_loss_curve: image size, curves drawn where the data says, axes without data.
#include "monitoring/loss_curve.h"

#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <utility>
#include <vector>

namespace difftrain::monitoring {
namespace {

using Curve = std::vector<std::pair<double, double>>;

struct PixelStats {
  int count = 0;
  int min_row = 1 << 30, max_row = -1;
  double mean_row_left = 0, mean_row_right = 0;  // of the pixels in the left / right third
};

PixelStats find_color(const std::vector<uint8_t>& image, int width, int height,
                      std::array<uint8_t, 3> color) {
  PixelStats stats;
  int left = 0, right = 0;
  for (int y = 0; y < height; ++y) {
    for (int x = 0; x < width; ++x) {
      const size_t i = (static_cast<size_t>(y) * width + x) * 3;
      if (image[i] != color[0] || image[i + 1] != color[1] || image[i + 2] != color[2]) continue;
      ++stats.count;
      stats.min_row = std::min(stats.min_row, y);
      stats.max_row = std::max(stats.max_row, y);
      if (x < width / 3) stats.mean_row_left += y, ++left;
      if (x > 2 * width / 3) stats.mean_row_right += y, ++right;
    }
  }
  if (left) stats.mean_row_left /= left;
  if (right) stats.mean_row_right /= right;
  return stats;
}

// A noisy decaying loss from 1.0 down to ~0.03: spans more than a decade.
Curve decaying_curve(int n) {
  Curve curve;
  for (int i = 0; i < n; ++i) {
    const double noise = 1.0 + 0.3 * std::sin(i * 1.7);
    curve.emplace_back(i * 10.0, noise * std::exp(-3.5 * i / n));
  }
  return curve;
}

TEST(RenderLossCurve, ReturnsWidthTimesHeightRgbBytes) {
  EXPECT_EQ(render_loss_curve(decaying_curve(100), 640, 480).size(), 640u * 480u * 3u);
  EXPECT_EQ(
      render_loss_curve(decaying_curve(100), kLossCurveMinWidthPx, kLossCurveMinHeightPx).size(),
      static_cast<size_t>(kLossCurveMinWidthPx) * kLossCurveMinHeightPx * 3);
}

TEST(RenderLossCurve, DrawsRawAndSmoothedCurvesFallingLeftToRight) {
  const int w = 640, h = 480;
  const auto image = render_loss_curve(decaying_curve(2000), w, h);
  const PixelStats raw = find_color(image, w, h, kLossCurveRawRgb);
  const PixelStats smooth = find_color(image, w, h, kLossCurveSmoothRgb);
  EXPECT_GT(raw.count, 200);
  EXPECT_GT(smooth.count, 400);  // a thick line across most of the width
  // Rows grow downwards: a falling loss sits high on the left and low on the right.
  EXPECT_LT(smooth.mean_row_left + 100, smooth.mean_row_right);
  // The noise spreads the raw curve vertically more than the smoothed one.
  EXPECT_GT(raw.max_row - raw.min_row, smooth.max_row - smooth.min_row);
}

TEST(RenderLossCurve, ConstantLossIsAFlatLine) {
  const int w = 320, h = 240;
  Curve flat;
  for (int i = 0; i < 50; ++i) flat.emplace_back(i, 0.7);
  const PixelStats smooth = find_color(render_loss_curve(flat, w, h), w, h, kLossCurveSmoothRgb);
  EXPECT_GT(smooth.count, 100);
  EXPECT_LE(smooth.max_row - smooth.min_row, 3);  // line thickness only
}

TEST(RenderLossCurve, ImageDependsOnTheData) {
  Curve up;
  for (int i = 0; i < 100; ++i) up.emplace_back(i, 0.1 + 0.01 * i);
  const auto a = render_loss_curve(decaying_curve(100), 320, 240);
  const auto b = render_loss_curve(up, 320, 240);
  EXPECT_NE(a, b);
  const PixelStats rising = find_color(b, 320, 240, kLossCurveSmoothRgb);
  EXPECT_GT(rising.mean_row_left, rising.mean_row_right);
}

TEST(RenderLossCurve, EmptyInputGivesAxesButNoCurve) {
  const int w = 200, h = 150;
  const auto image = render_loss_curve({}, w, h);
  EXPECT_EQ(find_color(image, w, h, kLossCurveRawRgb).count, 0);
  EXPECT_EQ(find_color(image, w, h, kLossCurveSmoothRgb).count, 0);
  int ink = 0;
  for (size_t i = 0; i < image.size(); i += 3) ink += image[i] < 100;
  EXPECT_GT(ink, 100) << "axes and tick labels";
}

TEST(RenderLossCurve, SurvivesNonFiniteAndUnsortedPoints) {
  Curve curve = {{5, 0.5}, {1, 1.0}, {3, NAN}, {NAN, 0.2}, {4, INFINITY}, {2, 0.8}, {6, 0.4}};
  const auto image = render_loss_curve(curve, 200, 150);
  EXPECT_GT(find_color(image, 200, 150, kLossCurveSmoothRgb).count, 20);
  const auto single = render_loss_curve({{10, 0.3}}, 200, 150);
  EXPECT_GT(find_color(single, 200, 150, kLossCurveSmoothRgb).count, 0);
}

TEST(RenderLossCurve, RejectsTinyImages) {
  try {
    render_loss_curve({}, 50, 40);
    FAIL() << "50x40 accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "loss curve 50x40 pixels: want at least 96x64");
  }
}

}  // namespace
}  // namespace difftrain::monitoring
