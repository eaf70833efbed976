// Kernel interface of 2-D convolution (groups 1). conv_transpose2d uses the same kernels with the
// roles exchanged: its forward is conv2d's backward_input, its backward_input is conv2d's forward,
// its weight gradient is conv2d's backward_weight with x and gy exchanged.
//
// p and q are part of the shape, not recomputed by the kernels: a transposed convolution with an
// output_padding describes a conv whose input (h, w) is larger than the formula's inverse of (p, q)
// needs, and input positions that no output position reads get no gradient (zero, or the bias).
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

// Geometry of y = conv2d(x, w): x (n, c, h, w), weight (k, c, r, s), y (n, k, p, q).
struct Conv2dShape {
  int64_t n = 0, c = 0, h = 0, w = 0;  // input
  int64_t k = 0, r = 0, s = 0;         // output channels, kernel height and width
  int64_t p = 0, q = 0;                // output height and width
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dil_h = 1, dil_w = 1;
};

SEG_HD int64_t conv_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, int64_t dil) {
  return (in + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
}

struct Conv2dKernels {
  // y = conv(x, w) (+ bias[k] when bias is defined). All contiguous NCHW.
  void (*forward)(const ExecContext& ctx, const Conv2dShape& shape, const View& x, const View& w,
                  const View& bias, const View& y);
  // gx = d conv / d x applied to gy (written, not accumulated), plus bias[c] on every position of
  // channel c when bias (c) is defined: that is conv_transpose2d's forward with its bias.
  void (*backward_input)(const ExecContext& ctx, const Conv2dShape& shape, const View& gy,
                         const View& w, const View& bias, const View& gx);
  // gw = d conv / d w applied to gy (written).
  void (*backward_weight)(const ExecContext& ctx, const Conv2dShape& shape, const View& x,
                          const View& gy, const View& gw);
  // gb[k] = sum over n, p, q of gy (written). gy is (n, k, p, q).
  void (*backward_bias)(const ExecContext& ctx, const Conv2dShape& shape, const View& gy,
                        const View& gb);
};

}  // namespace seg
