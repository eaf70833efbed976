// CUDA batch normalisation (PyTorch's semantics, as kernels/cpu/norm.cpp): cuDNN's spatial batch
// norm where it has the operation, our own deterministic kernels for the rest.
//
// Design notes
// - cuDNN (legacy API, CUDNN_BATCHNORM_SPATIAL, x described as (n, c, h*w, 1)):
//     training forward   cudnnBatchNormalizationForwardTraining: y, the batch mean and
//                        1 / sqrt(var + eps) (cuDNN's "saved inverse variance" is that inverse
//                        standard deviation, our save_invstd), and the running statistics with
//                        factor = momentum: r = (1 - m) r + m batch. cuDNN's running variance uses
//                        the unbiased batch variance, as PyTorch (whose CUDA path hands its
//                        running_var to this very call; MXNet's tests measured cuDNN's update as the
//                        unbiased one), so no kernel of ours touches the running statistics.
//     evaluation forward cudnnBatchNormalizationForwardInference.
//     training backward  cudnnBatchNormalizationBackward with the saved mean and invstd, and the
//                        forward's epsilon (cuDNN asks for the same value in both passes).
//   cuDNN needs a scale and a bias: with affine off, ones and zeros in scratch, and their gradients
//   go to scratch that is dropped. Running statistics with a stride other than 1 are gathered into
//   scratch and scattered back; undefined ones are replaced by scratch (no update is visible).
//   cuDNN's batch norm is deterministic (its reproducibility notes list no batch-norm routine).
// - Own kernels, where cuDNN has no equivalent or cannot take the size:
//     * the evaluation-mode backward (fixed statistics: gx = gy * invstd * w, plus the weight and
//       bias gradients as per-channel sums), and any backward that needs no gx (sums only);
//     * tensors of more than INT_MAX elements (cuDNN's descriptors hold int sizes): every path,
//       with the CPU's arithmetic (f64 two-pass statistics, mean split into mean_hi + mean_lo);
//     * N * H*W == 0 (mean 0, invstd 1 / sqrt(eps), running statistics untouched, zero parameter
//       gradients), strided running statistics, and the ones/zeros scratch.
//   SEG_BN_OWN_KERNELS=1 in the environment sends every call through the own kernels (to test them
//   against the CPU with the parity cases: SEG_BN_OWN_KERNELS=1 SEG_PARITY_OPS=batch_norm2d; it is
//   read at every call, and tests/test_cuda_norm.cpp sets it to run both paths).
// - Per-channel sums (own kernels): channel c of a contiguous (n, C, hw) tensor is an (n, hw)
//   matrix with row stride C * hw. It is cut into tiles (row range x column range) so that about
//   4 blocks per SM are busy whatever n, C and hw are; each block sums its tile in f64 in a fixed
//   per-thread order, then a fixed shuffle tree and a fixed order over warps (no atomics); a second
//   kernel adds the tiles of each channel in tile order. Results depend on the shape only.
//   Threads walk their tile's flattened (row, column) positions with an incremental (row, column)
//   update: no division per element, and small hw (even 1, the (n, c) inputs) keeps every thread
//   busy.
// - Elementwise passes: one thread per 16 bytes (float4 / double2 loads when every pointer is
//   16-byte aligned, scalar loads otherwise), the channel found once per group with one 64-bit
//   division and then advanced incrementally; per-channel constants in T, computed in f64 by a
//   one-thread-per-channel kernel (the CPU's formulas). 64-bit indices everywhere; 1-D grids with
//   grid-stride loops, clamped.
#include <cuda_runtime.h>
#include <cudnn.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"
#include "kernels/cuda/cudnn_desc.h"

namespace seg::cuda {
namespace {

constexpr int kThreads = 256;  // every kernel here: a multiple of 32 (full warps in the shuffles)
constexpr int kWarps = kThreads / 32;
// Work below this many elements per tile is not split further (a block's share of a reduction).
constexpr int64_t kMinTileElements = 4096;
// Epsilon passed to cudnnBatchNormalizationBackward, which uses the saved invstd instead.

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__device__ __forceinline__ int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }

// Read at every call (one getenv, nothing next to a launch), so that a test can run both paths in
// one process (tests/test_cuda_norm.cpp).
bool force_own_kernels() {
  const char* v = std::getenv("SEG_BN_OWN_KERNELS");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

int grid_for(const CudaKernelEnv& env, int64_t work_items, int64_t per_block = kThreads) {
  const int64_t want = std::max<int64_t>(1, ceil_div(work_items, per_block));
  const int64_t cap = std::max<int64_t>(1, static_cast<int64_t>(env.sm_count) * 16);
  return static_cast<int>(std::min(want, cap));
}

// ---- small kernels ----

template <class T>
__global__ void fill_kernel(T* __restrict__ p, int64_t n, int64_t stride, T value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    p[i * stride] = value;
  }
}

template <class T>
__global__ void copy_strided_kernel(T* __restrict__ dst, int64_t dst_stride,
                                    const T* __restrict__ src, int64_t src_stride, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dst[i * dst_stride] = src[i * src_stride];
  }
}

