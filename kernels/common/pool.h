// Kernel interfaces of pooling: max pooling with saved argmax indices and adaptive average pooling,
// and the index math both backends share (PyTorch's rules, dilation 1).
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

// PyTorch's output size for max pooling (dilation 1), floor or ceil mode. The division rounds
// towards minus infinity (PyTorch's div_rtn), so an input smaller than the kernel gives a size <= 0,
// which the front-end rejects.
SEG_HD int64_t pool_out_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, bool ceil_mode) {
  int64_t numer = in + 2 * pad - kernel + (ceil_mode ? stride - 1 : 0);
  int64_t q = numer / stride;
  if (numer % stride != 0 && numer < 0) --q;
  int64_t out = q + 1;
  // the last window must start inside the input or the left padding
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;
  return out;
}

// The input rows [begin, end) that output row `o` of a max pool covers: padding is never part of a
// window (it never wins). With pad <= kernel / 2 and PyTorch's output size every window is non-empty.
struct PoolWindow {
  int64_t begin, end;
};
SEG_HD PoolWindow pool_window(int64_t o, int64_t in, int64_t kernel, int64_t stride, int64_t pad) {
  int64_t begin = o * stride - pad;
  int64_t end = begin + kernel;
  if (begin < 0) begin = 0;
  if (end > in) end = in;
  return PoolWindow{begin, end};
}

// The inverse of pool_window: the outputs [begin, end) whose windows contain input row `i` (used by
// the gather backward of the CUDA kernels). Window o covers [o * stride - pad, o * stride - pad +
// kernel), so it contains i when (i + pad - kernel) / stride < o <= (i + pad) / stride.
// I is the index type (int32_t where the caller knows the values fit: cheaper divisions on a GPU).
template <class I>
SEG_HD PoolWindow pool_windows_containing(I i, I out, I kernel, I stride, I pad) {
  const I below = i + pad - kernel;  // o * stride must exceed this
  const I begin = below < 0 ? I(0) : below / stride + 1;
  I end = (i + pad) / stride + 1;
  if (end > out) end = out;
  return PoolWindow{begin, end};
}

// Max-pool comparison, PyTorch's: a larger value or any NaN replaces the current winner. Ties keep
// the first maximum; NaN propagates (the last NaN of a window is the winner).
template <class T>
SEG_HD bool pool_max_replaces(T v, T best) {
  return v > best || v != v;
}

struct MaxPool2dKernels {
  // y = max over each window (padding never wins); indices (n, c, p, q) i32 = h_index * w + w_index
  // of the winner in its (h, w) plane (see pool_max_replaces). Contiguous NCHW.
  void (*forward)(const ExecContext& ctx, const Pool2dShape& shape, const View& x, const View& y,
                  const View& indices);
  // gx (written, zeroed first) gets gy at each window's winner, summed where windows overlap.
  // Deterministic: every element of gx sums its windows in increasing output order (the CPU gives
  // each (n, c) plane to one thread; the CUDA kernel gathers per input element, no atomics).
  void (*backward)(const ExecContext& ctx, const Pool2dShape& shape, const View& gy,
                   const View& indices, const View& gx);
};

// PyTorch's adaptive pooling bins: output cell i covers [floor(i*in/out), ceil((i+1)*in/out)).
SEG_HD int64_t adaptive_start(int64_t i, int64_t in, int64_t out) { return (i * in) / out; }
SEG_HD int64_t adaptive_end(int64_t i, int64_t in, int64_t out) {
  return ((i + 1) * in + out - 1) / out;
}

// The inverse of the adaptive bins: the output cells [begin, end) whose bins contain input index i,
// [floor(i * out / in), ceil((i + 1) * out / in)) (the forward formula with in and out swapped).
SEG_HD PoolWindow adaptive_bins_containing(int64_t i, int64_t in, int64_t out) {
  return PoolWindow{adaptive_start(i, out, in), adaptive_end(i, out, in)};
}

struct AdaptiveAvgPool2dKernels {
  // x (n, c, h, w) -> y (n, c, p, q), average over each bin (kernel/stride/pad fields unused).
  // Contiguous.
  void (*forward)(const ExecContext& ctx, const Pool2dShape& shape, const View& x, const View& y);
  // gx (written) from gy: each bin's gradient divided evenly over its cells, summed where bins
  // overlap (output larger than input), in increasing output order. Deterministic.
  void (*backward)(const ExecContext& ctx, const Pool2dShape& shape, const View& gy, const View& gx);
};

}  // namespace seg
