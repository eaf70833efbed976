// CUDA kernels of bilinear resizing (PyTorch's upsample_bilinear2d with an output size), contiguous
// NCHW, forward and backward, align_corners both ways, any sizes.
//
// Design notes
// - Sampling math: bilinear_tap and bilinear_blend from kernels/common/upsample.h, the CPU kernels'
//   own, written with explicit fused multiply-adds: the forward equals the CPU's bit for bit.
// - Forward: a block owns a tile of kTileRows output rows (of the flattened n * c * p rows) by
//   blockDim.x columns. The tile's row taps are computed once into shared memory, each thread's
//   column tap once per tile; every output is then 4 reads (L1/L2 hits: the input is the small side
//   when upsampling) and three blends. Writes are coalesced.
// - Backward, a gather with no atomics (deterministic). Along each axis the outputs that read input
//   index k through their first tap form a contiguous range, and so do those that read it through
//   their second tap (bilinear_first_reader); a tiny kernel tabulates both axes' taps and range
//   starts. The fused kernel gives a block one band of up to kMaxBand input rows of one plane: it
//   walks the gy rows that read the band in increasing order; each row is staged in shared memory
//   as its two weighted copies (w0 * gy, w1 * gy; coalesced), every input column k sums its two
//   ranges of them (the adjoint along w, t_k), and t_k is added with the row's h weight into the
//   band's accumulators (shared, one owner thread per column). gy is read from HBM once, plus the
//   rows shared by two neighbouring bands (~1/band of it, mostly from L2); nothing is written but gx.
// - Every gx element sums in a fixed order: gy rows in increasing order (first-tap weight, then
//   second-tap weight), each t_k as its second-tap range then its first-tap range. Products are
//   rounded before they are added (no contraction), so the fallback below gives the same bits.
// - Fallback when a row and the band accumulators do not fit in 48 KiB of shared memory (rows of
//   thousands of columns): two passes through a scratch t (n * c * p, w): the adjoint along w read
//   straight from global memory, then along h.
#include <algorithm>
#include <cstdint>
#include <limits>
#include <string>

#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int kTileRows = 32;         // output rows per forward tile
constexpr int kMaxBand = 8;           // input rows per fused-backward block
constexpr size_t kSharedLimit = 48 * 1024;  // dynamic shared memory without an opt-in

int grid_for(const CudaKernelEnv& env, int64_t blocks_wanted, int block) {
  const int per_sm = std::max(1, (env.max_threads_per_sm > 0 ? env.max_threads_per_sm : 2048) / block);
  const int64_t cap = static_cast<int64_t>(std::max(env.sm_count, 1)) * per_sm * 4;
  return static_cast<int>(std::max<int64_t>(1, std::min(blocks_wanted, cap)));
}

// Shared-memory index of element j of a staged row: one padding word per 32, so that threads
// reading ranges that start f elements apart (f = upsampling factor, often a power of two) fall
// in different banks.
__device__ __forceinline__ int pad(int j) { return j + (j >> 5); }
__host__ __device__ inline int padded_len(int64_t n) { return static_cast<int>(n + (n >> 5) + 1); }

// a * b rounded on its own (never fused into a following add).
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }

// ---- forward ----

template <class T>
struct RowTap {
  int64_t off0, off1;  // offsets of the two source rows in x
  T w0, w1;
};

// y (rows = n * c * p, q) from x (n * c * h, w).
template <class T>
__global__ void __launch_bounds__(kBlock)
    upsample_forward_kernel(const T* __restrict__ x, T* __restrict__ y, const UpsampleShape s,
                            const T scale_h, const T scale_w, const int64_t rows, const int64_t col_tiles) {
  __shared__ RowTap<T> row_taps[kTileRows];
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows * col_tiles;
  const int flat = static_cast<int>(threadIdx.y * blockDim.x + threadIdx.x);
  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {  // block-uniform
    const int64_t r0 = tile / col_tiles * kTileRows;
    const int64_t j = tile % col_tiles * blockDim.x + threadIdx.x;
    if (flat < kTileRows && r0 + flat < rows) {
      const int64_t r = r0 + flat;
      const int64_t plane = r / s.p, i = r % s.p;
      const BilinearTap<T> a = bilinear_tap<T>(i, s.h, scale_h, s.align_corners);
      row_taps[flat] = RowTap<T>{(plane * s.h + a.i0) * s.w, (plane * s.h + a.i1) * s.w, a.w0, a.w1};
    }
    __syncthreads();
    if (j < s.q) {
      const BilinearTap<T> b = bilinear_tap<T>(j, s.w, scale_w, s.align_corners);
      const int64_t last = std::min<int64_t>(kTileRows, rows - r0);
      for (int64_t rr = threadIdx.y; rr < last; rr += blockDim.y) {
        const RowTap<T> a = row_taps[rr];
        const T* x0 = x + a.off0;
        const T* x1 = x + a.off1;
        const T v0 = bilinear_blend(b.w0, x0[b.i0], b.w1, x0[b.i1]);
        const T v1 = bilinear_blend(b.w0, x1[b.i0], b.w1, x1[b.i1]);
        y[(r0 + rr) * s.q + j] = bilinear_blend(a.w0, v0, a.w1, v1);
      }
    }
    __syncthreads();  // row_taps is rewritten by the next tile
  }
}

