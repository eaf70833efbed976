// CPU 2-D convolution (groups 1) as GEMMs, one image at a time.
//
// Design notes
// - Stride-1 convolutions in f32 (UNet's and the ASPP's 3x3s, dilated or not) run over a
//   zero-padded copy of the input (see "stride-1 convolutions over a zero-padded input" below):
//     forward          y_n = W (k, c*r*s) @ columns of the padded x_n, read in place, + bias
//     backward_input   gx_n = the forward of gy_n with W rotated by 180 degrees and c, k exchanged
//                      (when the weight is small beside the activations; else as below)
//     backward_weight  gW^T (c*r*s, k) = columns of the padded x_n @ gy_n^T, summed, transposed
//   No column matrix is materialised: the GEMM reads the padded image's rows through pointers.
// - Other convolutions (strides, f64 for the gradient checks), per image n and chunk of output
//   rows [p0, p1):
//     forward          col (c*r*s, rows*q) = im2col(x_n);  y_n[:, rows] = W (k, c*r*s) @ col
//     backward_input   gcol = W^T @ gy_n[:, rows];         gx_n += col2im(gcol)
//     backward_weight  col = im2col(x_n);                  gW += gy_n[:, rows] @ col^T
//   The column buffer is allocated once per call and reused for every image and chunk; chunks of
//   output rows keep it under kColumnBudgetBytes (a 3x3, 64-channel conv on a 512x1024 image would
//   otherwise need 1.2 GB per image) while leaving the GEMM thousands of columns to work on.
// - A 1x1 conv with stride 1 and no padding needs no im2col: its input image already is the column
//   matrix, so the GEMMs read x and write gx directly.
// - f32 GEMMs are our own (kernels/cpu/sgemm.h: AVX-512 or AVX2 micro-kernels chosen by the CPU's
//   features, so OPENBLAS_CORETYPE does not slow them); f64 GEMMs are OpenBLAS's.
// - Threads: the GEMMs run outside OpenMP regions and use the OpenMP threads themselves (ours) or
//   OpenBLAS's. Padding, im2col, col2im and the bias loops use OpenMP (parallel_for) only when
//   OpenBLAS itself is built on OpenMP, so that one thread pool serves both. With the pthread
//   build of OpenBLAS (Debian's default), its worker threads keep spinning for ~0.1 s after each
//   GEMM and an OpenMP region between two GEMMs fights them for the cores: measured on 2 cores,
//   conv steps ran 2-6x slower than with these loops on the calling thread; with the OpenMP
//   build, parallel loops are 20-25% faster than serial ones.
// - Nothing races: im2col and padding write disjoint rows, col2im gives each thread whole channels
//   of gx (a channel only receives from its own column rows), the weight gradient sums images and
//   chunks in a fixed order through the GEMM's beta, and the bias gradient gives each thread whole
//   channels; our GEMM sums every output in a fixed order. f32 results do not depend on the
//   thread count.
// - The bias is written into y's chunk just before its GEMM, which then runs with beta = 1: that
//   costs nothing, since the chunk is still in cache when the GEMM adds to it. Likewise col2im
//   sets each row of gx (to the bias of a transposed conv, or zero) just before the first chunk
//   that adds to it. The padded path adds the bias in the GEMM's epilogue.
// - Kernels use the p and q of the shape (not the formula): conv_transpose2d with output_padding
//   describes an input larger than the outputs cover; uncovered input positions get zero gradient
//   (such shapes take the column-matrix path).
#include <cblas.h>

#include <algorithm>
#include <climits>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"
#include "kernels/cpu/sgemm.h"

namespace seg::cpu {
namespace {

// Column buffer limit: 8 MiB keeps im2col's output (and the chunk of y or gx next to it) in the
// last-level cache for the GEMM that reads it back, and still gives the GEMM thousands of columns
// (3584 for a 3x3, 64-channel conv at any width). Measured on the benchmark's shapes: 4 to 16 MiB
// within noise of each other, 2 MiB 5-15% slower, whole images (no chunks) slower for large images.
constexpr int64_t kColumnBudgetBytes = int64_t{8} << 20;

// f32: our own GEMM (kernels/cpu/sgemm.h), whatever kernels OpenBLAS would pick; f64 (gradient
// checks): OpenBLAS.
inline void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha,
                      const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                      float* c, int64_t ldc) {
  sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

inline void blas_gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, double alpha,
                      const double* a, int64_t lda, const double* b, int64_t ldb, double beta,
                      double* c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), alpha, a,
              static_cast<int>(lda), b, static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
}

