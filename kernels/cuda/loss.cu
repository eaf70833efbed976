// CUDA kernels of the triplet margin loss (PyTorch's semantics, p = 1 or 2, eps inside the norm),
// forward and backward each one fused kernel.
//
// Design notes
// - A warp per sample when d <= kWarpSampleMax, else a block per sample; the threads stride along
//   d (coalesced) and the forward's two norms reduce by a fixed shuffle tree and, for a block, a
//   fixed-order pass over the warps' partials: deterministic.
// - Arithmetic in f64 as on the CPU (the differences, the norm terms, their sums and the gradient
//   terms): a sample's distances then round to the same stored value on both backends in all but
//   astronomically rare cases, and so the hinge test - taken from the stored distances in both
//   directions (kernels/common/loss.h) - selects the same active samples.
// - The backward recomputes a - p + eps and a - n + eps instead of saving (n, d) buffers and
//   writes the three gradients (any of which may be absent) in the same sweep; inactive samples
//   get zeros from the same code (g = 0). p is a template parameter: no branch in the inner loop.
#include <algorithm>
#include <cstdint>
#include <string>

#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {
namespace {

constexpr int kBlock = 256;
constexpr int64_t kWarpSampleMax = 1024;  // samples up to this long get a warp, longer a block

int grid_for(const CudaKernelEnv& env, int64_t blocks_wanted) {
  const int per_sm = std::max(1, (env.max_threads_per_sm > 0 ? env.max_threads_per_sm : 2048) / kBlock);
  const int64_t cap = static_cast<int64_t>(std::max(env.sm_count, 1)) * per_sm * 4;
  return static_cast<int>(std::max<int64_t>(1, std::min(blocks_wanted, cap)));
}

// Sums of (x, y) over the TPS threads of a sample (a warp, or the block when TPS == kBlock); every
// thread gets them, in a fixed order. smem: 2 * kBlock / 32 doubles.
template <int TPS>
__device__ __forceinline__ void sample_sum2(double& x, double& y, double* smem) {
  for (int offset = 16; offset > 0; offset /= 2) {
    x += __shfl_xor_sync(0xffffffffu, x, offset);
    y += __shfl_xor_sync(0xffffffffu, y, offset);
  }
  if constexpr (TPS == kBlock) {
    constexpr int kWarps = kBlock / 32;
    const int warp = static_cast<int>(threadIdx.x) / 32;
    __syncthreads();  // the previous sample's readers are done with smem
    if ((threadIdx.x & 31) == 0) {
      smem[warp] = x;
      smem[kWarps + warp] = y;
    }
    __syncthreads();
    x = smem[0];
    y = smem[kWarps];
    for (int i = 1; i < kWarps; ++i) {
      x += smem[i];
      y += smem[kWarps + i];
    }
  } else {
    static_assert(TPS == 32, "a sample is a warp or the whole block");
  }
}

// loss, dist_ap, dist_an (n) from anchor, positive, negative (n, d).
template <class T, int P, int TPS>
__global__ void __launch_bounds__(kBlock)
    triplet_forward_kernel(const TripletShape s, const T* __restrict__ a, const T* __restrict__ pos,
                           const T* __restrict__ neg, T* __restrict__ loss, T* __restrict__ dist_ap,
                           T* __restrict__ dist_an) {
  __shared__ double smem[2 * kBlock / 32];
  constexpr int kSamplesPerBlock = kBlock / TPS;
  const int lane = static_cast<int>(threadIdx.x) % TPS;
  const int slot = static_cast<int>(threadIdx.x) / TPS;
  const int64_t d = s.d;
  const double eps = s.eps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kSamplesPerBlock + slot; i < s.n;
       i += static_cast<int64_t>(gridDim.x) * kSamplesPerBlock) {  // uniform over the sample's threads
    const int64_t off = i * d;
    double sap = 0.0, san = 0.0;
    for (int64_t k = lane; k < d; k += TPS) {
      const double ak = static_cast<double>(a[off + k]);
      sap += triplet_norm_term(ak - static_cast<double>(pos[off + k]) + eps, P);
      san += triplet_norm_term(ak - static_cast<double>(neg[off + k]) + eps, P);
    }
    sample_sum2<TPS>(sap, san, smem);
    if (lane == 0) {
      const T dap = static_cast<T>(triplet_norm_finish(sap, P));
      const T dan = static_cast<T>(triplet_norm_finish(san, P));
      dist_ap[i] = dap;
      dist_an[i] = dan;
      const double h = triplet_hinge(static_cast<double>(dap), static_cast<double>(dan), s.margin);
      loss[i] = static_cast<T>(h < 0.0 ? 0.0 : h);  // clamp_min: NaN stays NaN
    }
  }
}

