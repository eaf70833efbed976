// CUDA kernels of max pooling and adaptive average pooling (contiguous NCHW), forward and backward.
//
// Design notes
// - One thread per output element (forward) or per input element (backward), 1-D grid-stride
//   loops. The flat index is split into (plane, row, column) in 32-bit arithmetic when the tensor
//   is small enough for it (far cheaper divisions), else in 64-bit.
// - Backward passes gather, with no atomics: each element of gx visits the outputs whose window
//   (max pool) or bin (adaptive pool) contains it - pool_windows_containing and
//   adaptive_bins_containing in kernels/common/pool.h invert the forward's index math - and sums
//   their contributions in increasing output order, which is the order of the CPU's scatter: the
//   results equal the CPU's bit for bit and never depend on timing.
// - Max pool: a window contributes gy where its saved winner index is this element.
// - Adaptive average forward: a thread per output for small bins; a warp per output (lanes along
//   the bin's rows, a fixed shuffle tree) for large ones such as global pooling of a big map. Sums
//   accumulate in f64 like the CPU's.
// - Window, bin and comparison rules come from kernels/common/pool.h, shared with the CPU kernels.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {
namespace {

constexpr int kBlock = 256;
// Largest flat index handled in 32-bit arithmetic: with the grid stride added it stays below 2^31.
constexpr int64_t kMaxI32Work = int64_t{1} << 30;
// Bins with at least this many cells are summed by a warp instead of a thread.
constexpr int64_t kWarpBinCells = 64;

int grid_for(const CudaKernelEnv& env, int64_t work, int block) {
  const int64_t blocks = (work + block - 1) / block;
  const int per_sm = std::max(1, (env.max_threads_per_sm > 0 ? env.max_threads_per_sm : 2048) / block);
  const int64_t cap = static_cast<int64_t>(std::max(env.sm_count, 1)) * per_sm * 4;
  return static_cast<int>(std::max<int64_t>(1, std::min(blocks, cap)));
}

template <class I>
__device__ __forceinline__ I global_thread() {
  return static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x);
}
template <class I>
__device__ __forceinline__ I grid_threads() {
  return static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x);
}

// ---- max pooling ----

// y, indices (n, c, p, q) from x (n, c, h, w); one thread per output.
template <class T, class I>
__global__ void __launch_bounds__(kBlock)
    max_pool_forward_kernel(const Pool2dShape s, const T* __restrict__ x, T* __restrict__ y,
                            int32_t* __restrict__ indices, const I total) {
  const I p = static_cast<I>(s.p), q = static_cast<I>(s.q);
  for (I o = global_thread<I>(); o < total; o += grid_threads<I>()) {
    const I j = o % q;
    const I r = o / q;
    const I i = r % p;
    const I plane = r / p;
    const T* xp = x + static_cast<int64_t>(plane) * s.h * s.w;
    const PoolWindow wh = pool_window(i, s.h, s.kernel_h, s.stride_h, s.pad_h);
    const PoolWindow ww = pool_window(j, s.w, s.kernel_w, s.stride_w, s.pad_w);
    int64_t best_index = wh.begin * s.w + ww.begin;
    T best = -std::numeric_limits<T>::infinity();
    for (int64_t ih = wh.begin; ih < wh.end; ++ih) {
      for (int64_t iw = ww.begin; iw < ww.end; ++iw) {
        const int64_t index = ih * s.w + iw;
        const T v = xp[index];
        if (pool_max_replaces(v, best)) {
          best = v;
          best_index = index;
        }
      }
    }
    y[o] = best;
    indices[o] = static_cast<int32_t>(best_index);
  }
}

// gx (n, c, h, w) gathers gy over the windows whose winner is this element; one thread per input.
template <class T, class I>
__global__ void __launch_bounds__(kBlock)
    max_pool_backward_kernel(const Pool2dShape s, const T* __restrict__ gy,
                             const int32_t* __restrict__ indices, T* __restrict__ gx, const I total) {
  const I h = static_cast<I>(s.h), w = static_cast<I>(s.w);
  for (I e = global_thread<I>(); e < total; e += grid_threads<I>()) {
    const I iw = e % w;
    const I r = e / w;
    const I ih = r % h;
    const I plane = r / h;
    const PoolWindow oh = pool_windows_containing<I>(ih, static_cast<I>(s.p), static_cast<I>(s.kernel_h),
                                                     static_cast<I>(s.stride_h), static_cast<I>(s.pad_h));
    const PoolWindow ow = pool_windows_containing<I>(iw, static_cast<I>(s.q), static_cast<I>(s.kernel_w),
                                                     static_cast<I>(s.stride_w), static_cast<I>(s.pad_w));
    const int32_t me = static_cast<int32_t>(static_cast<int64_t>(ih) * s.w + iw);
    const int64_t base = static_cast<int64_t>(plane) * s.p * s.q;
    T acc = T(0);
    for (int64_t i = oh.begin; i < oh.end; ++i) {
      for (int64_t j = ow.begin; j < ow.end; ++j) {
        const int64_t o = base + i * s.q + j;
        if (indices[o] == me) acc += gy[o];
      }
    }
    gx[e] = acc;
  }
}

