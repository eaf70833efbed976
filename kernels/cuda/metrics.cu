// CUDA kernel of the segmentation metric: argmax over the class logits - optionally of the logits
// bilinearly upsampled to the label size on the fly - and the confusion matrix, in one kernel.
//
// Design notes
// - One thread per label pixel, 1-D grid-stride loop, 32-bit index math when the label count
//   allows. Same size: the thread reads the pixel's c logits (coalesced across the warp: 32
//   neighbouring pixels of one class plane per load). Different size: it computes the pixel's row
//   and column taps (bilinear_tap) and, per class, the 4-tap value with bilinear_blend - the
//   arithmetic of upsample_bilinear2d, bit for bit - so no upsampled logits are ever stored.
//   Ignored pixels read no logits.
// - The prediction is the first class of largest value, NaN largest (argmax_replaces, the rule of
//   the argmax op and of the CPU kernel).
// - Counting: each block keeps a c * c histogram of u32 counters in shared memory. Before its
//   atomic, a warp groups its lanes by bin (__match_any_sync) and one lane per group adds the
//   group's size: segmentation labels are dominated by a few classes, so this removes most of the
//   contention on the diagonal. At the end every non-zero counter is added to the global i64 matrix
//   with one 64-bit integer atomic. Integer sums: the result does not depend on timing. Matrices
//   too large for shared memory (c > 110) count straight into global memory.
// - Bad labels (outside [0, c), not ignore_index) are counted per thread, summed per warp and
//   added with one atomic per warp.
#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kMaxI32Work = int64_t{1} << 30;
constexpr size_t kSharedLimit = 48 * 1024;
// Pixels one block may count into its u32 histogram (a block that saw more could overflow it).
constexpr int64_t kMaxPixelsPerBlock = int64_t{1} << 31;

int grid_for(const CudaKernelEnv& env, int64_t total) {
  const int per_sm = std::max(1, (env.max_threads_per_sm > 0 ? env.max_threads_per_sm : 2048) / kBlock);
  const int64_t cap = static_cast<int64_t>(std::max(env.sm_count, 1)) * per_sm * 4;
  int64_t blocks = std::min((total + kBlock - 1) / kBlock, cap);
  blocks = std::max(blocks, (total + kMaxPixelsPerBlock - 1) / kMaxPixelsPerBlock);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, INT32_MAX)));
}

// The predicted class of label pixel (img, i, j).
template <class T, bool kResize>
__device__ __forceinline__ int predict(const ConfusionShape& s, const T* __restrict__ x, int64_t img,
                                       int64_t i, int64_t j, T scale_h, T scale_w) {
  const int64_t plane = s.h * s.w;
  const T* xi = x + img * s.c * plane;
  T best;
  int best_k = 0;
  if constexpr (!kResize) {
    const T* px = xi + i * s.w + j;
    best = px[0];
#pragma unroll 4
    for (int64_t k = 1; k < s.c; ++k) {
      const T v = px[k * plane];
      if (argmax_replaces(v, best)) {
        best = v;
        best_k = static_cast<int>(k);
      }
    }
  } else {
    const BilinearTap<T> a = bilinear_tap<T>(i, s.h, scale_h, s.align_corners);
    const BilinearTap<T> b = bilinear_tap<T>(j, s.w, scale_w, s.align_corners);
    const int64_t o00 = a.i0 * s.w + b.i0, o01 = a.i0 * s.w + b.i1;
    const int64_t o10 = a.i1 * s.w + b.i0, o11 = a.i1 * s.w + b.i1;
#pragma unroll 2
    for (int64_t k = 0; k < s.c; ++k) {
      const T* xk = xi + k * plane;
      const T r0 = bilinear_blend(b.w0, xk[o00], b.w1, xk[o01]);
      const T r1 = bilinear_blend(b.w0, xk[o10], b.w1, xk[o11]);
      const T v = bilinear_blend(a.w0, r0, a.w1, r1);
      if (k == 0 || argmax_replaces(v, best)) {
        best = v;
        best_k = static_cast<int>(k);
      }
    }
  }
  return best_k;
}

