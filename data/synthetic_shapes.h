// Random-shapes segmentation data: images of rectangles and discs on a noisy gradient background,
// with per-pixel labels 0 (background), 1 (rectangle), 2 (disc). Colours are random and shared by
// both shape kinds, so a network has to learn shape, not colour. Deterministic from the Generator.
// Used by the demo job and the end-to-end training tests; Cityscapes data lives beside it.
#pragma once

#include "engine/tensor.h"

namespace seg::data {

constexpr int64_t kShapesNumClasses = 3;

struct ShapesBatch {
  Tensor images;  // (n, 3, h, w) f32, roughly zero mean, unit scale
  Tensor labels;  // (n, h, w) i32 in {0, 1, 2}
};

ShapesBatch make_shapes_batch(int64_t n, int64_t h, int64_t w, Generator& gen);

}  // namespace seg::data