// True when OpenBLAS runs its threads on OpenMP (openblas_get_parallel: 0 sequential, 1 pthreads,
// 2 OpenMP): then our loops may use OpenMP too without oversubscribing the cores (design notes).
bool loops_in_parallel() {
  return openblas_get_parallel() == 2;
}

// parallel_for when `parallel`, else one call on the calling thread.
template <class F>
void loop(bool parallel, int64_t n, int64_t grain, F&& body) {
  if (parallel) {
    parallel_for(n, grain, body);
  } else if (n > 0) {
    body(int64_t{0}, n);
  }
}

// Every GEMM dimension and leading dimension below is bounded by one of these products.
void check_blas_range(const Conv2dShape& s, const char* kernel) {
  const int64_t limits[] = {s.k, s.c * s.r * s.s, s.h * s.w, s.p * s.q};
  for (int64_t v : limits) {
    if (v > INT_MAX) {
      throw std::invalid_argument(std::string(kernel) + ": a GEMM dimension (" + std::to_string(v) +
                                  ") exceeds the range of a BLAS int");
    }
  }
}

bool is_pointwise(const Conv2dShape& s) {
  return s.r == 1 && s.s == 1 && s.stride_h == 1 && s.stride_w == 1 && s.pad_h == 0 &&
         s.pad_w == 0 && s.p == s.h && s.q == s.w;
}

// Output rows per chunk so that the column buffer (c*r*s, rows*q) stays within the budget.
int64_t chunk_rows(const Conv2dShape& s, size_t elem_size) {
  const int64_t row_bytes = s.c * s.r * s.s * s.q * static_cast<int64_t>(elem_size);
  return std::clamp<int64_t>(kColumnBudgetBytes / std::max<int64_t>(row_bytes, 1), 1, s.p);
}

// Uninitialised scratch (std::vector would clear it first).
template <class T>
std::unique_ptr<T[]> scratch(int64_t n) {
  return std::unique_ptr<T[]>(new T[static_cast<size_t>(std::max<int64_t>(n, 1))]);
}

// Output columns pw in [lo, hi) read input column pw * stride + off inside [0, w).
struct ColRange {
  int64_t lo, hi;
};
inline ColRange valid_cols(int64_t off, int64_t stride, int64_t w, int64_t q) {
  const int64_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
  const int64_t hi = w - off > 0 ? (w - off + stride - 1) / stride : 0;
  const int64_t clo = std::min(lo, q);
  return {clo, std::clamp(hi, clo, q)};
}

// col (c*r*s, (p1-p0)*q) from one image x (c, h, w), output rows [p0, p1).
template <class T>
void im2col(bool par, const T* x, const Conv2dShape& s, int64_t p0, int64_t p1, T* col) {
  const int64_t rows = s.c * s.r * s.s, cols = (p1 - p0) * s.q;
  loop(par, rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)),
       [&](int64_t begin, int64_t end) {
         for (int64_t row = begin; row < end; ++row) {
           const int64_t ci = row / (s.r * s.s), ki = (row / s.s) % s.r, kj = row % s.s;
           const T* xc = x + ci * s.h * s.w;
           T* dst = col + row * cols;
           const int64_t off_w = kj * s.dil_w - s.pad_w;
           const ColRange cr = valid_cols(off_w, s.stride_w, s.w, s.q);
           for (int64_t ph = p0; ph < p1; ++ph, dst += s.q) {
             const int64_t ih = ph * s.stride_h - s.pad_h + ki * s.dil_h;
             if (ih < 0 || ih >= s.h) {
               std::fill(dst, dst + s.q, T(0));
               continue;
             }
             const T* xrow = xc + ih * s.w;
             std::fill(dst, dst + cr.lo, T(0));
             if (s.stride_w == 1) {
               std::copy(xrow + cr.lo + off_w, xrow + cr.hi + off_w, dst + cr.lo);
             } else {
               for (int64_t pw = cr.lo; pw < cr.hi; ++pw) dst[pw] = xrow[pw * s.stride_w + off_w];
             }
             std::fill(dst + cr.hi, dst + s.q, T(0));
           }
         }
       });
}

