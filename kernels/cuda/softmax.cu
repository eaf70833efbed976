// CUDA kernels of softmax / log-softmax along one dim, and of cross entropy fused with log-softmax
// over the class dim of (n, c, inner) logits.
//
// Design notes
// - Data is (outer, dim, inner), contiguous. With inner == 1 a row is contiguous: a warp (dim <=
//   kWarpRowMax) or a block per row, lanes striding along it, reductions by a fixed shuffle tree
//   (and, for a block, a fixed-order pass over the warps' partials): deterministic. With inner > 1
//   one thread per (outer, inner) position loops over the dim: the threads of a warp read 32
//   neighbouring positions of each class plane, so every load is coalesced for (n, c, h * w).
// - Every reduction is max-subtracted, with the CPU's max rule (v > m ? v : m from the first
//   element, so a NaN counts only in first place; a NaN anywhere still poisons the sum). Sums of
//   exponentials accumulate in the storage type (f32 or f64) - the CPU accumulates f32 in f64; the
//   difference is a few ulps of the sum, far inside the parity tolerance. expf/logf are the
//   accurate (non-intrinsic) versions.
// - Cross entropy never materialises the softmax. Forward: per position the max, the sum of
//   exponentials, lse = max + log(sum), then loss = w[y] * (lse - x[y]) and wsum = w[y], all in one
//   kernel; a second read of the position's logits comes from L1/L2. Bad labels are counted per
//   thread, summed per warp (__reduce_add_sync) and added with one integer atomic per warp.
//   Backward: one pass from the saved lse, glogits = scale * w[y] * (exp(x - lse) - onehot(y)),
//   exactly 0 at ignored positions; `scale` is a device scalar or per position (no host read).
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
constexpr int64_t kWarpRowMax = 1024;  // contiguous rows up to this long get a warp, longer a block

int grid_for(const CudaKernelEnv& env, int64_t blocks_wanted) {
  const int per_sm = std::max(1, (env.max_threads_per_sm > 0 ? env.max_threads_per_sm : 2048) / kBlock);
  const int64_t cap = static_cast<int64_t>(std::max(env.sm_count, 1)) * per_sm * 4;
  return static_cast<int>(std::max<int64_t>(1, std::min(blocks_wanted, cap)));
}

int64_t blocks_for(int64_t threads) { return (threads + kBlock - 1) / kBlock; }

__device__ __forceinline__ float dev_exp(float v) { return expf(v); }
__device__ __forceinline__ double dev_exp(double v) { return exp(v); }
__device__ __forceinline__ float dev_log(float v) { return logf(v); }
__device__ __forceinline__ double dev_log(double v) { return log(v); }

// The CPU's max rule.
template <class T>
__device__ __forceinline__ T max_rule(T m, T v) {
  return v > m ? v : m;
}

struct MaxOp {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return max_rule(a, b);
  }
};
struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};

// Reduction over the TPR threads of one row (a warp, or the whole block when TPR == kBlock); every
// thread gets the result. The order is fixed. `smem` holds kBlock / 32 values (block case only).
template <int TPR, class A, class Op>
__device__ __forceinline__ A row_reduce(A v, Op op, A* smem) {
  for (int offset = 16; offset > 0; offset /= 2) v = op(v, __shfl_xor_sync(0xffffffffu, v, offset));
  if constexpr (TPR == 32) {
    return v;
  } else {
    static_assert(TPR == kBlock, "a row is a warp or the whole block");
    const int warp = static_cast<int>(threadIdx.x) / 32;
    __syncthreads();  // the previous reduction's readers are done with smem
    if ((threadIdx.x & 31) == 0) smem[warp] = v;
    __syncthreads();
    A r = smem[0];
    for (int i = 1; i < TPR / 32; ++i) r = op(r, smem[i]);
    return r;
  }
}

// ---- softmax, rows (inner == 1) ----

// y rows (rows, dim) from x; TPR threads per row, kBlock / TPR rows per block.
template <class T, int TPR>
__global__ void __launch_bounds__(kBlock)
    softmax_rows_kernel(const T* __restrict__ x, T* __restrict__ y, const int64_t rows,
                        const int64_t dim, const bool log) {
  __shared__ T smem[kBlock / 32];
  constexpr int kRowsPerBlock = kBlock / TPR;
  const int lane = static_cast<int>(threadIdx.x) % TPR;
  const int slot = static_cast<int>(threadIdx.x) / TPR;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + slot; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {  // uniform over the row's threads
    const T* xr = x + row * dim;
    T* yr = y + row * dim;
    T mx = xr[0];
    for (int64_t d = lane; d < dim; d += TPR) mx = max_rule(mx, xr[d]);
    mx = row_reduce<TPR>(mx, MaxOp(), smem);
    T sum = T(0);
    for (int64_t d = lane; d < dim; d += TPR) sum += dev_exp(xr[d] - mx);
    sum = row_reduce<TPR>(sum, SumOp(), smem);
    if (log) {
      const T log_sum = dev_log(sum);
      for (int64_t d = lane; d < dim; d += TPR) yr[d] = (xr[d] - mx) - log_sum;
    } else {
      const T inv = T(1) / sum;
      for (int64_t d = lane; d < dim; d += TPR) yr[d] = dev_exp(xr[d] - mx) * inv;
    }
  }
}