template <class T>
void fill(const CudaKernelEnv& env, T* p, int64_t n, int64_t stride, double value) {
  if (n <= 0) return;
  fill_kernel<T><<<grid_for(env, n), kThreads, 0, env.stream>>>(p, n, stride, static_cast<T>(value));
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void copy_strided(const CudaKernelEnv& env, T* dst, int64_t dst_stride, const T* src,
                  int64_t src_stride, int64_t n) {
  if (n <= 0) return;
  copy_strided_kernel<T><<<grid_for(env, n), kThreads, 0, env.stream>>>(dst, dst_stride, src,
                                                                       src_stride, n);
  SEG_CUDA_LAUNCH_CHECK();
}

// ---- per-channel sums ----

// Channel c's (n, hw) matrix cut into row_tiles x col_tiles tiles of (row_chunk, col_chunk).
struct TilePlan {
  int64_t row_chunk = 1, col_chunk = 1, row_tiles = 1, col_tiles = 1;
  __host__ __device__ int64_t tiles() const { return row_tiles * col_tiles; }
};

TilePlan plan_tiles(const BatchNormShape& s, int sm_count) {
  TilePlan p;
  const int64_t count = s.n * s.hw;
  const int64_t target = std::max<int64_t>(1, 4 * static_cast<int64_t>(std::max(sm_count, 1)));
  const int64_t wanted = std::clamp<int64_t>(
      std::min(ceil_div(target, s.c), ceil_div(count, kMinTileElements)), 1, count);
  // Columns first (contiguous runs stay long), at least kThreads of them per tile.
  p.col_tiles = std::clamp<int64_t>(wanted, 1, std::max<int64_t>(1, s.hw / kThreads));
  p.col_chunk = ceil_div(s.hw, p.col_tiles);
  p.col_tiles = ceil_div(s.hw, p.col_chunk);
  p.row_tiles = std::clamp<int64_t>(ceil_div(wanted, p.col_tiles), 1, s.n);
  p.row_chunk = ceil_div(s.n, p.row_tiles);
  p.row_tiles = ceil_div(s.n, p.row_chunk);
  return p;
}

// Deterministic block sum of K values per thread; the result is valid in thread 0.
template <int K>
__device__ void block_sum(double (&v)[K], double* smem /* [kWarps * K] */) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v[k] += __shfl_down_sync(0xffffffffu, v[k], offset);
  }
  if (lane == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) smem[warp * K + k] = v[k];
  }
  __syncthreads();
  if (threadIdx.x == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      double total = 0.0;
      for (int w = 0; w < kWarps; ++w) total += smem[w * K + k];
      v[k] = total;
    }
  }
  __syncthreads();  // smem may be reused
}

// Terms of one element, for the sums. idx: the element of the (n, C, hw) tensor; c its channel.
template <class T>
struct SumX {  // sum x
  static constexpr int K = 1;
  const T* x;
  __device__ void operator()(int64_t idx, int64_t, double (&t)[K]) const {
    t[0] += static_cast<double>(x[idx]);
  }
};

template <class T>
struct SumSquaredDeviation {  // sum (x - mean_c)^2, mean in f64
  static constexpr int K = 1;
  const T* x;
  const double* mean;
  __device__ void operator()(int64_t idx, int64_t c, double (&t)[K]) const {
    const double d = static_cast<double>(x[idx]) - mean[c];
    t[0] += d * d;
  }
};

// sum gy, sum (x - m_c) gy with m the saved (or running) mean in T, and in training sum x too.
template <class T, int KK>
struct BackwardTerms {
  static constexpr int K = KK;
  const T* x;
  const T* gy;
  const T* mean;
  __device__ void operator()(int64_t idx, int64_t c, double (&t)[K]) const {
    const double g = static_cast<double>(gy[idx]);
    const double xv = static_cast<double>(x[idx]);
    t[0] += g;
    t[1] += (xv - static_cast<double>(mean[c])) * g;
    if constexpr (K == 3) t[2] += xv;
  }
};