// gx (c, h, w) of one image += col2im(gcol) for output rows [p0, p1). Rows [init_lo, init_hi) of
// each channel are first set to bias[c] (or 0): the caller initialises each row of gx just before
// the first chunk that adds to it, so that the rows are still in cache when the chunk adds to them.
template <class T>
void col2im(bool par, const T* gcol, const Conv2dShape& s, int64_t p0, int64_t p1, T* gx,
            int64_t init_lo, int64_t init_hi, const T* bias) {
  const int64_t cols = (p1 - p0) * s.q, hw = s.h * s.w;
  const int64_t per_channel = s.r * s.s * cols;
  loop(par, s.c, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(per_channel, 1)),
       [&](int64_t begin, int64_t end) {
         for (int64_t ci = begin; ci < end; ++ci) {
           T* g = gx + ci * hw;
           std::fill(g + init_lo * s.w, g + init_hi * s.w, bias ? bias[ci] : T(0));
           for (int64_t ki = 0; ki < s.r; ++ki) {
             for (int64_t kj = 0; kj < s.s; ++kj) {
               const T* src = gcol + ((ci * s.r + ki) * s.s + kj) * cols;
               const int64_t off_w = kj * s.dil_w - s.pad_w;
               const ColRange cr = valid_cols(off_w, s.stride_w, s.w, s.q);
               for (int64_t ph = p0; ph < p1; ++ph, src += s.q) {
                 const int64_t ih = ph * s.stride_h - s.pad_h + ki * s.dil_h;
                 if (ih < 0 || ih >= s.h) continue;
                 T* grow = g + ih * s.w;
                 if (s.stride_w == 1) {
                   // cr.lo + off_w >= 0: the pointer stays inside the row
                   T* out = grow + cr.lo + off_w;
                   const T* in = src + cr.lo;
                   for (int64_t j = 0; j < cr.hi - cr.lo; ++j) out[j] += in[j];
                 } else {
                   for (int64_t pw = cr.lo; pw < cr.hi; ++pw)
                     grow[pw * s.stride_w + off_w] += src[pw];
                 }
               }
             }
           }
         }
       });
}

// out (rows, cols) with row stride ld = value[row] (or 0 when value is null).
template <class T>
void fill_rows(bool par, T* out, int64_t rows, int64_t cols, int64_t ld, const T* value) {
  loop(par, rows, std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(cols, 1)),
       [&](int64_t begin, int64_t end) {
         for (int64_t i = begin; i < end; ++i)
           std::fill(out + i * ld, out + i * ld + cols, value ? value[i] : T(0));
       });
}

// ---- stride-1 convolutions over a zero-padded input (f32) ----
//
// With stride 1, row (ci, ki, kj) of the column matrix is, on an output grid as wide as the padded
// input (wp = w + 2 pad_w; the last wp - q columns of each grid row are not outputs), one
// contiguous run of the zero-padded image: xp[ci] + ki * dil_h * wp + kj * dil_w. The GEMMs read
// that operand in place through row pointers (GemmOperand::row_pointers; the forward skips the
// non-output columns through the operand's segments, the weight gradient multiplies them by
// zeros): no column matrix is written and read back, and no edge cases remain in the inner loops.
// Work goes in chunks of output rows whose padded input (and gy copy) fit kPaddedBudgetBytes.

constexpr int64_t kPaddedBudgetBytes = int64_t{16} << 20;

// Whether s is a stride-1 convolution whose output is the full (h + 2 pad - dil * (r - 1)) x
// (w + ...) grid (a transposed convolution with output padding describes a smaller one).
bool padded_path_applies(const Conv2dShape& s) {
  return s.stride_h == 1 && s.stride_w == 1 && s.p == s.h + 2 * s.pad_h - s.dil_h * (s.r - 1) &&
         s.q == s.w + 2 * s.pad_w - s.dil_w * (s.s - 1) && s.p > 0 && s.q > 0;
}

