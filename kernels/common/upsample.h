// Kernel interface and shared index math of bilinear upsampling (PyTorch's upsample_bilinear2d,
// output size given, no antialiasing, so downsampling reads only the two nearest rows/columns).
//
// Coordinates are computed in the tensor's dtype, as PyTorch does (its opmath type is f32 for f32),
// so the taps agree with PyTorch's bit for bit. The same output size as input gives the identity.
//
// Bit-exact across backends: the source coordinate and every two-tap blend are written with an
// explicit fused multiply-add (bilinear_fma), so the host compiler's and nvcc's freedom to contract
// a * b + c differently cannot make the CPU and CUDA kernels disagree in the last bit. The blend
// fma(w0, v0, w1 * v1) is also what GCC makes of the CPU kernel's w0 * v0 + w1 * v1 at -O3 with FMA
// (checked in tests/test_metrics.cpp: the on-the-fly path of the confusion matrix, which uses
// bilinear_blend, reproduces upsample_bilinear2d + argmax exactly).
//
// The backward kernels gather: for input index k along one axis, the outputs that read it through
// their first tap (i0 == k) form a contiguous range, and so do those that read it through their
// second tap (i1 == k), because every step of bilinear_tap is monotone in the output index
// (bilinear_first_reader finds the range ends by bisection with the exact tap math).
#pragma once

#include <cmath>
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

// a * b + c with one rounding, the same on the host and the device.
template <class T>
SEG_HD T bilinear_fma(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) {
    return __fmaf_rn(a, b, c);
  } else {
    return __fma_rn(a, b, c);
  }
#else
  return std::fma(a, b, c);
#endif
}

// w0 * v0 + w1 * v1 as fma(w0, v0, w1 * v1).
template <class T>
SEG_HD T bilinear_blend(T w0, T v0, T w1, T v1) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) {
    return __fmaf_rn(w0, v0, __fmul_rn(w1, v1));  // _rn: never contracted further
  } else {
    return __fma_rn(w0, v0, __dmul_rn(w1, v1));
  }
#else
  return std::fma(w0, v0, w1 * v1);
#endif
}

template <class T>
SEG_HD BilinearTap<T> bilinear_tap(int64_t dst, int64_t in, T scale, bool align_corners) {
  T src = align_corners ? scale * static_cast<T>(dst)
                        : bilinear_fma(scale, static_cast<T>(dst) + T(0.5), T(-0.5));
  if (src < T(0)) src = T(0);
  int64_t i0 = static_cast<int64_t>(src);
  if (i0 > in - 1) i0 = in - 1;
  int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
  T w1 = src - static_cast<T>(i0);
  return BilinearTap<T>{i0, i1, T(1) - w1, w1};
}

// The first output index o in [0, out) whose tap along one axis has i0 >= k (second = false) or
// i1 >= k (second = true); `out` when there is none. The outputs that read input k through i0 are
// [first(k, false), first(k + 1, false)), through i1 [first(k, true), first(k + 1, true)).
template <class T>
SEG_HD int64_t bilinear_first_reader(int64_t k, bool second, int64_t in, int64_t out, T scale,
                                     bool align_corners) {
  int64_t lo = 0, hi = out;  // the answer lies in [lo, hi]
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    const BilinearTap<T> t = bilinear_tap<T>(mid, in, scale, align_corners);
    if ((second ? t.i1 : t.i0) >= k) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

struct UpsampleBilinearKernels {
  // y = bilinear resize of x. Contiguous NCHW.
  void (*forward)(const ExecContext& ctx, const UpsampleShape& shape, const View& x, const View& y);
  // gx (written) = adjoint of forward applied to gy. Deterministic: no float atomics and no
  // dependence on thread order (the CPU gives each (n, c) plane to one thread).
  void (*backward)(const ExecContext& ctx, const UpsampleShape& shape, const View& gy, const View& gx);
};

}  // namespace seg