template <class T>
void max_pool_forward_typed(const CudaKernelEnv& env, const Pool2dShape& s, const View& x,
                            const View& y, const View& indices) {
  const int64_t total = s.n * s.c * s.p * s.q;
  if (total == 0) return;
  const int grid = grid_for(env, total, kBlock);
  if (total <= kMaxI32Work) {
    max_pool_forward_kernel<T, int32_t><<<grid, kBlock, 0, env.stream>>>(
        s, x.ptr<const T>(), y.ptr<T>(), indices.ptr<int32_t>(), static_cast<int32_t>(total));
  } else {
    max_pool_forward_kernel<T, int64_t><<<grid, kBlock, 0, env.stream>>>(
        s, x.ptr<const T>(), y.ptr<T>(), indices.ptr<int32_t>(), total);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void max_pool_backward_typed(const CudaKernelEnv& env, const Pool2dShape& s, const View& gy,
                             const View& indices, const View& gx) {
  const int64_t total = s.n * s.c * s.h * s.w;
  if (total == 0) return;
  const int grid = grid_for(env, total, kBlock);
  if (total <= kMaxI32Work) {
    max_pool_backward_kernel<T, int32_t><<<grid, kBlock, 0, env.stream>>>(
        s, gy.ptr<const T>(), indices.ptr<const int32_t>(), gx.ptr<T>(), static_cast<int32_t>(total));
  } else {
    max_pool_backward_kernel<T, int64_t><<<grid, kBlock, 0, env.stream>>>(
        s, gy.ptr<const T>(), indices.ptr<const int32_t>(), gx.ptr<T>(), total);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

[[noreturn]] void unsupported(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported by the CUDA kernel (f32, f64)");
}

void max_pool_forward(const ExecContext& ctx, const Pool2dShape& shape, const View& x, const View& y,
                      const View& indices) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32: max_pool_forward_typed<float>(env, shape, x, y, indices); break;
    case DType::f64: max_pool_forward_typed<double>(env, shape, x, y, indices); break;
    default: unsupported("max_pool2d", x.dtype);
  }
}

void max_pool_backward(const ExecContext& ctx, const Pool2dShape& shape, const View& gy,
                       const View& indices, const View& gx) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (gy.dtype) {
    case DType::f32: max_pool_backward_typed<float>(env, shape, gy, indices, gx); break;
    case DType::f64: max_pool_backward_typed<double>(env, shape, gy, indices, gx); break;
    default: unsupported("max_pool2d backward", gy.dtype);
  }
}

// ---- adaptive average pooling ----

// y (n, c, p, q): one thread per output, f64 sum over the bin.
template <class T>
__global__ void __launch_bounds__(kBlock)
    adaptive_avg_forward_kernel(const Pool2dShape s, const T* __restrict__ x, T* __restrict__ y,
                                const int64_t total) {
  for (int64_t o = global_thread<int64_t>(); o < total; o += grid_threads<int64_t>()) {
    const int64_t j = o % s.q;
    const int64_t r = o / s.q;
    const int64_t i = r % s.p;
    const int64_t plane = r / s.p;
    const T* xp = x + plane * s.h * s.w;
    const int64_t h0 = adaptive_start(i, s.h, s.p), h1 = adaptive_end(i, s.h, s.p);
    const int64_t w0 = adaptive_start(j, s.w, s.q), w1 = adaptive_end(j, s.w, s.q);
    double acc = 0.0;
    for (int64_t ih = h0; ih < h1; ++ih) {
      const T* row = xp + ih * s.w;
      for (int64_t iw = w0; iw < w1; ++iw) acc += static_cast<double>(row[iw]);
    }
    y[o] = static_cast<T>(acc / static_cast<double>((h1 - h0) * (w1 - w0)));
  }
}

// y (n, c, p, q): one warp per output (large bins), lanes along each row of the bin.
template <class T>
__global__ void __launch_bounds__(kBlock)
    adaptive_avg_forward_warp_kernel(const Pool2dShape s, const T* __restrict__ x, T* __restrict__ y,
                                     const int64_t total) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  const int64_t first = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + threadIdx.x / 32;
  for (int64_t o = first; o < total; o += warps) {  // warp-uniform
    const int64_t j = o % s.q;
    const int64_t r = o / s.q;
    const int64_t i = r % s.p;
    const int64_t plane = r / s.p;
    const T* xp = x + plane * s.h * s.w;
    const int64_t h0 = adaptive_start(i, s.h, s.p), h1 = adaptive_end(i, s.h, s.p);
    const int64_t w0 = adaptive_start(j, s.w, s.q), w1 = adaptive_end(j, s.w, s.q);
    double acc = 0.0;
    for (int64_t ih = h0; ih < h1; ++ih) {
      const T* row = xp + ih * s.w;
      for (int64_t iw = w0 + lane; iw < w1; iw += 32) acc += static_cast<double>(row[iw]);
    }
    for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_xor_sync(0xffffffffu, acc, offset);
    if (lane == 0) y[o] = static_cast<T>(acc / static_cast<double>((h1 - h0) * (w1 - w0)));
  }
}