// The chunk geometry of a padded-path convolution with `grid_channels` rows of a result on the
// padded-width grid (the weight gradient's gy copy; 0 for the forward, which writes y directly).
struct PaddedPlan {
  int64_t wp, halo, rows;  // grid width, extra input rows per chunk, output rows per chunk
  int64_t slack;           // zero floats after the padded input: the last row pointers' overrun
};

PaddedPlan padded_plan(const Conv2dShape& s, int64_t grid_channels) {
  PaddedPlan pl;
  pl.wp = s.w + 2 * s.pad_w;
  pl.halo = s.dil_h * (s.r - 1);
  pl.slack = s.dil_w * (s.s - 1);
  const int64_t per_row = (s.c + grid_channels) * pl.wp * static_cast<int64_t>(sizeof(float));
  const int64_t fixed = s.c * pl.halo * pl.wp * static_cast<int64_t>(sizeof(float));
  pl.rows =
      std::clamp<int64_t>((kPaddedBudgetBytes - fixed) / std::max<int64_t>(per_row, 1), 1, s.p);
  return pl;
}

// xp (c, r1 - r0, wp) = input rows [r0, r1) of one image x (c, h, w) (rows outside [0, h) zero),
// each with pad_w zero columns in front and wp - w - pad_w behind.
void pad_rows(bool par, const float* x, const Conv2dShape& s, int64_t r0, int64_t r1, int64_t wp,
              float* xp) {
  const int64_t hc = r1 - r0;
  loop(par, s.c * hc, std::max<int64_t>(1, kParallelGrain / wp), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t ci = t / hc, ih = r0 + t % hc;
      float* dst = xp + t * wp;
      if (ih < 0 || ih >= s.h) {
        std::fill(dst, dst + wp, 0.0f);
        continue;
      }
      const float* src = x + (ci * s.h + ih) * s.w;
      std::fill(dst, dst + s.pad_w, 0.0f);
      std::copy(src, src + s.w, dst + s.pad_w);
      std::fill(dst + s.pad_w + s.w, dst + wp, 0.0f);
    }
  });
}

// Row pointers of the column matrix over the padded chunk xp (c, hc, wp): row (ci, ki, kj).
void column_rows(const Conv2dShape& s, const float* xp, int64_t hc, int64_t wp,
                 const float** rows) {
  for (int64_t ci = 0; ci < s.c; ++ci) {
    for (int64_t ki = 0; ki < s.r; ++ki) {
      for (int64_t kj = 0; kj < s.s; ++kj) {
        *rows++ = xp + (ci * hc + ki * s.dil_h) * wp + kj * s.dil_w;
      }
    }
  }
}

// y = conv(x, w) + bias, stride 1, over the padded input (padded_path_applies(s)): the GEMM reads
// the column matrix's rows in place, in segments of q columns (one output row each, skipping the
// padded row's last wp - q columns), and writes y directly with the bias added.
void padded_forward(const Conv2dShape& s, const float* x, const float* w, const float* bias,
                    float* y) {
  const bool par = loops_in_parallel();
  const PaddedPlan pl = padded_plan(s, 0);
  const int64_t chw = s.c * s.h * s.w, pq = s.p * s.q, crs = s.c * s.r * s.s;
  auto xp = scratch<float>(s.c * (pl.rows + pl.halo) * pl.wp);  // (c, rows + halo, wp)
  auto rows = std::make_unique<const float*[]>(static_cast<size_t>(crs));
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t p0 = 0; p0 < s.p; p0 += pl.rows) {
      const int64_t p1 = std::min(s.p, p0 + pl.rows), hc = p1 - p0 + pl.halo;
      pad_rows(par, x + i * chw, s, p0 - s.pad_h, p0 - s.pad_h + hc, pl.wp, xp.get());
      column_rows(s, xp.get(), hc, pl.wp, rows.get());
      // y_i[:, rows p0..p1) (k, (p1-p0)*q) = W (k, c*r*s) @ columns (c*r*s, (p1-p0)*q) + bias
      sgemm_ex(s.k, (p1 - p0) * s.q, crs, 1.0f, GemmOperand::matrix(w, crs),
               GemmOperand::row_pointers(rows.get(), s.q, pl.wp - s.q), 0.0f,
               y + i * s.k * pq + p0 * s.q, pq, bias);
    }
  }
}

