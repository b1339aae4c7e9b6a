// RgbCanvas: a small RGB raster (HWC bytes) with clipped pixel, rectangle and line drawing, the
// drawing surface of render_loss_curve. Internal to difftrain_monitoring.
#pragma once

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

namespace difftrain::monitoring {

using Rgb = std::array<uint8_t, 3>;

// Pixels are row-major, 3 bytes each, (0,0) top left. Every drawing call clips to the canvas,
// or to the clip rectangle when one is set. Not thread-safe.
class RgbCanvas {
 public:
  RgbCanvas(int width, int height, Rgb background);

  int width() const { return width_; }
  int height() const { return height_; }
  const std::vector<uint8_t>& pixels() const { return pixels_; }
  std::vector<uint8_t> release() { return std::move(pixels_); }

  // Later drawing stays inside [x0,x1] x [y0,y1] (inclusive) until reset_clip().
  void set_clip(int x0, int y0, int x1, int y1);
  void reset_clip();

  void set(int x, int y, Rgb color);
  void fill_rect(int x0, int y0, int x1, int y1, Rgb color);  // inclusive corners
  // Bresenham line, both end points drawn; thickness 1 or more pixels (grown downwards).
  void line(int x0, int y0, int x1, int y1, Rgb color, int thickness = 1);

 private:
  int width_;
  int height_;
  int clip_x0_, clip_y0_, clip_x1_, clip_y1_;
  std::vector<uint8_t> pixels_;
};

}  // namespace difftrain::monitoring