// partials[(c * tiles + tile) * K + k]: the sums of one tile of one channel.
template <class Op>
__global__ void __launch_bounds__(kThreads)
    channel_partials_kernel(Op op, int64_t n, int64_t C, int64_t hw, TilePlan plan,
                            double* __restrict__ partials) {
  constexpr int K = Op::K;
  __shared__ double smem[kWarps * K];
  const int64_t tiles = plan.tiles();
  const int64_t units = C * tiles;
  for (int64_t u = blockIdx.x; u < units; u += gridDim.x) {  // uniform per block
    const int64_t c = u / tiles, tile = u - c * tiles;
    const int64_t rt = tile / plan.col_tiles, ct = tile - rt * plan.col_tiles;
    const int64_t r0 = rt * plan.row_chunk, r1 = imin(n, r0 + plan.row_chunk);
    const int64_t j0 = ct * plan.col_chunk, j1 = imin(hw, j0 + plan.col_chunk);
    const int64_t cols = j1 - j0;
    double acc[K];
#pragma unroll
    for (int k = 0; k < K; ++k) acc[k] = 0.0;
    if (cols > 0 && r1 > r0) {
      // Flattened position e = threadIdx.x + i * blockDim.x over the tile's (rows, cols).
      const int64_t step_rows = blockDim.x / cols, step_cols = blockDim.x % cols;
      int64_t i = r0 + threadIdx.x / cols, j = j0 + threadIdx.x % cols;
      while (i < r1) {
        op((i * C + c) * hw + j, c, acc);
        i += step_rows;
        j += step_cols;
        if (j >= j1) {
          j -= cols;
          ++i;
        }
      }
    }
    block_sum<K>(acc, smem);
    if (threadIdx.x == 0) {
#pragma unroll
      for (int k = 0; k < K; ++k) partials[u * K + k] = acc[k];
    }
  }
}

// The K sums of channel c: its tiles in order.
template <int K>
__device__ void channel_total(const double* __restrict__ partials, int64_t c, int64_t tiles,
                              double (&out)[K]) {
#pragma unroll
  for (int k = 0; k < K; ++k) out[k] = 0.0;
  if (partials == nullptr) return;
  for (int64_t t = 0; t < tiles; ++t) {
#pragma unroll
    for (int k = 0; k < K; ++k) out[k] += partials[(c * tiles + t) * K + k];
  }
}

// Runs the partial sums of `op` into `partials_out` (c * plan.tiles() * Op::K doubles).
template <class Op>
void channel_partials(const CudaKernelEnv& env, const BatchNormShape& s, const TilePlan& plan,
                      const Op& op, ScratchBuffer& partials_out) {
  const int64_t units = s.c * plan.tiles();
  const int grid = static_cast<int>(std::min<int64_t>(units, int64_t{1} << 30));
  channel_partials_kernel<Op><<<grid, kThreads, 0, env.stream>>>(op, s.n, s.c, s.hw, plan,
                                                                 partials_out.as<double>());
  SEG_CUDA_LAUNCH_CHECK();
}

// ---- per-channel constants of the elementwise passes (T, computed in f64) ----
//   affine (forward):      y  = ((x - hi) - lo) * a + b
//   batch (train backward): gx = (gy - b - ((x - hi) - lo) * k) * a
//   scale (eval backward):  gx = gy * a
template <class T>
struct Consts {
  T* hi;
  T* lo;
  T* a;
  T* b;
  T* k;
};

template <class T>
Consts<T> consts_in(const ScratchBuffer& buf, int64_t C) {
  T* p = buf.as<T>();
  return Consts<T>{p, p + C, p + 2 * C, p + 3 * C, p + 4 * C};
}

template <class T>
__device__ T param_or(const T* p, int64_t c, T fallback) {
  return p != nullptr ? p[c] : fallback;
}

template <class T>
__device__ void set_affine(const Consts<T>& k, int64_t c, double mean, double a, T b) {
  const T hi = static_cast<T>(mean);
  k.hi[c] = hi;
  k.lo[c] = static_cast<T>(mean - static_cast<double>(hi));
  k.a[c] = static_cast<T>(a);
  k.b[c] = b;
  k.k[c] = T(0);
}

__global__ void finalize_mean_kernel(const double* __restrict__ partials, int64_t C, int64_t tiles,
                                     double count, double* __restrict__ mean) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double t[1];
    channel_total<1>(partials, c, tiles, t);
    mean[c] = t[0] / count;
  }
}

