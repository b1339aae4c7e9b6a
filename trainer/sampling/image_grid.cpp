// Grid and strip layout of sample images, written with the data library's PNG writer.
#include "trainer/sampling/image_grid.h"

#include <ATen/ATen.h>

#include <cmath>
#include <stdexcept>

#include "data/png_io.h"

namespace difftrain::trainer {
namespace {

constexpr int64_t kBorder = 2;

// Places tile (row, col) images of `tiles` ([rows*cols,H,W,C] uint8) into one canvas.
at::Tensor tile(const at::Tensor& tiles, int64_t rows, int64_t cols) {
  const int64_t h = tiles.size(1), w = tiles.size(2), c = tiles.size(3);
  at::Tensor canvas =
      at::full({rows * (h + kBorder) + kBorder, cols * (w + kBorder) + kBorder, c}, 255, at::kByte);
  for (int64_t i = 0; i < tiles.size(0); ++i) {
    const int64_t r = i / cols, col = i % cols;
    canvas.narrow(0, kBorder + r * (h + kBorder), h)
        .narrow(1, kBorder + col * (w + kBorder), w)
        .copy_(tiles[i]);
  }
  return canvas;
}

at::Tensor upscale(const at::Tensor& images_nchw, int64_t scale) {
  if (scale <= 1) return images_nchw;
  return images_nchw.repeat_interleave(scale, 2).repeat_interleave(scale, 3);
}

void write(const std::string& path, const at::Tensor& canvas) {
  at::Tensor c = canvas.contiguous();
  data::write_png(path, c.data_ptr<uint8_t>(), c.size(0), c.size(1), c.size(2));
}

void check_images(const at::Tensor& images) {
  if (images.dim() != 4 || (images.size(1) != 1 && images.size(1) != 3) || images.size(0) < 1) {
    throw std::runtime_error("image grid: want [N,1|3,H,W] images, got " +
                             std::to_string(images.dim()) + "-d tensor");
  }
}

}  // namespace

at::Tensor to_uint8_hwc(const at::Tensor& images) {
  return images.detach()
      .to(at::kCPU, at::kFloat)
      .clamp(-1, 1)
      .add(1)
      .mul(127.5)
      .round()
      .to(at::kByte)
      .permute({0, 2, 3, 1})
      .contiguous();
}

void write_image_grid(const std::string& path, const at::Tensor& images, int64_t columns,
                      int64_t scale) {
  check_images(images);
  const int64_t n = images.size(0);
  const int64_t cols =
      columns > 0 ? columns : static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t rows = (n + cols - 1) / cols;
  write(path, tile(to_uint8_hwc(upscale(images.to(at::kCPU, at::kFloat), scale)), rows, cols));
}

void write_progression_strip(const std::string& path, const std::vector<at::Tensor>& frames,
                             int64_t scale) {
  if (frames.empty()) throw std::runtime_error("progression strip: no frames");
  for (const auto& f : frames) check_images(f);
  const int64_t k = frames.front().size(0);
  const int64_t cols = static_cast<int64_t>(frames.size());
  // Row-major tiles: image i at frame j goes to tile i*cols + j.
  at::Tensor stacked = at::stack(frames, 1).flatten(0, 1);
  write(path, tile(to_uint8_hwc(upscale(stacked.to(at::kCPU, at::kFloat), scale)), k, cols));
}

}  // namespace difftrain::trainer