// d ||t||_p / dt as sign(t) (p = 1) or t / dist (p = 2, 0 at dist 0 through inv_dist = 0): the
// CPU's expression.
template <int P>
__device__ __forceinline__ double norm_grad(double t, double inv_dist) {
  if constexpr (P == 1) {
    return static_cast<double>(t > 0.0) - static_cast<double>(t < 0.0);
  } else {
    return t * inv_dist;
  }
}

template <class T, int P, int TPS>
__global__ void __launch_bounds__(kBlock)
    triplet_backward_kernel(const TripletShape s, const T* __restrict__ a, const T* __restrict__ pos,
                            const T* __restrict__ neg, const T* __restrict__ dist_ap,
                            const T* __restrict__ dist_an, const T* __restrict__ scale,
                            const bool scale_per_sample, T* __restrict__ ga, T* __restrict__ gp,
                            T* __restrict__ gn) {
  constexpr int kSamplesPerBlock = kBlock / TPS;
  const int lane = static_cast<int>(threadIdx.x) % TPS;
  const int slot = static_cast<int>(threadIdx.x) / TPS;
  const int64_t d = s.d;
  const double eps = s.eps;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * kSamplesPerBlock + slot; i < s.n;
       i += static_cast<int64_t>(gridDim.x) * kSamplesPerBlock) {
    const double dap = static_cast<double>(dist_ap[i]);
    const double dan = static_cast<double>(dist_an[i]);
    const double g = triplet_active(triplet_hinge(dap, dan, s.margin))
                         ? static_cast<double>(scale[scale_per_sample ? i : 0])
                         : 0.0;
    const double inv_ap = dap == 0.0 ? 0.0 : 1.0 / dap;
    const double inv_an = dan == 0.0 ? 0.0 : 1.0 / dan;
    const int64_t off = i * d;
    // loss = d(a, p) - d(a, n) + margin: d/da = u_ap - u_an, d/dp = -u_ap, d/dn = u_an.
    for (int64_t k = lane; k < d; k += TPS) {
      const double ak = static_cast<double>(a[off + k]);
      const double u_ap = g * norm_grad<P>(ak - static_cast<double>(pos[off + k]) + eps, inv_ap);
      const double u_an = g * norm_grad<P>(ak - static_cast<double>(neg[off + k]) + eps, inv_an);
      if (ga) ga[off + k] = static_cast<T>(u_ap - u_an);
      if (gp) gp[off + k] = static_cast<T>(-u_ap);
      if (gn) gn[off + k] = static_cast<T>(u_an);
    }
  }
}

[[noreturn]] void unsupported(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported by the CUDA kernel (f32, f64)");
}