// ---- backward ----

// One output coordinate's taps along an axis (indices fit in i32: checked on the host).
template <class T>
struct AxisTap {
  int32_t i0, i1;
  T w0, w1;
};

// The tables of one axis (in -> out): taps (out) and range starts first0, first1 (in + 1):
// outputs [first0[k], first0[k + 1]) read k through i0, [first1[k], first1[k + 1]) through i1.
template <class T>
struct AxisTables {
  AxisTap<T>* taps;
  int32_t* first0;
  int32_t* first1;
};

template <class T>
__global__ void __launch_bounds__(kBlock)
    axis_tables_kernel(const AxisTables<T> t, const int64_t in, const int64_t out, const T scale,
                       const bool align_corners) {
  const int64_t entries = out + 2 * (in + 1);
  for (int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; e < entries;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    if (e < out) {
      const BilinearTap<T> b = bilinear_tap<T>(e, in, scale, align_corners);
      t.taps[e] = AxisTap<T>{static_cast<int32_t>(b.i0), static_cast<int32_t>(b.i1), b.w0, b.w1};
    } else if (e < out + in + 1) {
      const int64_t k = e - out;
      t.first0[k] = static_cast<int32_t>(bilinear_first_reader<T>(k, false, in, out, scale, align_corners));
    } else {
      const int64_t k = e - out - (in + 1);
      t.first1[k] = static_cast<int32_t>(bilinear_first_reader<T>(k, true, in, out, scale, align_corners));
    }
  }
}

// t_k of one staged row (sa = w0 * gy, sb = w1 * gy): the second-tap range, then the first-tap one.
template <class T>
__device__ __forceinline__ T adjoint_w(const T* sa, const T* sb, const AxisTables<T>& tw, int k) {
  T tk = T(0);
  const int b1 = tw.first1[k], e1 = tw.first1[k + 1];
  for (int j = b1; j < e1; ++j) tk += sb[pad(j)];
  const int b0 = tw.first0[k], e0 = tw.first0[k + 1];
  for (int j = b0; j < e0; ++j) tk += sa[pad(j)];
  return tk;
}

// gx (n * c, h, w) from gy (n * c, p, q): one block per band of `band` input rows of one plane.
// Shared: sa, sb (padded_len(q) each), acc (band, w).
template <class T>
__global__ void __launch_bounds__(kBlock)
    upsample_backward_fused_kernel(const T* __restrict__ gy, T* __restrict__ gx, const int64_t planes,
                                   const int h, const int w, const int p, const int q, const int band,
                                   const AxisTables<T> tw, const AxisTables<T> th) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  T* sa = reinterpret_cast<T*>(smem_raw);
  T* sb = sa + padded_len(q);
  T* acc = sb + padded_len(q);
  const int bands = (h + band - 1) / band;
  const int64_t units = planes * bands;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {  // block-uniform
    const int64_t plane = u / bands;
    const int ih0 = static_cast<int>(u % bands) * band;
    const int ih1 = min(h, ih0 + band);
    // Accumulators: element (rr, k) is only ever touched by thread k % blockDim.x.
    for (int rr = 0; rr < ih1 - ih0; ++rr) {
      for (int k = threadIdx.x; k < w; k += blockDim.x) acc[rr * w + k] = T(0);
    }
    // The gy rows that read the band: i1 >= ih0 and i0 < ih1.
    const int r_begin = th.first1[ih0], r_end = th.first0[ih1];
    const T* gplane = gy + plane * p * q;
    for (int r = r_begin; r < r_end; ++r) {
      const T* g = gplane + static_cast<int64_t>(r) * q;
#pragma unroll 4
      for (int j = threadIdx.x; j < q; j += blockDim.x) {
        const T v = g[j];
        const AxisTap<T> tj = tw.taps[j];
        sa[pad(j)] = mul_rn(tj.w0, v);
        sb[pad(j)] = mul_rn(tj.w1, v);
      }
      __syncthreads();
      const AxisTap<T> tr = th.taps[r];
      const bool use0 = tr.i0 >= ih0 && tr.i0 < ih1;
      const bool use1 = tr.i1 >= ih0 && tr.i1 < ih1;
      for (int k = threadIdx.x; k < w; k += blockDim.x) {
        const T tk = adjoint_w(sa, sb, tw, k);
        if (use0) acc[(tr.i0 - ih0) * w + k] += mul_rn(tr.w0, tk);
        if (use1) acc[(tr.i1 - ih0) * w + k] += mul_rn(tr.w1, tk);
      }
      __syncthreads();  // sa, sb are restaged by the next row
    }
    T* out = gx + (plane * h + ih0) * w;
    for (int rr = 0; rr < ih1 - ih0; ++rr) {
      for (int k = threadIdx.x; k < w; k += blockDim.x) out[static_cast<int64_t>(rr) * w + k] = acc[rr * w + k];
    }
  }
}