// gx (n, c, h, w): each element gathers gy / cells of every bin containing it.
template <class T>
__global__ void __launch_bounds__(kBlock)
    adaptive_avg_backward_kernel(const Pool2dShape s, const T* __restrict__ gy, T* __restrict__ gx,
                                 const int64_t total) {
  for (int64_t e = global_thread<int64_t>(); e < total; e += grid_threads<int64_t>()) {
    const int64_t iw = e % s.w;
    const int64_t r = e / s.w;
    const int64_t ih = r % s.h;
    const int64_t plane = r / s.h;
    const PoolWindow bh = adaptive_bins_containing(ih, s.h, s.p);
    const PoolWindow bw = adaptive_bins_containing(iw, s.w, s.q);
    const T* go = gy + plane * s.p * s.q;
    T acc = T(0);
    for (int64_t i = bh.begin; i < bh.end; ++i) {
      const int64_t h0 = adaptive_start(i, s.h, s.p), h1 = adaptive_end(i, s.h, s.p);
      for (int64_t j = bw.begin; j < bw.end; ++j) {
        const int64_t w0 = adaptive_start(j, s.w, s.q), w1 = adaptive_end(j, s.w, s.q);
        acc += go[i * s.q + j] / static_cast<T>((h1 - h0) * (w1 - w0));
      }
    }
    gx[e] = acc;
  }
}

template <class T>
void adaptive_avg_forward_typed(const CudaKernelEnv& env, const Pool2dShape& s, const View& x,
                                const View& y) {
  const int64_t total = s.n * s.c * s.p * s.q;
  if (total == 0) return;
  // Bin lengths along an axis differ by at most one: the first bin's size decides.
  const int64_t cells = adaptive_end(0, s.h, s.p) * adaptive_end(0, s.w, s.q);
  if (cells >= kWarpBinCells) {
    const int grid = grid_for(env, total * 32, kBlock);
    adaptive_avg_forward_warp_kernel<T><<<grid, kBlock, 0, env.stream>>>(s, x.ptr<const T>(), y.ptr<T>(),
                                                                         total);
  } else {
    const int grid = grid_for(env, total, kBlock);
    adaptive_avg_forward_kernel<T><<<grid, kBlock, 0, env.stream>>>(s, x.ptr<const T>(), y.ptr<T>(), total);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void adaptive_avg_backward_typed(const CudaKernelEnv& env, const Pool2dShape& s, const View& gy,
                                 const View& gx) {
  const int64_t total = s.n * s.c * s.h * s.w;
  if (total == 0) return;
  const int grid = grid_for(env, total, kBlock);
  adaptive_avg_backward_kernel<T><<<grid, kBlock, 0, env.stream>>>(s, gy.ptr<const T>(), gx.ptr<T>(), total);
  SEG_CUDA_LAUNCH_CHECK();
}

void adaptive_avg_forward(const ExecContext& ctx, const Pool2dShape& shape, const View& x, const View& y) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32: adaptive_avg_forward_typed<float>(env, shape, x, y); break;
    case DType::f64: adaptive_avg_forward_typed<double>(env, shape, x, y); break;
    default: unsupported("adaptive_avg_pool2d", x.dtype);
  }
}

void adaptive_avg_backward(const ExecContext& ctx, const Pool2dShape& shape, const View& gy,
                           const View& gx) {
  const CudaKernelEnv& env = env_of(ctx);
  switch (gy.dtype) {
    case DType::f32: adaptive_avg_backward_typed<float>(env, shape, gy, gx); break;
    case DType::f64: adaptive_avg_backward_typed<double>(env, shape, gy, gx); break;
    default: unsupported("adaptive_avg_pool2d backward", gy.dtype);
  }
}

const MaxPool2dKernels kMaxPool{&max_pool_forward, &max_pool_backward};
const AdaptiveAvgPool2dKernels kAdaptiveAvgPool{&adaptive_avg_forward, &adaptive_avg_backward};

}  // namespace

void register_pool_kernels(KernelRegistry& r) {
  r.set<OpId::max_pool2d>(DeviceType::cuda, &kMaxPool);
  r.set<OpId::adaptive_avg_pool2d>(DeviceType::cuda, &kAdaptiveAvgPool);
}

}  // namespace seg::cuda