template <class T, int P>
void forward_p(const CudaKernelEnv& env, const TripletShape& s, const View& anchor, const View& positive,
               const View& negative, const View& loss, const View& dist_ap, const View& dist_an) {
  const T* pa = anchor.ptr<const T>();
  const T* pp = positive.ptr<const T>();
  const T* pn = negative.ptr<const T>();
  if (s.d <= kWarpSampleMax) {
    triplet_forward_kernel<T, P, 32><<<grid_for(env, (s.n + 7) / 8), kBlock, 0, env.stream>>>(
        s, pa, pp, pn, loss.ptr<T>(), dist_ap.ptr<T>(), dist_an.ptr<T>());
  } else {
    triplet_forward_kernel<T, P, kBlock><<<grid_for(env, s.n), kBlock, 0, env.stream>>>(
        s, pa, pp, pn, loss.ptr<T>(), dist_ap.ptr<T>(), dist_an.ptr<T>());
  }
  SEG_CUDA_LAUNCH_CHECK();
}

template <class T, int P>
void backward_p(const CudaKernelEnv& env, const TripletShape& s, const View& anchor,
                const View& positive, const View& negative, const View& dist_ap, const View& dist_an,
                const View& scale, const View& ga, const View& gp, const View& gn) {
  const T* pa = anchor.ptr<const T>();
  const T* pp = positive.ptr<const T>();
  const T* pn = negative.ptr<const T>();
  T* oa = ga.defined() ? ga.ptr<T>() : nullptr;
  T* op = gp.defined() ? gp.ptr<T>() : nullptr;
  T* on = gn.defined() ? gn.ptr<T>() : nullptr;
  const bool per_sample = scale.numel() != 1;
  if (s.d <= kWarpSampleMax) {
    triplet_backward_kernel<T, P, 32><<<grid_for(env, (s.n + 7) / 8), kBlock, 0, env.stream>>>(
        s, pa, pp, pn, dist_ap.ptr<const T>(), dist_an.ptr<const T>(), scale.ptr<const T>(), per_sample,
        oa, op, on);
  } else {
    triplet_backward_kernel<T, P, kBlock><<<grid_for(env, s.n), kBlock, 0, env.stream>>>(
        s, pa, pp, pn, dist_ap.ptr<const T>(), dist_an.ptr<const T>(), scale.ptr<const T>(), per_sample,
        oa, op, on);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

void triplet_forward(const ExecContext& ctx, const TripletShape& shape, const View& anchor,
                     const View& positive, const View& negative, const View& loss,
                     const View& dist_ap, const View& dist_an) {
  if (shape.n == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  const bool l1 = shape.p == 1;
  switch (anchor.dtype) {
    case DType::f32:
      (l1 ? forward_p<float, 1> : forward_p<float, 2>)(env, shape, anchor, positive, negative, loss,
                                                      dist_ap, dist_an);
      break;
    case DType::f64:
      (l1 ? forward_p<double, 1> : forward_p<double, 2>)(env, shape, anchor, positive, negative, loss,
                                                        dist_ap, dist_an);
      break;
    default: unsupported("triplet_margin_loss", anchor.dtype);
  }
}

void triplet_backward(const ExecContext& ctx, const TripletShape& shape, const View& anchor,
                      const View& positive, const View& negative, const View& dist_ap,
                      const View& dist_an, const View& scale, const View& ga, const View& gp,
                      const View& gn) {
  if (shape.n == 0 || shape.d == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  const bool l1 = shape.p == 1;
  switch (anchor.dtype) {
    case DType::f32:
      (l1 ? backward_p<float, 1> : backward_p<float, 2>)(env, shape, anchor, positive, negative, dist_ap,
                                                        dist_an, scale, ga, gp, gn);
      break;
    case DType::f64:
      (l1 ? backward_p<double, 1> : backward_p<double, 2>)(env, shape, anchor, positive, negative,
                                                          dist_ap, dist_an, scale, ga, gp, gn);
      break;
    default: unsupported("triplet_margin_loss backward", anchor.dtype);
  }
}

const TripletKernels kTriplet{&triplet_forward, &triplet_backward};

}  // namespace

void register_loss_kernels(KernelRegistry& r) {
  r.set<OpId::triplet_margin_loss>(DeviceType::cuda, &kTriplet);
}

}  // namespace seg::cuda