// gw = d conv / d w applied to gy, stride 1, through the padded grid: gw^T (c*r*s, k) = columns
// (c*r*s, grid) @ gy on the grid^T (grid, k), zero on the grid's non-output columns, summed over
// chunks and images; then transposed into gw (k, c*r*s).
void padded_backward_weight(const Conv2dShape& s, const float* x, const float* gy, float* gw) {
  const bool par = loops_in_parallel();
  const PaddedPlan pl = padded_plan(s, s.k);
  const int64_t chw = s.c * s.h * s.w, pq = s.p * s.q, crs = s.c * s.r * s.s;
  auto xp = scratch<float>(s.c * (pl.rows + pl.halo) * pl.wp + pl.slack);  // (c, rows+halo, wp)
  auto gyp = scratch<float>(s.k * pl.rows * pl.wp);                        // (k, rows * wp)
  auto gwt = scratch<float>(crs * s.k);                                    // (c*r*s, k)
  auto rows = std::make_unique<const float*[]>(static_cast<size_t>(crs));
  bool first = true;
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t p0 = 0; p0 < s.p; p0 += pl.rows) {
      const int64_t p1 = std::min(s.p, p0 + pl.rows), hc = p1 - p0 + pl.halo;
      const int64_t cols = (p1 - p0) * pl.wp;
      pad_rows(par, x + i * chw, s, p0 - s.pad_h, p0 - s.pad_h + hc, pl.wp, xp.get());
      std::fill(xp.get() + s.c * hc * pl.wp, xp.get() + s.c * hc * pl.wp + pl.slack, 0.0f);
      column_rows(s, xp.get(), hc, pl.wp, rows.get());
      // The grid's non-output columns read past a row's end into the next (or, at the very end,
      // into the slack): gy is zero there, so they add nothing (for finite x: 0 * inf is NaN).
      const float* gyi = gy + i * s.k * pq + p0 * s.q;
      loop(par, s.k * (p1 - p0), std::max<int64_t>(1, kParallelGrain / pl.wp),
           [&](int64_t begin, int64_t end) {
             for (int64_t t = begin; t < end; ++t) {
               const int64_t kk = t / (p1 - p0), ph = t % (p1 - p0);
               const float* src = gyi + kk * pq + ph * s.q;
               float* dst = gyp.get() + kk * cols + ph * pl.wp;
               std::copy(src, src + s.q, dst);
               std::fill(dst + s.q, dst + pl.wp, 0.0f);
             }
           });
      // gw^T (c*r*s, k) (+)= columns (c*r*s, cols) @ gyp^T (cols, k)
      sgemm_ex(crs, s.k, cols, 1.0f, GemmOperand::row_pointers(rows.get()),
               GemmOperand::matrix(gyp.get(), cols, /*trans=*/true), first ? 0.0f : 1.0f, gwt.get(),
               s.k);
      first = false;
    }
  }
  // gw (k, c*r*s) = gw^T transposed, in blocks that stay in cache
  constexpr int64_t kBlock = 32;
  loop(par, (s.k + kBlock - 1) / kBlock, 1, [&](int64_t begin, int64_t end) {
    for (int64_t kb = begin * kBlock; kb < std::min(s.k, end * kBlock); kb += kBlock) {
      for (int64_t jb = 0; jb < crs; jb += kBlock) {
        for (int64_t kk = kb; kk < std::min(s.k, kb + kBlock); ++kk) {
          for (int64_t j = jb; j < std::min(crs, jb + kBlock); ++j)
            gw[kk * crs + j] = gwt[j * s.k + kk];
        }
      }
    }
  });
}

