// Sample images as pictures: a grid PNG of a batch, and a strip of the reverse process
// (x_T → x_0) for a few images.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace difftrain::trainer {

// images: [N,C,H,W] in [-1,1] (values outside are clipped), C = 1 or 3. Lays them out in rows of
// `columns` (0 = ceil(sqrt(N))) with a 2-pixel border, upscaled by `scale`, and writes a PNG.
void write_image_grid(const std::string& path, const at::Tensor& images, int64_t columns = 0,
                      int64_t scale = 2);

// frames: the same K images at several points of the reverse process, oldest first, each
// [K,C,H,W]. Writes one row per image, one column per frame.
void write_progression_strip(const std::string& path, const std::vector<at::Tensor>& frames,
                             int64_t scale = 2);

// [-1,1] floats → [N,H,W,C] uint8 on the CPU (what PNG rows want).
at::Tensor to_uint8_hwc(const at::Tensor& images);

}  // namespace difftrain::trainer