// gx rows from y and gy: softmax y * (gy - sum(gy * y)); log_softmax gy - exp(y) * sum(gy).
template <class T, int TPR>
__global__ void __launch_bounds__(kBlock)
    softmax_backward_rows_kernel(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                 const int64_t rows, const int64_t dim, const bool log) {
  __shared__ T smem[kBlock / 32];
  constexpr int kRowsPerBlock = kBlock / TPR;
  const int lane = static_cast<int>(threadIdx.x) % TPR;
  const int slot = static_cast<int>(threadIdx.x) / TPR;
  for (int64_t row = static_cast<int64_t>(blockIdx.x) * kRowsPerBlock + slot; row < rows;
       row += static_cast<int64_t>(gridDim.x) * kRowsPerBlock) {
    const T* yr = y + row * dim;
    const T* gr = gy + row * dim;
    T* out = gx + row * dim;
    T acc = T(0);
    if (log) {
      for (int64_t d = lane; d < dim; d += TPR) acc += gr[d];
    } else {
      for (int64_t d = lane; d < dim; d += TPR) acc += gr[d] * yr[d];
    }
    acc = row_reduce<TPR>(acc, SumOp(), smem);
    if (log) {
      for (int64_t d = lane; d < dim; d += TPR) out[d] = gr[d] - dev_exp(yr[d]) * acc;
    } else {
      for (int64_t d = lane; d < dim; d += TPR) out[d] = yr[d] * (gr[d] - acc);
    }
  }
}

// ---- softmax, columns (inner > 1): one thread per (outer, inner) position ----

template <class T>
__global__ void __launch_bounds__(kBlock)
    softmax_cols_kernel(const T* __restrict__ x, T* __restrict__ y, const int64_t outer,
                        const int64_t dim, const int64_t inner, const bool log) {
  const int64_t positions = outer * inner;
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < positions;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = pos / inner, i = pos - o * inner;
    const T* px = x + o * dim * inner + i;
    T* py = y + o * dim * inner + i;
    T mx = px[0];
#pragma unroll 4
    for (int64_t d = 1; d < dim; ++d) mx = max_rule(mx, px[d * inner]);
    T sum = T(0);
#pragma unroll 4
    for (int64_t d = 0; d < dim; ++d) sum += dev_exp(px[d * inner] - mx);
    if (log) {
      const T log_sum = dev_log(sum);
#pragma unroll 4
      for (int64_t d = 0; d < dim; ++d) py[d * inner] = (px[d * inner] - mx) - log_sum;
    } else {
      const T inv = T(1) / sum;
#pragma unroll 4
      for (int64_t d = 0; d < dim; ++d) py[d * inner] = dev_exp(px[d * inner] - mx) * inv;
    }
  }
}

template <class T>
__global__ void __launch_bounds__(kBlock)
    softmax_backward_cols_kernel(const T* __restrict__ y, const T* __restrict__ gy, T* __restrict__ gx,
                                 const int64_t outer, const int64_t dim, const int64_t inner,
                                 const bool log) {
  const int64_t positions = outer * inner;
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < positions;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t o = pos / inner, i = pos - o * inner;
    const int64_t base = o * dim * inner + i;
    T acc = T(0);
    if (log) {
#pragma unroll 4
      for (int64_t d = 0; d < dim; ++d) acc += gy[base + d * inner];
#pragma unroll 4
      for (int64_t d = 0; d < dim; ++d) {
        const int64_t e = base + d * inner;
        gx[e] = gy[e] - dev_exp(y[e]) * acc;
      }
    } else {
#pragma unroll 4
      for (int64_t d = 0; d < dim; ++d) acc += gy[base + d * inner] * y[base + d * inner];
#pragma unroll 4
      for (int64_t d = 0; d < dim; ++d) {
        const int64_t e = base + d * inner;
        gx[e] = y[e] * (gy[e] - acc);
      }
    }
  }
}

[[noreturn]] void unsupported(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported by the CUDA kernel (f32, f64)");
}