// Fallback pass 1: t (n * c * p, w) = gy rows reduced along w, read from global memory.
// Block (bx, by): by rows at a time, bx columns.
template <class T>
__global__ void __launch_bounds__(kBlock)
    upsample_backward_w_kernel(const T* __restrict__ gy, T* __restrict__ t, const int64_t rows,
                               const int w, const int q, const AxisTables<T> tw) {
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; r < rows;
       r += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const T* g = gy + r * q;
    for (int k = threadIdx.x; k < w; k += blockDim.x) {
      T tk = T(0);
      for (int j = tw.first1[k]; j < tw.first1[k + 1]; ++j) tk += mul_rn(tw.taps[j].w1, g[j]);
      for (int j = tw.first0[k]; j < tw.first0[k + 1]; ++j) tk += mul_rn(tw.taps[j].w0, g[j]);
      t[r * w + k] = tk;
    }
  }
}

// Fallback pass 2: gx (n * c * h, w) from t along h. Block (bx, by) as above.
template <class T>
__global__ void __launch_bounds__(kBlock)
    upsample_backward_h_kernel(const T* __restrict__ t, T* __restrict__ gx, const int64_t rows,
                               const int h, const int w, const int p, const AxisTables<T> th) {
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * blockDim.y + threadIdx.y; row < rows;
       row += static_cast<int64_t>(gridDim.x) * blockDim.y) {
    const int64_t plane = row / h;
    const int ih = static_cast<int>(row % h);
    const int r_begin = th.first1[ih], r_end = th.first0[ih + 1];
    const T* tp = t + plane * p * w;
    for (int k = threadIdx.x; k < w; k += blockDim.x) {
      T acc = T(0);
      for (int r = r_begin; r < r_end; ++r) {
        const AxisTap<T> tr = th.taps[r];
        const T tk = tp[static_cast<int64_t>(r) * w + k];
        if (tr.i0 == ih) acc += mul_rn(tr.w0, tk);
        if (tr.i1 == ih) acc += mul_rn(tr.w1, tk);
      }
      gx[row * w + k] = acc;
    }
  }
}

[[noreturn]] void unsupported(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported by the CUDA kernel (f32, f64)");
}

void check_sizes(const UpsampleShape& s, const char* kernel) {
  constexpr int64_t kMax = std::numeric_limits<int32_t>::max() - 1;
  if (s.h > kMax || s.w > kMax || s.p > kMax || s.q > kMax) {
    throw std::invalid_argument(std::string(kernel) + ": spatial sizes beyond 2^31 are not supported");
  }
}

// Rounds a byte count up to 256 (sub-allocations of one scratch buffer stay aligned).
size_t align256(size_t bytes) { return (bytes + 255) / 256 * 256; }