// y = conv(x, w) + bias for contiguous NCHW pointers (see Conv2dKernels::forward).
template <class T>
void forward_impl(const Conv2dShape& s, const T* x, const T* w, const T* bias, T* y) {
  const bool par = loops_in_parallel();
  const int64_t chw = s.c * s.h * s.w, pq = s.p * s.q, kpq = s.k * pq, crs = s.c * s.r * s.s;
  if (s.n == 0 || kpq == 0) return;
  if (crs == 0 || is_pointwise(s)) {
    for (int64_t i = 0; i < s.n; ++i) {
      fill_rows(par, y + i * kpq, s.k, pq, pq, bias);  // (k, p*q)
      if (crs == 0) continue;
      blas_gemm(false, false, s.k, pq, s.c, T(1), w, s.c, x + i * chw, pq, T(1), y + i * kpq, pq);
    }
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    if (padded_path_applies(s)) {
      padded_forward(s, x, w, bias, y);
      return;
    }
  }
  const int64_t rpc = chunk_rows(s, sizeof(T));
  auto col = scratch<T>(crs * rpc * s.q);  // (c*r*s, rows*q)
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t p0 = 0; p0 < s.p; p0 += rpc) {
      const int64_t p1 = std::min(s.p, p0 + rpc), cols = (p1 - p0) * s.q;
      T* y_rows = y + i * kpq + p0 * s.q;           // (k, cols) with row stride p*q
      fill_rows(par, y_rows, s.k, cols, pq, bias);  // the GEMM adds to it (beta = 1)
      im2col(par, x + i * chw, s, p0, p1, col.get());
      blas_gemm(false, false, s.k, cols, crs, T(1), w, crs, col.get(), cols, T(1), y_rows, pq);
    }
  }
}

template <class T>
void forward_typed(const Conv2dShape& s, const View& xv, const View& wv, const View& bv,
                   const View& yv) {
  forward_impl<T>(s, xv.ptr<const T>(), wv.ptr<const T>(),
                  bv.defined() ? bv.ptr<const T>() : nullptr, yv.ptr<T>());
}

// For stride 1, the input gradient is itself a convolution: gx = conv(gy, W'), W' (c, k, r, s)
// the weight with input and output channels exchanged and the kernel rotated by 180 degrees,
// padding dil * (kernel - 1) - pad. The shape of that convolution, when it applies (stride 1,
// padding at most dil * (kernel - 1), and p, q the full output of h, w).
bool gradient_as_conv(const Conv2dShape& s, Conv2dShape& g) {
  if (s.stride_h != 1 || s.stride_w != 1) return false;
  const int64_t pad_h = s.dil_h * (s.r - 1) - s.pad_h, pad_w = s.dil_w * (s.s - 1) - s.pad_w;
  if (pad_h < 0 || pad_w < 0) return false;
  if (s.p != s.h + 2 * s.pad_h - s.dil_h * (s.r - 1) ||
      s.q != s.w + 2 * s.pad_w - s.dil_w * (s.s - 1)) {
    return false;
  }
  g = s;
  g.c = s.k;
  g.h = s.p;
  g.w = s.q;
  g.k = s.c;
  g.p = s.h;
  g.q = s.w;
  g.pad_h = pad_h;
  g.pad_w = pad_w;
  return true;
}

// W' (c, k, r, s) from W (k, c, r, s): W'[ci][kk][a][b] = W[kk][ci][r-1-a][s-1-b], in square
// blocks of channels so that reads and writes both stay in cache.
template <class T>
void rotate_weight(const Conv2dShape& s, const T* w, T* out) {
  constexpr int64_t kBlock = 16;
  const int64_t rs = s.r * s.s;
  for (int64_t cb = 0; cb < s.c; cb += kBlock) {
    for (int64_t kb = 0; kb < s.k; kb += kBlock) {
      for (int64_t ci = cb; ci < std::min(s.c, cb + kBlock); ++ci) {
        for (int64_t kk = kb; kk < std::min(s.k, kb + kBlock); ++kk) {
          const T* src = w + (kk * s.c + ci) * rs;
          T* dst = out + (ci * s.k + kk) * rs;
          for (int64_t t = 0; t < rs; ++t) dst[t] = src[rs - 1 - t];
        }
      }
    }
  }
}