template <class T>
__global__ void finalize_train_kernel(const double* __restrict__ partials, int64_t C, int64_t tiles,
                                      double count, const double* __restrict__ mean, double eps,
                                      double momentum, T* save_mean, T* save_invstd, T* rm,
                                      int64_t rm_stride, T* rv, int64_t rv_stride,
                                      const T* weight, const T* bias, Consts<T> k) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double t[1];
    channel_total<1>(partials, c, tiles, t);
    const double m = mean[c], sq = t[0];
    const double invstd = 1.0 / sqrt(sq / count + eps);
    save_mean[c] = static_cast<T>(m);
    save_invstd[c] = static_cast<T>(invstd);
    if (rm != nullptr) {
      T& r_m = rm[c * rm_stride];
      T& r_v = rv[c * rv_stride];
      r_m = static_cast<T>(momentum * m + (1.0 - momentum) * static_cast<double>(r_m));
      r_v = static_cast<T>(momentum * (sq / (count - 1.0)) +
                           (1.0 - momentum) * static_cast<double>(r_v));
    }
    set_affine(k, c, m, static_cast<double>(param_or<T>(weight, c, T(1))) * invstd,
               param_or<T>(bias, c, T(0)));
  }
}

template <class T>
__global__ void finalize_eval_kernel(int64_t C, const T* rm, int64_t rm_stride, const T* rv,
                                     int64_t rv_stride, double eps, const T* weight, const T* bias,
                                     Consts<T> k) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const double m = static_cast<double>(rm[c * rm_stride]);
    const double v = static_cast<double>(rv[c * rv_stride]);
    set_affine(k, c, m, static_cast<double>(param_or<T>(weight, c, T(1))) / sqrt(v + eps),
               param_or<T>(bias, c, T(0)));
  }
}

// The CPU's backward constants. partials may be null (no sums needed: all zero).
template <class T, int K>
__global__ void finalize_backward_kernel(const double* __restrict__ partials, int64_t C,
                                         int64_t tiles, double count, bool training,
                                         bool batch_terms, const T* mean_v, const T* invstd_v,
                                         const T* weight, T* gweight, T* gbias, Consts<T> k) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < C;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    double t[K];
    channel_total<K>(partials, c, tiles, t);
    const T mean_hi = mean_v[c];
    const double m = static_cast<double>(mean_hi);
    const double invstd = static_cast<double>(invstd_v[c]);
    const double w = static_cast<double>(param_or<T>(weight, c, T(1)));
    // Training normalised with the f64 batch mean, of which mean_hi is the rounding.
    double mean = m;
    if constexpr (K == 3) {
      if (training && partials != nullptr) mean = t[2] / count;
    }
    const double sum_gy = t[0];
    const double dot = t[1] - (mean - m) * sum_gy;  // sum((x - mean) * gy)
    if (gweight != nullptr) gweight[c] = static_cast<T>(dot * invstd);
    if (gbias != nullptr) gbias[c] = static_cast<T>(sum_gy);
    k.a[c] = static_cast<T>(invstd * w);
    k.k[c] = batch_terms ? static_cast<T>(dot * invstd * invstd / count) : T(0);
    k.b[c] = batch_terms ? static_cast<T>(sum_gy / count) : T(0);
    k.hi[c] = mean_hi;
    k.lo[c] = static_cast<T>(mean - m);
  }
}

// ---- elementwise passes ----

enum MapMode { kAffine = 0, kBatch = 1, kScale = 2 };

template <class T>
struct Vec16;
template <>
struct Vec16<float> {
  using type = float4;
  static constexpr int V = 4;
};
template <>
struct Vec16<double> {
  using type = double2;
  static constexpr int V = 2;
};

template <class T>
__device__ void load16(const T* p, T (&out)[Vec16<T>::V]) {
  const typename Vec16<T>::type v = *reinterpret_cast<const typename Vec16<T>::type*>(p);
  if constexpr (Vec16<T>::V == 4) {
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
    out[0] = v.x;
    out[1] = v.y;
  }
}

template <class T>
__device__ void store16(T* p, const T (&in)[Vec16<T>::V]) {
  typename Vec16<T>::type v;
  if constexpr (Vec16<T>::V == 4) {
    v.x = in[0];
    v.y = in[1];
    v.z = in[2];
    v.w = in[3];
  } else {
    v.x = in[0];
    v.y = in[1];
  }
  *reinterpret_cast<typename Vec16<T>::type*>(p) = v;
}