template <class T>
void softmax_forward_typed(const CudaKernelEnv& env, const SoftmaxShape& s, bool log, const View& x,
                           const View& y) {
  if (s.outer * s.dim * s.inner == 0) return;
  const T* px = x.ptr<const T>();
  T* py = y.ptr<T>();
  if (s.inner == 1) {
    if (s.dim <= kWarpRowMax) {
      softmax_rows_kernel<T, 32><<<grid_for(env, (s.outer + 7) / 8), kBlock, 0, env.stream>>>(
          px, py, s.outer, s.dim, log);
    } else {
      softmax_rows_kernel<T, kBlock><<<grid_for(env, s.outer), kBlock, 0, env.stream>>>(px, py, s.outer,
                                                                                        s.dim, log);
    }
  } else {
    softmax_cols_kernel<T><<<grid_for(env, blocks_for(s.outer * s.inner)), kBlock, 0, env.stream>>>(
        px, py, s.outer, s.dim, s.inner, log);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void softmax_backward_typed(const CudaKernelEnv& env, const SoftmaxShape& s, bool log, const View& y,
                            const View& gy, const View& gx) {
  if (s.outer * s.dim * s.inner == 0) return;
  const T* py = y.ptr<const T>();
  const T* pg = gy.ptr<const T>();
  T* out = gx.ptr<T>();
  if (s.inner == 1) {
    if (s.dim <= kWarpRowMax) {
      softmax_backward_rows_kernel<T, 32><<<grid_for(env, (s.outer + 7) / 8), kBlock, 0, env.stream>>>(
          py, pg, out, s.outer, s.dim, log);
    } else {
      softmax_backward_rows_kernel<T, kBlock><<<grid_for(env, s.outer), kBlock, 0, env.stream>>>(
          py, pg, out, s.outer, s.dim, log);
    }
  } else {
    softmax_backward_cols_kernel<T><<<grid_for(env, blocks_for(s.outer * s.inner)), kBlock, 0, env.stream>>>(
        py, pg, out, s.outer, s.dim, s.inner, log);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

void softmax_forward(const ExecContext& ctx, const SoftmaxShape& shape, bool log, const View& x,
                     const View& y) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32: softmax_forward_typed<float>(env, shape, log, x, y); break;
    case DType::f64: softmax_forward_typed<double>(env, shape, log, x, y); break;
    default: unsupported("softmax", x.dtype);
  }
}

void softmax_backward(const ExecContext& ctx, const SoftmaxShape& shape, bool log, const View& y,
                      const View& gy, const View& gx) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (y.dtype) {
    case DType::f32: softmax_backward_typed<float>(env, shape, log, y, gy, gx); break;
    case DType::f64: softmax_backward_typed<double>(env, shape, log, y, gy, gx); break;
    default: unsupported("softmax backward", y.dtype);
  }
}

// ---- cross entropy ----

// Per position of (n, inner): loss, wsum, lse; bad labels counted into bad_count.
template <class T>
__global__ void __launch_bounds__(kBlock)
    cross_entropy_forward_kernel(const CrossEntropyShape s, const T* __restrict__ x,
                                 const int32_t* __restrict__ labels, const T* __restrict__ weight,
                                 T* __restrict__ loss, T* __restrict__ wsum, T* __restrict__ lse,
                                 int32_t* __restrict__ bad_count) {
  const int64_t c = s.c, inner = s.inner;
  const int64_t positions = s.n * inner;
  int bad = 0;
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < positions;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t y = labels[pos];
    const LabelKind kind = cross_entropy_label_kind(y, s);
    if (kind == LabelKind::bad) ++bad;
    if (c == 0) {  // no classes: nothing to normalise
      loss[pos] = T(0);
      wsum[pos] = T(0);
      lse[pos] = -std::numeric_limits<T>::infinity();
      continue;
    }
    const int64_t o = pos / inner, i = pos - o * inner;
    const T* px = x + o * c * inner + i;
    T mx = px[0];
#pragma unroll 4
    for (int64_t k = 1; k < c; ++k) mx = max_rule(mx, px[k * inner]);
    T sum = T(0);
#pragma unroll 4
    for (int64_t k = 0; k < c; ++k) sum += dev_exp(px[k * inner] - mx);
    const T l = mx + dev_log(sum);
    lse[pos] = l;
    if (kind == LabelKind::valid) {
      const T w = weight ? weight[y] : T(1);
      loss[pos] = w * (l - px[static_cast<int64_t>(y) * inner]);
      wsum[pos] = w;
    } else {
      loss[pos] = T(0);
      wsum[pos] = T(0);
    }
  }
  // Every thread of the (full) warp reaches this after its loop.
  const int warp_bad = __reduce_add_sync(0xffffffffu, bad);
  if ((threadIdx.x & 31) == 0 && warp_bad != 0) atomicAdd(bad_count, warp_bad);
}