template <class T>
void backward_input_typed(const Conv2dShape& s, const View& gyv, const View& wv, const View& bv,
                          const View& gxv) {
  const bool par = loops_in_parallel();
  const T* gy = gyv.ptr<const T>();
  const T* w = wv.ptr<const T>();
  const T* bias = bv.defined() ? bv.ptr<const T>() : nullptr;
  T* gx = gxv.ptr<T>();
  const int64_t hw = s.h * s.w, chw = s.c * hw, pq = s.p * s.q, kpq = s.k * pq,
                crs = s.c * s.r * s.s;
  if (s.n == 0 || chw == 0) return;
  if constexpr (std::is_same_v<T, float>) {
    Conv2dShape g;
    // Rotating the weight costs k*c*r*s moves, col2im about n*c*r*s*p*q: the rotation pays when
    // the weight is small beside the activations (not in the deepest, low-resolution layers).
    if (s.k > 0 && pq > 0 && !is_pointwise(s) && s.k <= s.n * pq && gradient_as_conv(s, g) &&
        padded_path_applies(g)) {
      auto rotated = scratch<T>(s.k * crs);  // (c, k, r, s)
      rotate_weight(s, w, rotated.get());
      padded_forward(g, gy, rotated.get(), bias, gx);
      return;
    }
  }
  if (s.k == 0 || pq == 0) {  // nothing flows back: the bias (or zeros) only
    for (int64_t i = 0; i < s.n; ++i) fill_rows(par, gx + i * chw, s.c, hw, hw, bias);
    return;
  }
  if (is_pointwise(s)) {
    for (int64_t i = 0; i < s.n; ++i) {
      T beta = T(0);
      if (bias) {
        fill_rows(par, gx + i * chw, s.c, hw, hw, bias);
        beta = T(1);
      }
      // gx_i (c, hw) = W^T (c, k) @ gy_i (k, hw)
      blas_gemm(true, false, s.c, hw, s.k, T(1), w, s.c, gy + i * kpq, pq, beta, gx + i * chw, hw);
    }
    return;
  }
  const int64_t rpc = chunk_rows(s, sizeof(T));
  auto gcol = scratch<T>(crs * rpc * s.q);  // (c*r*s, rows*q)
  for (int64_t i = 0; i < s.n; ++i) {
    int64_t ready = 0;  // rows [0, ready) of gx_i hold the bias (or zero) plus earlier chunks
    for (int64_t p0 = 0; p0 < s.p; p0 += rpc) {
      const int64_t p1 = std::min(s.p, p0 + rpc), cols = (p1 - p0) * s.q;
      // gcol (c*r*s, cols) = W^T (c*r*s, k) @ gy_i[:, rows] (k, cols)
      blas_gemm(true, false, crs, cols, s.k, T(1), w, crs, gy + i * kpq + p0 * s.q, pq, T(0),
                gcol.get(), cols);
      // input rows this chunk reaches are below `last`; the last chunk initialises the rest
      const int64_t reach = (p1 - 1) * s.stride_h - s.pad_h + (s.r - 1) * s.dil_h + 1;
      const int64_t last = p1 == s.p ? s.h : std::clamp(reach, ready, s.h);
      col2im(par, gcol.get(), s, p0, p1, gx + i * chw, ready, last, bias);
      ready = last;
    }
  }
}