// kShared: c * c u32 counters in dynamic shared memory, merged at the end; else global atomics.
template <class T, class I, bool kResize, bool kShared>
__global__ void __launch_bounds__(kBlock)
    confusion_kernel(const ConfusionShape s, const T* __restrict__ x, const int32_t* __restrict__ labels,
                     unsigned long long* __restrict__ confusion, int32_t* __restrict__ bad_count,
                     const I total, const T scale_h, const T scale_w) {
  extern __shared__ unsigned int hist[];  // (c, c) when kShared
  const int64_t bins = s.c * s.c;
  if constexpr (kShared) {
    for (int64_t b = threadIdx.x; b < bins; b += blockDim.x) hist[b] = 0u;
    __syncthreads();
  }
  const I lane = static_cast<I>(threadIdx.x & 31u);
  const I lw = static_cast<I>(s.label_w), lh = static_cast<I>(s.label_h);
  int bad = 0;
  // The warp's 32 pixels start at `base` (warp-uniform), so every lane runs the same iterations
  // and reaches __match_any_sync together.
  for (I base = static_cast<I>(blockIdx.x) * static_cast<I>(blockDim.x) + static_cast<I>(threadIdx.x & ~31u);
       base < total; base += static_cast<I>(gridDim.x) * static_cast<I>(blockDim.x)) {
    const I idx = base + lane;
    long long bin = -1;
    if (idx < total) {
      const int64_t y = labels[idx];
      if (y != s.ignore_index) {
        if (y < 0 || y >= s.c) {
          ++bad;
        } else {
          const I j = idx % lw;
          const I r = idx / lw;
          const I i = r % lh;
          const I img = r / lh;
          bin = y * s.c + predict<T, kResize>(s, x, img, i, j, scale_h, scale_w);
        }
      }
    }
    if constexpr (kShared) {
      const unsigned peers = __match_any_sync(0xffffffffu, bin);
      if (bin >= 0 && static_cast<int>(lane) == __ffs(peers) - 1) {
        atomicAdd(&hist[bin], static_cast<unsigned int>(__popc(peers)));
      }
    } else {
      if (bin >= 0) atomicAdd(&confusion[bin], 1ull);
    }
  }
  if constexpr (kShared) {
    __syncthreads();
    for (int64_t b = threadIdx.x; b < bins; b += blockDim.x) {
      const unsigned int v = hist[b];
      if (v != 0u) atomicAdd(&confusion[b], static_cast<unsigned long long>(v));
    }
  }
  // Every thread of the (full) warp reaches this after its loop.
  const int warp_bad = __reduce_add_sync(0xffffffffu, bad);
  if ((threadIdx.x & 31u) == 0 && warp_bad != 0) atomicAdd(bad_count, warp_bad);
}

[[noreturn]] void unsupported(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported by the CUDA kernel (f32, f64)");
}

template <class T, class I, bool kResize>
void launch(const CudaKernelEnv& env, const ConfusionShape& s, const View& logits, const View& labels,
            const View& confusion, const View& bad_count, int64_t total) {
  const T scale_h = kResize ? bilinear_scale<T>(s.h, s.label_h, s.align_corners) : T(0);
  const T scale_w = kResize ? bilinear_scale<T>(s.w, s.label_w, s.align_corners) : T(0);
  const size_t smem = sizeof(unsigned int) * static_cast<size_t>(s.c * s.c);
  const int grid = grid_for(env, total);
  auto* out = reinterpret_cast<unsigned long long*>(confusion.ptr<int64_t>());
  if (smem <= kSharedLimit) {
    confusion_kernel<T, I, kResize, true><<<grid, kBlock, smem, env.stream>>>(
        s, logits.ptr<const T>(), labels.ptr<const int32_t>(), out, bad_count.ptr<int32_t>(),
        static_cast<I>(total), scale_h, scale_w);
  } else {
    confusion_kernel<T, I, kResize, false><<<grid, kBlock, 0, env.stream>>>(
        s, logits.ptr<const T>(), labels.ptr<const int32_t>(), out, bad_count.ptr<int32_t>(),
        static_cast<I>(total), scale_h, scale_w);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T>
void accumulate_typed(const CudaKernelEnv& env, const ConfusionShape& s, const View& logits,
                      const View& labels, const View& confusion, const View& bad_count) {
  const int64_t total = s.n * s.label_h * s.label_w;
  if (total == 0 || s.c == 0) return;
  const bool resize = s.h != s.label_h || s.w != s.label_w;
  if (total <= kMaxI32Work) {
    (resize ? launch<T, int32_t, true> : launch<T, int32_t, false>)(env, s, logits, labels, confusion,
                                                                   bad_count, total);
  } else {
    (resize ? launch<T, int64_t, true> : launch<T, int64_t, false>)(env, s, logits, labels, confusion,
                                                                   bad_count, total);
  }
}

void accumulate(const ExecContext& ctx, const ConfusionShape& shape, const View& logits,
                const View& labels, const View& confusion, const View& bad_count) {
  if (labels.dtype != DType::i32) unsupported("confusion_matrix labels", labels.dtype);
  const CudaKernelEnv& env = env_of(ctx);
  switch (logits.dtype) {
    case DType::f32: accumulate_typed<float>(env, shape, logits, labels, confusion, bad_count); break;
    case DType::f64: accumulate_typed<double>(env, shape, logits, labels, confusion, bad_count); break;
    default: unsupported("confusion_matrix", logits.dtype);
  }
}

const ConfusionKernels kConfusion{&accumulate};

}  // namespace

void register_metrics_kernels(KernelRegistry& r) {
  r.set<OpId::confusion_matrix>(DeviceType::cuda, &kConfusion);
}

}  // namespace seg::cuda