// glogits = coef * (exp(x - lse) - onehot(y)), coef = scale * w[y] (0 where not a valid label).
template <class T>
__global__ void __launch_bounds__(kBlock)
    cross_entropy_backward_kernel(const CrossEntropyShape s, const T* __restrict__ x,
                                  const int32_t* __restrict__ labels, const T* __restrict__ weight,
                                  const T* __restrict__ lse, const T* __restrict__ scale,
                                  const bool scale_per_position, T* __restrict__ gx) {
  const int64_t c = s.c, inner = s.inner;
  const int64_t positions = s.n * inner;
  for (int64_t pos = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; pos < positions;
       pos += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t y = labels[pos];
    int64_t hot = -1;  // the label's class, -1 where ignored (or bad)
    T coef = T(0);
    if (cross_entropy_label_kind(y, s) == LabelKind::valid) {
      hot = y;
      const T sc = scale[scale_per_position ? pos : 0];
      coef = weight ? sc * weight[y] : sc;
    }
    const T l = lse[pos];
    const int64_t o = pos / inner, i = pos - o * inner;
    const int64_t base = o * c * inner + i;
#pragma unroll 4
    for (int64_t k = 0; k < c; ++k) {
      const int64_t e = base + k * inner;
      const T onehot = k == hot ? T(1) : T(0);
      gx[e] = coef * (dev_exp(x[e] - l) - onehot);
    }
  }
}

template <class T>
void cross_entropy_forward_typed(const CudaKernelEnv& env, const CrossEntropyShape& s, const View& logits,
                                 const View& labels, const View& weight, const View& loss,
                                 const View& wsum, const View& lse, const View& bad_count) {
  const int64_t positions = s.n * s.inner;
  if (positions == 0) return;
  cross_entropy_forward_kernel<T><<<grid_for(env, blocks_for(positions)), kBlock, 0, env.stream>>>(
      s, logits.ptr<const T>(), labels.ptr<const int32_t>(),
      weight.defined() ? weight.ptr<const T>() : nullptr, loss.ptr<T>(), wsum.ptr<T>(), lse.ptr<T>(),
      bad_count.ptr<int32_t>());
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void cross_entropy_backward_typed(const CudaKernelEnv& env, const CrossEntropyShape& s,
                                  const View& logits, const View& labels, const View& weight,
                                  const View& lse, const View& scale, const View& glogits) {
  const int64_t positions = s.n * s.inner;
  if (positions == 0 || s.c == 0) return;
  cross_entropy_backward_kernel<T><<<grid_for(env, blocks_for(positions)), kBlock, 0, env.stream>>>(
      s, logits.ptr<const T>(), labels.ptr<const int32_t>(),
      weight.defined() ? weight.ptr<const T>() : nullptr, lse.ptr<const T>(), scale.ptr<const T>(),
      scale.numel() != 1, glogits.ptr<T>());
  SEG_CUDA_LAUNCH_CHECK();
}

void cross_entropy_forward(const ExecContext& ctx, const CrossEntropyShape& shape, const View& logits,
                           const View& labels, const View& weight, const View& loss,
                           const View& wsum, const View& lse, const View& bad_count) {
  if (labels.dtype != DType::i32) unsupported("cross_entropy labels", labels.dtype);
  const CudaKernelEnv& env = env_of(ctx);
  switch (logits.dtype) {
    case DType::f32:
      cross_entropy_forward_typed<float>(env, shape, logits, labels, weight, loss, wsum, lse, bad_count);
      break;
    case DType::f64:
      cross_entropy_forward_typed<double>(env, shape, logits, labels, weight, loss, wsum, lse, bad_count);
      break;
    default: unsupported("cross_entropy", logits.dtype);
  }
}

void cross_entropy_backward(const ExecContext& ctx, const CrossEntropyShape& shape, const View& logits,
                            const View& labels, const View& weight, const View& lse,
                            const View& scale, const View& glogits) {
  if (labels.dtype != DType::i32) unsupported("cross_entropy backward labels", labels.dtype);
  const CudaKernelEnv& env = env_of(ctx);
  switch (logits.dtype) {
    case DType::f32:
      cross_entropy_backward_typed<float>(env, shape, logits, labels, weight, lse, scale, glogits);
      break;
    case DType::f64:
      cross_entropy_backward_typed<double>(env, shape, logits, labels, weight, lse, scale, glogits);
      break;
    default: unsupported("cross_entropy backward", logits.dtype);
  }
}

const SoftmaxKernels kSoftmax{&softmax_forward, &softmax_backward};
const CrossEntropyKernels kCrossEntropy{&cross_entropy_forward, &cross_entropy_backward};

}  // namespace

void register_softmax_kernels(KernelRegistry& r) {
  constexpr DeviceType cuda = DeviceType::cuda;
  r.set<OpId::softmax>(cuda, &kSoftmax);
  r.set<OpId::log_softmax>(cuda, &kSoftmax);
  r.set<OpId::cross_entropy>(cuda, &kCrossEntropy);
}

}  // namespace seg::cuda