template <class T>
void forward_typed(const CudaKernelEnv& env, const UpsampleShape& s, const View& x, const View& y) {
  const int64_t rows = s.n * s.c * s.p;
  if (rows == 0 || s.q == 0) return;
  check_sizes(s, "upsample_bilinear2d");
  const int bx = static_cast<int>(std::min<int64_t>(kBlock, (s.q + 31) / 32 * 32));
  const dim3 block(bx, kBlock / bx);
  const int64_t col_tiles = (s.q + bx - 1) / bx;
  const int64_t tiles = (rows + kTileRows - 1) / kTileRows * col_tiles;
  const T scale_h = bilinear_scale<T>(s.h, s.p, s.align_corners);
  const T scale_w = bilinear_scale<T>(s.w, s.q, s.align_corners);
  upsample_forward_kernel<T><<<grid_for(env, tiles, kBlock), block, 0, env.stream>>>(
      x.ptr<const T>(), y.ptr<T>(), s, scale_h, scale_w, rows, col_tiles);
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void backward_typed(const CudaKernelEnv& env, const UpsampleShape& s, const View& gy, const View& gx) {
  const int64_t planes = s.n * s.c;
  if (planes == 0 || s.h == 0 || s.w == 0) return;
  check_sizes(s, "upsample_bilinear2d backward");
  // Tables of both axes in one scratch buffer.
  const size_t taps_w = align256(sizeof(AxisTap<T>) * static_cast<size_t>(s.q));
  const size_t taps_h = align256(sizeof(AxisTap<T>) * static_cast<size_t>(s.p));
  const size_t firsts_w = align256(sizeof(int32_t) * static_cast<size_t>(s.w + 1));
  const size_t firsts_h = align256(sizeof(int32_t) * static_cast<size_t>(s.h + 1));
  ScratchBuffer tables(env, taps_w + taps_h + 2 * firsts_w + 2 * firsts_h);
  char* base = tables.as<char>();
  AxisTables<T> tw{reinterpret_cast<AxisTap<T>*>(base), reinterpret_cast<int32_t*>(base + taps_w),
                   reinterpret_cast<int32_t*>(base + taps_w + firsts_w)};
  base += taps_w + 2 * firsts_w;
  AxisTables<T> th{reinterpret_cast<AxisTap<T>*>(base), reinterpret_cast<int32_t*>(base + taps_h),
                   reinterpret_cast<int32_t*>(base + taps_h + firsts_h)};
  const T scale_h = bilinear_scale<T>(s.h, s.p, s.align_corners);
  const T scale_w = bilinear_scale<T>(s.w, s.q, s.align_corners);
  const int64_t entries_w = s.q + 2 * (s.w + 1), entries_h = s.p + 2 * (s.h + 1);
  axis_tables_kernel<T><<<grid_for(env, (entries_w + kBlock - 1) / kBlock, kBlock), kBlock, 0, env.stream>>>(
      tw, s.w, s.q, scale_w, s.align_corners);
  SEG_CUDA_LAUNCH_CHECK();
  axis_tables_kernel<T><<<grid_for(env, (entries_h + kBlock - 1) / kBlock, kBlock), kBlock, 0, env.stream>>>(
      th, s.h, s.p, scale_h, s.align_corners);
  SEG_CUDA_LAUNCH_CHECK();

  const int h = static_cast<int>(s.h), w = static_cast<int>(s.w), p = static_cast<int>(s.p),
            q = static_cast<int>(s.q);
  const size_t staged = 2 * static_cast<size_t>(padded_len(s.q)) * sizeof(T);
  const size_t per_band_row = static_cast<size_t>(s.w) * sizeof(T);
  const int64_t band = staged < kSharedLimit
                           ? std::min<int64_t>({kMaxBand, s.h, static_cast<int64_t>((kSharedLimit - staged) / per_band_row)})
                           : 0;
  if (band >= 1) {
    const size_t smem = staged + static_cast<size_t>(band) * per_band_row;
    const int64_t units = planes * ((s.h + band - 1) / band);
    upsample_backward_fused_kernel<T><<<grid_for(env, units, kBlock), kBlock, smem, env.stream>>>(
        gy.ptr<const T>(), gx.ptr<T>(), planes, h, w, p, q, static_cast<int>(band), tw, th);
    SEG_CUDA_LAUNCH_CHECK();
    return;
  }
  // Rows too wide for shared memory: two passes through t (n * c * p, w).
  ScratchBuffer t(env, sizeof(T) * static_cast<size_t>(planes * s.p * s.w));
  {
    const int bx = static_cast<int>(std::min<int64_t>(kBlock, (s.w + 31) / 32 * 32));
    const dim3 block(bx, kBlock / bx);
    const int64_t rows = planes * s.p;
    upsample_backward_w_kernel<T><<<grid_for(env, (rows + block.y - 1) / block.y, kBlock), block, 0, env.stream>>>(
        gy.ptr<const T>(), t.as<T>(), rows, w, q, tw);
    SEG_CUDA_LAUNCH_CHECK();
    const int64_t rows_x = planes * s.h;
    upsample_backward_h_kernel<T><<<grid_for(env, (rows_x + block.y - 1) / block.y, kBlock), block, 0, env.stream>>>(
        t.as<const T>(), gx.ptr<T>(), rows_x, h, w, p, th);
    SEG_CUDA_LAUNCH_CHECK();
  }
}

void forward(const ExecContext& ctx, const UpsampleShape& shape, const View& x, const View& y) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32: forward_typed<float>(env, shape, x, y); break;
    case DType::f64: forward_typed<double>(env, shape, x, y); break;
    default: unsupported("upsample_bilinear2d", x.dtype);
  }
}

void backward(const ExecContext& ctx, const UpsampleShape& shape, const View& gy, const View& gx) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (gy.dtype) {
    case DType::f32: backward_typed<float>(env, shape, gy, gx); break;
    case DType::f64: backward_typed<double>(env, shape, gy, gx); break;
    default: unsupported("upsample_bilinear2d backward", gy.dtype);
  }
}

const UpsampleBilinearKernels kUpsampleBilinear{&forward, &backward};

}  // namespace

void register_upsample_kernels(KernelRegistry& r) {
  r.set<OpId::upsample_bilinear2d>(DeviceType::cuda, &kUpsampleBilinear);
}

}  // namespace seg::cuda
