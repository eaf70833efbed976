// Kernel interface and shared index math of bilinear upsampling (PyTorch's upsample_bilinear2d,
// output size given, no antialiasing, so downsampling reads only the two nearest rows/columns).
//
// Coordinates are computed in the tensor's dtype, as PyTorch does (its opmath type is f32 for f32),
// so the taps agree with PyTorch's bit for bit. The same output size as input gives the identity.
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

// x (n, c, h, w) -> y (n, c, p, q)
struct UpsampleShape {
  int64_t n = 0, c = 0, h = 0, w = 0;
  int64_t p = 0, q = 0;
  bool align_corners = false;
};

// Ratio of input to output coordinates, as PyTorch computes it when only the size is given.
template <class T>
SEG_HD T bilinear_scale(int64_t in, int64_t out, bool align_corners) {
  if (align_corners) return out > 1 ? static_cast<T>(in - 1) / static_cast<T>(out - 1) : T(0);
  return static_cast<T>(in) / static_cast<T>(out);
}

// The two source indices and weights of output coordinate `dst` along one axis (PyTorch's
// area_pixel_compute_source_index: align_corners maps corner centres onto corner centres, otherwise
// pixel areas onto pixel areas, clamped at 0). i1 == i0 on the last row.
template <class T>
struct BilinearTap {
  int64_t i0, i1;
  T w0, w1;
};

template <class T>
SEG_HD BilinearTap<T> bilinear_tap(int64_t dst, int64_t in, T scale, bool align_corners) {
  T src = align_corners ? scale * static_cast<T>(dst)
                        : scale * (static_cast<T>(dst) + T(0.5)) - T(0.5);
  if (src < T(0)) src = T(0);
  int64_t i0 = static_cast<int64_t>(src);
  if (i0 > in - 1) i0 = in - 1;
  int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
  T w1 = src - static_cast<T>(i0);
  return BilinearTap<T>{i0, i1, T(1) - w1, w1};
}

struct UpsampleBilinearKernels {
  // y = bilinear resize of x. Contiguous NCHW.
  void (*forward)(const ExecContext& ctx, const UpsampleShape& shape, const View& x, const View& y);
  // gx (written) = adjoint of forward applied to gy. Deterministic: no float atomics and no
  // dependence on thread order (the CPU gives each (n, c) plane to one thread).
  void (*backward)(const ExecContext& ctx, const UpsampleShape& shape, const View& gy, const View& gx);
};

}  // namespace seg