template <class T, int Mode>
__device__ T map_one(T xv, T gv, int64_t c, const Consts<T>& k) {
  if constexpr (Mode == kAffine) {
    return ((xv - k.hi[c]) - k.lo[c]) * k.a[c] + k.b[c];
  } else if constexpr (Mode == kBatch) {
    return (gv - k.b[c] - ((xv - k.hi[c]) - k.lo[c]) * k.k[c]) * k.a[c];
  } else {
    return gv * k.a[c];
  }
}

// out = map(x, gy) over a contiguous (n, C, hw) tensor; x is unused for kScale, gy for kAffine.
template <class T, int Mode>
__global__ void __launch_bounds__(kThreads)
    channel_map_kernel(const T* __restrict__ x, const T* __restrict__ gy, T* __restrict__ out,
                       int64_t numel, int64_t hw, int64_t C, Consts<T> k, bool vec) {
  constexpr int V = Vec16<T>::V;
  constexpr bool kNeedX = Mode != kScale, kNeedGy = Mode != kAffine;
  const int64_t groups = (numel + V - 1) / V;
  for (int64_t g = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; g < groups;
       g += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e0 = g * V;
    const int count = static_cast<int>(imin(V, numel - e0));
    int64_t plane = e0 / hw;
    int64_t rem = e0 - plane * hw;
    int64_t c = plane % C;
    T xs[V], gs[V], os[V];
#pragma unroll
    for (int v = 0; v < V; ++v) xs[v] = gs[v] = T(0);
    if (vec && count == V) {
      if constexpr (kNeedX) load16<T>(x + e0, xs);
      if constexpr (kNeedGy) load16<T>(gy + e0, gs);
    } else {
      for (int v = 0; v < count; ++v) {
        if constexpr (kNeedX) xs[v] = x[e0 + v];
        if constexpr (kNeedGy) gs[v] = gy[e0 + v];
      }
    }
#pragma unroll
    for (int v = 0; v < V; ++v) {
      os[v] = map_one<T, Mode>(xs[v], gs[v], c, k);
      if (++rem == hw) {  // the next element starts the next (n, c) plane
        rem = 0;
        if (++c == C) c = 0;
      }
    }
    if (vec && count == V) {
      store16<T>(out + e0, os);
    } else {
      for (int v = 0; v < count; ++v) out[e0 + v] = os[v];
    }
  }
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

template <class T, int Mode>
void channel_map(const CudaKernelEnv& env, const BatchNormShape& s, const T* x, const T* gy, T* out,
                 const Consts<T>& k) {
  const int64_t numel = s.n * s.c * s.hw;
  if (numel == 0) return;
  const bool vec = aligned16(x) && aligned16(gy) && aligned16(out);
  const int64_t groups = ceil_div(numel, Vec16<T>::V);
  channel_map_kernel<T, Mode><<<grid_for(env, groups), kThreads, 0, env.stream>>>(
      x, gy, out, numel, s.hw, s.c, k, vec);
  SEG_CUDA_LAUNCH_CHECK();
}

// ---- helpers ----

template <class T>
const T* cptr(const View& v) {
  return v.defined() ? v.ptr<const T>() : nullptr;
}
template <class T>
T* mptr(const View& v) {
  return v.defined() ? v.ptr<T>() : nullptr;
}

int channel_grid(const CudaKernelEnv& env, int64_t C) { return grid_for(env, C); }

bool fits_cudnn(const BatchNormShape& s) {
  return !force_own_kernels() && s.n * s.c * s.hw <= INT_MAX;
}

// cuDNN's view of one call: x (n, c, hw, 1), the per-channel tensors (1, c, 1, 1) of the same type
// (cuDNN's rule for f32 and f64 data), and host scaling factors of that type.
struct CudnnBn {
  bool is64;
  cudnnDataType_t type;
  TensorDesc x, param;
  float f32[2] = {0.0f, 1.0f};
  double f64[2] = {0.0, 1.0};
  CudnnBn(const CudaKernelEnv& env, const BatchNormShape& s, bool double_precision)
      : is64(double_precision), type(double_precision ? CUDNN_DATA_DOUBLE : CUDNN_DATA_FLOAT) {
    SEG_CUDNN_CHECK(cudnnSetStream(env.cudnn, env.stream));
    // fits_cudnn() checked n * c * hw <= INT_MAX, so every size is an int.
    SEG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(x.get(), CUDNN_TENSOR_NCHW, type,
                                               static_cast<int>(s.n), static_cast<int>(s.c),
                                               static_cast<int>(s.hw), 1));
    SEG_CUDNN_CHECK(cudnnSetTensor4dDescriptor(param.get(), CUDNN_TENSOR_NCHW, type, 1,
                                               static_cast<int>(s.c), 1, 1));
  }
  const void* zero() const { return is64 ? static_cast<const void*>(&f64[0]) : &f32[0]; }
  const void* one() const { return is64 ? static_cast<const void*>(&f64[1]) : &f32[1]; }
};