template <class T>
void backward_weight_typed(const Conv2dShape& s, const View& xv, const View& gyv, const View& gwv) {
  const bool par = loops_in_parallel();
  const T* x = xv.ptr<const T>();
  const T* gy = gyv.ptr<const T>();
  T* gw = gwv.ptr<T>();
  const int64_t chw = s.c * s.h * s.w, pq = s.p * s.q, kpq = s.k * pq, crs = s.c * s.r * s.s;
  if (s.k == 0 || crs == 0) return;
  if (s.n == 0 || pq == 0) {
    fill_rows<T>(par, gw, s.k, crs, crs, nullptr);
    return;
  }
  if constexpr (std::is_same_v<T, float>) {
    // The result is transposed at the end (k*c*r*s moves): worth it unless the weight is large
    // beside the activations (the deepest, low-resolution layers).
    if (!is_pointwise(s) && s.k <= s.n * pq && padded_path_applies(s)) {
      padded_backward_weight(s, x, gy, gw);
      return;
    }
  }
  if (is_pointwise(s)) {
    for (int64_t i = 0; i < s.n; ++i) {
      // gW (k, c) (+)= gy_i (k, hw) @ x_i^T (hw, c)
      blas_gemm(false, true, s.k, s.c, pq, T(1), gy + i * kpq, pq, x + i * chw, pq,
                i == 0 ? T(0) : T(1), gw, s.c);
    }
    return;
  }
  const int64_t rpc = chunk_rows(s, sizeof(T));
  auto col = scratch<T>(crs * rpc * s.q);  // (c*r*s, rows*q)
  bool first = true;
  for (int64_t i = 0; i < s.n; ++i) {
    for (int64_t p0 = 0; p0 < s.p; p0 += rpc) {
      const int64_t p1 = std::min(s.p, p0 + rpc), cols = (p1 - p0) * s.q;
      im2col(par, x + i * chw, s, p0, p1, col.get());
      // gW (k, c*r*s) (+)= gy_i[:, rows] (k, cols) @ col^T (cols, c*r*s)
      blas_gemm(false, true, s.k, crs, cols, T(1), gy + i * kpq + p0 * s.q, pq, col.get(), cols,
                first ? T(0) : T(1), gw, crs);
      first = false;
    }
  }
}

// Sum of a row in eight fixed lanes (vectorisable, and the same order on every run).
template <class T>
double row_sum(const T* v, int64_t n) {
  double lanes[8] = {};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int l = 0; l < 8; ++l) lanes[l] += static_cast<double>(v[j + l]);
  }
  for (; j < n; ++j) lanes[0] += static_cast<double>(v[j]);
  return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) +
         ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

template <class T>
void backward_bias_typed(const Conv2dShape& s, const View& gyv, const View& gbv) {
  const T* gy = gyv.ptr<const T>();
  T* gb = gbv.ptr<T>();
  const int64_t pq = s.p * s.q, kpq = s.k * pq;
  loop(loops_in_parallel(), s.k,
       std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(s.n * pq, 1)),
       [&](int64_t begin, int64_t end) {
         for (int64_t kk = begin; kk < end; ++kk) {
           double acc = 0.0;
           for (int64_t i = 0; i < s.n; ++i) acc += row_sum(gy + i * kpq + kk * pq, pq);
           gb[kk] = static_cast<T>(acc);
         }
       });
}

void conv_forward(const ExecContext&, const Conv2dShape& s, const View& x, const View& w,
                  const View& bias, const View& y) {
  check_blas_range(s, "conv2d forward");
  SEG_CPU_DISPATCH_FLOAT(y.dtype, "conv2d forward", T, { forward_typed<T>(s, x, w, bias, y); });
}

void conv_backward_input(const ExecContext&, const Conv2dShape& s, const View& gy, const View& w,
                         const View& bias, const View& gx) {
  check_blas_range(s, "conv2d backward_input");
  SEG_CPU_DISPATCH_FLOAT(gx.dtype, "conv2d backward_input", T,
                         { backward_input_typed<T>(s, gy, w, bias, gx); });
}

void conv_backward_weight(const ExecContext&, const Conv2dShape& s, const View& x, const View& gy,
                          const View& gw) {
  check_blas_range(s, "conv2d backward_weight");
  SEG_CPU_DISPATCH_FLOAT(gw.dtype, "conv2d backward_weight", T,
                         { backward_weight_typed<T>(s, x, gy, gw); });
}

void conv_backward_bias(const ExecContext&, const Conv2dShape& s, const View& gy, const View& gb) {
  SEG_CPU_DISPATCH_FLOAT(gb.dtype, "conv2d backward_bias", T,
                         { backward_bias_typed<T>(s, gy, gb); });
}

const Conv2dKernels kConv2dKernels{conv_forward, conv_backward_input, conv_backward_weight,
                                   conv_backward_bias};

}  // namespace

void register_conv_kernels(KernelRegistry& r) {
  r.set<OpId::conv2d>(DeviceType::cpu, &kConv2dKernels);
  r.set<OpId::conv_transpose2d>(DeviceType::cpu, &kConv2dKernels);
}

}  // namespace seg::cpu
