// A 3x5-pixel bitmap font for axis labels: digits, ". - + e k M" and the letters of "step" and
// "loss". Internal to difftrain_monitoring (render_loss_curve).
#pragma once

#include <string>

#include "monitoring/rgb_canvas.h"

namespace difftrain::monitoring {

inline constexpr int kGlyphWidthPx = 3;
inline constexpr int kGlyphHeightPx = 5;
inline constexpr int kGlyphAdvancePx = 4;  // glyph plus one column of spacing

// Width in pixels of `text` drawn at integer `scale` (no trailing spacing).
int text_width_px(const std::string& text, int scale);

// Draws `text` with its top-left corner at (x, y), each font pixel a scale x scale square.
// Characters without a glyph are drawn as a hollow box, so a missing glyph is visible.
void draw_text(RgbCanvas& canvas, int x, int y, const std::string& text, int scale, Rgb color);

}  // namespace difftrain::monitoring