// A per-channel vector as cuDNN wants it (contiguous): the view itself, or a gathered copy in
// `scratch` (written back with scatter() when `writeback`), or `fallback` values when undefined.
template <class T>
class ChannelVector {
 public:
  ChannelVector(const CudaKernelEnv& env, const View& v, int64_t C, double fallback)
      : env_(env), view_(v), C_(C), scratch_(env, needs_copy(v, C) ? static_cast<size_t>(C) * sizeof(T) : 0) {
    if (!v.defined()) {
      fill<T>(env, scratch_.as<T>(), C, 1, fallback);
      ptr_ = scratch_.as<T>();
    } else if (needs_copy(v, C)) {
      copy_strided<T>(env, scratch_.as<T>(), 1, v.ptr<const T>(), v.strides[0], C);
      ptr_ = scratch_.as<T>();
    } else {
      ptr_ = v.ptr<T>();
    }
  }
  T* get() const { return ptr_; }
  // Copies a gathered vector back into the strided view.
  void scatter() const {
    if (view_.defined() && ptr_ != view_.ptr<T>()) {
      copy_strided<T>(env_, view_.ptr<T>(), view_.strides[0], ptr_, 1, C_);
    }
  }

 private:
  static bool needs_copy(const View& v, int64_t C) {
    return !v.defined() || (C > 1 && v.strides[0] != 1);
  }
  const CudaKernelEnv& env_;
  View view_;
  int64_t C_;
  ScratchBuffer scratch_;
  T* ptr_ = nullptr;
};

// ---- forward, training ----

template <class T>
void forward_train_own(const CudaKernelEnv& env, const BatchNormShape& s, const View& x,
                       const View& weight, const View& bias, const View& rm, const View& rv,
                       double momentum, double eps, const View& y, const View& save_mean,
                       const View& save_invstd) {
  const double count = static_cast<double>(s.n * s.hw);
  const T* px = x.ptr<const T>();
  ScratchBuffer mean(env, static_cast<size_t>(s.c) * sizeof(double));  // (c) f64
  const TilePlan plan = plan_tiles(s, env.sm_count);
  ScratchBuffer partials(env, static_cast<size_t>(s.c * plan.tiles()) * sizeof(double));
  channel_partials(env, s, plan, SumX<T>{px}, partials);
  finalize_mean_kernel<<<channel_grid(env, s.c), kThreads, 0, env.stream>>>(
      partials.as<double>(), s.c, plan.tiles(), count, mean.as<double>());
  SEG_CUDA_LAUNCH_CHECK();
  channel_partials(env, s, plan, SumSquaredDeviation<T>{px, mean.as<double>()}, partials);
  ScratchBuffer consts(env, static_cast<size_t>(5 * s.c) * sizeof(T));
  const Consts<T> k = consts_in<T>(consts, s.c);
  const bool update = rm.defined() && rv.defined();
  finalize_train_kernel<T><<<channel_grid(env, s.c), kThreads, 0, env.stream>>>(
      partials.as<double>(), s.c, plan.tiles(), count, mean.as<double>(), eps, momentum,
      save_mean.ptr<T>(), save_invstd.ptr<T>(), update ? rm.ptr<T>() : nullptr,
      update ? rm.strides[0] : 0, update ? rv.ptr<T>() : nullptr, update ? rv.strides[0] : 0,
      cptr<T>(weight), cptr<T>(bias), k);
  SEG_CUDA_LAUNCH_CHECK();
  channel_map<T, kAffine>(env, s, px, nullptr, y.ptr<T>(), k);
}

