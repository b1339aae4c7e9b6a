// RgbCanvas: clipped pixel, rectangle and Bresenham line drawing.
#include "monitoring/rgb_canvas.h"

#include <algorithm>
#include <cstdlib>

namespace difftrain::monitoring {

RgbCanvas::RgbCanvas(int width, int height, Rgb background)
    : width_(width),
      height_(height),
      clip_x0_(0),
      clip_y0_(0),
      clip_x1_(width - 1),
      clip_y1_(height - 1),
      pixels_(static_cast<size_t>(width) * height * 3) {
  for (size_t i = 0; i < pixels_.size(); i += 3) {
    std::copy(background.begin(), background.end(), pixels_.begin() + i);
  }
}

void RgbCanvas::set_clip(int x0, int y0, int x1, int y1) {
  clip_x0_ = std::max(0, x0);
  clip_y0_ = std::max(0, y0);
  clip_x1_ = std::min(width_ - 1, x1);
  clip_y1_ = std::min(height_ - 1, y1);
}

void RgbCanvas::reset_clip() { set_clip(0, 0, width_ - 1, height_ - 1); }

void RgbCanvas::set(int x, int y, Rgb color) {
  if (x < clip_x0_ || x > clip_x1_ || y < clip_y0_ || y > clip_y1_) return;
  const size_t i = (static_cast<size_t>(y) * width_ + x) * 3;
  std::copy(color.begin(), color.end(), pixels_.begin() + i);
}

void RgbCanvas::fill_rect(int x0, int y0, int x1, int y1, Rgb color) {
  for (int y = std::max(y0, clip_y0_); y <= std::min(y1, clip_y1_); ++y) {
    for (int x = std::max(x0, clip_x0_); x <= std::min(x1, clip_x1_); ++x) set(x, y, color);
  }
}

void RgbCanvas::line(int x0, int y0, int x1, int y1, Rgb color, int thickness) {
  const int dx = std::abs(x1 - x0);
  const int dy = -std::abs(y1 - y0);
  const int sx = x0 < x1 ? 1 : -1;
  const int sy = y0 < y1 ? 1 : -1;
  int error = dx + dy;
  while (true) {
    for (int t = 0; t < thickness; ++t) set(x0, y0 + t, color);
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * error;
    if (e2 >= dy) {
      error += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      error += dx;
      y0 += sy;
    }
  }
}

}  // namespace difftrain::monitoring
