// Kernel interface of the segmentation metric: argmax over the class logits and the confusion
// matrix in one pass, optionally upsampling low-resolution logits to the label size on the fly
// (bilinear, the same sampling as upsample_bilinear2d, bit for bit: taps from bilinear_tap and
// values from bilinear_blend in kernels/common/upsample.h), so full-resolution evaluation never
// materialises full-resolution logits.
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

struct ConfusionShape {
  int64_t n = 0, c = 0;         // images, classes
  int64_t h = 0, w = 0;         // logits' spatial size
  int64_t label_h = 0, label_w = 0;
  int64_t ignore_index = 255;
  bool align_corners = false;   // of the on-the-fly upsampling (when sizes differ)
};

// The argmax rule of both backends (that of the argmax op): v replaces the best so far when it is
// larger, or NaN while the best is not (so ties keep the first class and the first NaN wins).
template <class T>
SEG_HD bool argmax_replaces(T v, T best) {
  return !(v <= best) && !(best != best);
}

struct ConfusionKernels {
  // confusion (c, c) i64, row = ground truth, column = prediction: += one count per labelled pixel.
  // logits (n, c, h, w) f32/f64 contiguous; labels (n, label_h, label_w) i32. The prediction is the
  // first class of largest (upsampled) logit. Pixels labelled ignore_index are skipped; labels
  // outside [0, c) are skipped and counted in bad_count (i32 scalar, zeroed by the caller).
  void (*accumulate)(const ExecContext& ctx, const ConfusionShape& shape, const View& logits,
                     const View& labels, const View& confusion, const View& bad_count);
};

}  // namespace seg