template <class T>
void forward_train_typed(const CudaKernelEnv& env, const BatchNormShape& s, const View& x,
                         const View& weight, const View& bias, const View& rm, const View& rv,
                         double momentum, double eps, const View& y, const View& save_mean,
                         const View& save_invstd) {
  if (s.c == 0) return;
  if (s.n * s.hw == 0) {  // no values: mean 0, invstd 1 / sqrt(eps), running statistics untouched
    fill<T>(env, save_mean.ptr<T>(), s.c, 1, 0.0);
    fill<T>(env, save_invstd.ptr<T>(), s.c, 1, 1.0 / std::sqrt(eps));
    return;
  }
  if (!fits_cudnn(s)) {
    forward_train_own<T>(env, s, x, weight, bias, rm, rv, momentum, eps, y, save_mean, save_invstd);
    return;
  }
  CudnnBn bn(env, s, sizeof(T) == 8);
  ChannelVector<T> scale(env, weight, s.c, 1.0), shift(env, bias, s.c, 0.0);
  const bool update = rm.defined() && rv.defined();
  ChannelVector<T> run_mean(env, update ? rm : View{}, s.c, 0.0);
  ChannelVector<T> run_var(env, update ? rv : View{}, s.c, 1.0);
  SEG_CUDNN_CHECK(cudnnBatchNormalizationForwardTraining(
      env.cudnn, CUDNN_BATCHNORM_SPATIAL, bn.one(), bn.zero(), bn.x.get(), x.data, bn.x.get(), y.data,
      bn.param.get(), scale.get(), shift.get(), momentum, run_mean.get(), run_var.get(), eps,
      save_mean.data, save_invstd.data));
  if (update) {
    run_mean.scatter();
    run_var.scatter();
  }
}

// ---- forward, evaluation ----

template <class T>
void forward_eval_typed(const CudaKernelEnv& env, const BatchNormShape& s, const View& x,
                        const View& weight, const View& bias, const View& rm, const View& rv,
                        double eps, const View& y) {
  if (s.c == 0 || s.n * s.hw == 0) return;
  if (!fits_cudnn(s)) {
    ScratchBuffer consts(env, static_cast<size_t>(5 * s.c) * sizeof(T));
    const Consts<T> k = consts_in<T>(consts, s.c);
    finalize_eval_kernel<T><<<channel_grid(env, s.c), kThreads, 0, env.stream>>>(
        s.c, rm.ptr<const T>(), rm.strides[0], rv.ptr<const T>(), rv.strides[0], eps,
        cptr<T>(weight), cptr<T>(bias), k);
    SEG_CUDA_LAUNCH_CHECK();
    channel_map<T, kAffine>(env, s, x.ptr<const T>(), nullptr, y.ptr<T>(), k);
    return;
  }
  CudnnBn bn(env, s, sizeof(T) == 8);
  ChannelVector<T> scale(env, weight, s.c, 1.0), shift(env, bias, s.c, 0.0);
  ChannelVector<T> run_mean(env, rm, s.c, 0.0), run_var(env, rv, s.c, 1.0);
  SEG_CUDNN_CHECK(cudnnBatchNormalizationForwardInference(
      env.cudnn, CUDNN_BATCHNORM_SPATIAL, bn.one(), bn.zero(), bn.x.get(), x.data, bn.x.get(), y.data,
      bn.param.get(), scale.get(), shift.get(), run_mean.get(), run_var.get(), eps));
}

// ---- backward ----

template <class T>
void backward_own(const CudaKernelEnv& env, const BatchNormShape& s, bool training, const View& x,
                  const View& gy, const View& weight, const View& mean, const View& invstd,
                  const View& gx, const View& gweight, const View& gbias) {
  const int64_t count = s.n * s.hw;
  const bool batch_terms = training && gx.defined() && count > 0;
  const bool need_sums = (gweight.defined() || gbias.defined() || batch_terms) && count > 0;
  ScratchBuffer consts(env, static_cast<size_t>(5 * s.c) * sizeof(T));
  const Consts<T> k = consts_in<T>(consts, s.c);
  const double dcount = static_cast<double>(std::max<int64_t>(count, 1));
  const TilePlan plan = plan_tiles(s, env.sm_count);
  const int K = training ? 3 : 2;
  ScratchBuffer partials(env, need_sums ? static_cast<size_t>(s.c * plan.tiles() * K) * sizeof(double) : 0);
  const double* sums = need_sums ? partials.as<double>() : nullptr;
  const T* px = x.ptr<const T>();
  const T* pgy = gy.ptr<const T>();
  const T* pmean = mean.ptr<const T>();
  if (training) {
    if (need_sums) channel_partials(env, s, plan, BackwardTerms<T, 3>{px, pgy, pmean}, partials);
    finalize_backward_kernel<T, 3><<<channel_grid(env, s.c), kThreads, 0, env.stream>>>(
        sums, s.c, plan.tiles(), dcount, training, batch_terms, pmean, invstd.ptr<const T>(),
        cptr<T>(weight), mptr<T>(gweight), mptr<T>(gbias), k);
  } else {
    if (need_sums) channel_partials(env, s, plan, BackwardTerms<T, 2>{px, pgy, pmean}, partials);
    finalize_backward_kernel<T, 2><<<channel_grid(env, s.c), kThreads, 0, env.stream>>>(
        sums, s.c, plan.tiles(), dcount, training, batch_terms, pmean, invstd.ptr<const T>(),
        cptr<T>(weight), mptr<T>(gweight), mptr<T>(gbias), k);
  }
  SEG_CUDA_LAUNCH_CHECK();
  if (!gx.defined()) return;
  if (batch_terms) {
    channel_map<T, kBatch>(env, s, px, pgy, gx.ptr<T>(), k);
  } else {
    channel_map<T, kScale>(env, s, nullptr, pgy, gx.ptr<T>(), k);
  }
}

