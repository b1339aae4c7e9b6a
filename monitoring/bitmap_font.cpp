// The 3x5 glyph table and text drawing for render_loss_curve.
#include "monitoring/bitmap_font.h"

#include <array>

namespace difftrain::monitoring {
namespace {

struct Glyph {
  char character;
  std::array<const char*, kGlyphHeightPx> rows;  // '#' = ink
};

constexpr Glyph kGlyphs[] = {
    {'0', {"###", "#.#", "#.#", "#.#", "###"}}, {'1', {".#.", "##.", ".#.", ".#.", "###"}},
    {'2', {"###", "..#", "###", "#..", "###"}}, {'3', {"###", "..#", "###", "..#", "###"}},
    {'4', {"#.#", "#.#", "###", "..#", "..#"}}, {'5', {"###", "#..", "###", "..#", "###"}},
    {'6', {"###", "#..", "###", "#.#", "###"}}, {'7', {"###", "..#", "..#", ".#.", ".#."}},
    {'8', {"###", "#.#", "###", "#.#", "###"}}, {'9', {"###", "#.#", "###", "..#", "###"}},
    {'.', {"...", "...", "...", "...", ".#."}}, {'-', {"...", "...", "###", "...", "..."}},
    {'+', {"...", ".#.", "###", ".#.", "..."}}, {'e', {".#.", "#.#", "###", "#..", ".##"}},
    {'k', {"#..", "#.#", "##.", "#.#", "#.#"}}, {'M', {"#.#", "###", "###", "#.#", "#.#"}},
    {'s', {".##", "#..", ".#.", "..#", "##."}}, {'t', {".#.", "###", ".#.", ".#.", ".##"}},
    {'p', {"##.", "#.#", "##.", "#..", "#.."}}, {'l', {"#..", "#..", "#..", "#..", ".##"}},
    {'o', {"...", ".#.", "#.#", "#.#", ".#."}}, {' ', {"...", "...", "...", "...", "..."}},
};

constexpr std::array<const char*, kGlyphHeightPx> kMissingGlyph = {"###", "#.#", "#.#", "#.#",
                                                                   "###"};

const std::array<const char*, kGlyphHeightPx>& glyph_rows(char c) {
  for (const Glyph& glyph : kGlyphs) {
    if (glyph.character == c) return glyph.rows;
  }
  return kMissingGlyph;
}

}  // namespace

int text_width_px(const std::string& text, int scale) {
  if (text.empty()) return 0;
  return (static_cast<int>(text.size()) * kGlyphAdvancePx - 1) * scale;
}

void draw_text(RgbCanvas& canvas, int x, int y, const std::string& text, int scale, Rgb color) {
  for (size_t i = 0; i < text.size(); ++i) {
    const auto& rows = glyph_rows(text[i]);
    const int left = x + static_cast<int>(i) * kGlyphAdvancePx * scale;
    for (int row = 0; row < kGlyphHeightPx; ++row) {
      for (int col = 0; col < kGlyphWidthPx; ++col) {
        if (rows[row][col] != '#') continue;
        canvas.fill_rect(left + col * scale, y + row * scale, left + (col + 1) * scale - 1,
                         y + (row + 1) * scale - 1, color);
      }
    }
  }
}

}  // namespace difftrain::monitoring
