// Kernel interfaces of pooling: max pooling with saved argmax indices and adaptive average pooling.
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

// x (n, c, h, w) -> y (n, c, p, q)
struct Pool2dShape {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t p = 0, q = 0;
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
};

// PyTorch's output size for max pooling (dilation 1), floor or ceil mode.
SEG_HD int64_t pool_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, bool ceil_mode) {
  int64_t numer = in + 2 * pad - kernel + (ceil_mode ? stride - 1 : 0);
  int64_t out = numer / stride + 1;
  // the last window must start inside the input or the left padding
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

struct MaxPool2dKernels {
  // y = max over each window (padding never wins); indices (n, c, p, q) i32 = h_index * w + w_index
  // of the winner in its (h, w) plane (the first maximum; NaN propagates).
  void (*forward)(const ExecContext& ctx, const Pool2dShape& shape, const View& x, const View& y,
                  const View& indices);
  // gx (written, zeroed first) gets gy at each window's winner, summed where windows overlap.
  void (*backward)(const ExecContext& ctx, const Pool2dShape& shape, const View& gy,
                   const View& indices, const View& gx);
};

// PyTorch's adaptive pooling bins: output cell i covers [floor(i*in/out), ceil((i+1)*in/out)).
SEG_HD int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
SEG_HD int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

struct AdaptiveAvgPool2dKernels {
  // x (n, c, h, w) -> y (n, c, p, q), average over each bin. Contiguous.
  void (*forward)(const ExecContext& ctx, const Pool2dShape& shape, const View& x, const View& y);
  // gx (written) from gy.
  void (*backward)(const ExecContext& ctx, const Pool2dShape& shape, const View& gy, const View& gx);
};

}  // namespace seg