template <class T>
void backward_typed(const CudaKernelEnv& env, const BatchNormShape& s, bool training, const View& x,
                    const View& gy, const View& weight, const View& mean, const View& invstd,
                    double eps, const View& gx, const View& gweight, const View& gbias) {
  if (s.c == 0) return;
  if (s.n * s.hw == 0) {  // empty sums; gx is empty
    if (gweight.defined()) fill<T>(env, gweight.ptr<T>(), s.c, 1, 0.0);
    if (gbias.defined()) fill<T>(env, gbias.ptr<T>(), s.c, 1, 0.0);
    return;
  }
  if (!training || !gx.defined() || !fits_cudnn(s)) {
    backward_own<T>(env, s, training, x, gy, weight, mean, invstd, gx, gweight, gbias);
    return;
  }
  CudnnBn bn(env, s, sizeof(T) == 8);
  ChannelVector<T> scale(env, weight, s.c, 1.0);
  // Parameter gradients nobody asked for go to scratch.
  ScratchBuffer unused(env, static_cast<size_t>(2 * s.c) * sizeof(T));
  T* dscale = gweight.defined() ? gweight.ptr<T>() : unused.as<T>();
  T* dbias = gbias.defined() ? gbias.ptr<T>() : unused.as<T>() + s.c;
  SEG_CUDNN_CHECK(cudnnBatchNormalizationBackward(
      env.cudnn, CUDNN_BATCHNORM_SPATIAL, bn.one(), bn.zero(), bn.one(), bn.zero(), bn.x.get(), x.data,
      bn.x.get(), gy.data, bn.x.get(), gx.data, bn.param.get(), scale.get(), dscale, dbias, eps,
      mean.data, invstd.data));
}

// ---- dispatch ----

[[noreturn]] void unsupported(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported on CUDA (f32 and f64 only)");
}

void forward_train(const ExecContext& ctx, const BatchNormShape& shape, const View& x,
                   const View& weight, const View& bias, const View& running_mean,
                   const View& running_var, double momentum, double eps, const View& y,
                   const View& save_mean, const View& save_invstd) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32:
      forward_train_typed<float>(env, shape, x, weight, bias, running_mean, running_var, momentum,
                                 eps, y, save_mean, save_invstd);
      break;
    case DType::f64:
      forward_train_typed<double>(env, shape, x, weight, bias, running_mean, running_var, momentum,
                                  eps, y, save_mean, save_invstd);
      break;
    default: unsupported("batch_norm2d", x.dtype);
  }
}

void forward_eval(const ExecContext& ctx, const BatchNormShape& shape, const View& x,
                  const View& weight, const View& bias, const View& running_mean,
                  const View& running_var, double eps, const View& y) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32:
      forward_eval_typed<float>(env, shape, x, weight, bias, running_mean, running_var, eps, y);
      break;
    case DType::f64:
      forward_eval_typed<double>(env, shape, x, weight, bias, running_mean, running_var, eps, y);
      break;
    default: unsupported("batch_norm2d", x.dtype);
  }
}

void backward(const ExecContext& ctx, const BatchNormShape& shape, bool training, const View& x,
              const View& gy, const View& weight, const View& mean, const View& invstd,
              double eps, const View& gx, const View& gweight, const View& gbias) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (gy.dtype) {
    case DType::f32:
      backward_typed<float>(env, shape, training, x, gy, weight, mean, invstd, eps, gx, gweight, gbias);
      break;
    case DType::f64:
      backward_typed<double>(env, shape, training, x, gy, weight, mean, invstd, eps, gx, gweight, gbias);
      break;
    default: unsupported("batch_norm2d backward", gy.dtype);
  }
}

const BatchNormKernels kBatchNorm{&forward_train, &forward_eval, &backward};

}  // namespace

void register_norm_kernels(KernelRegistry& r) {
  r.set<OpId::batch_norm2d>(DeviceType::cuda, &kBatchNorm);
}

}  // namespace seg::cuda
