// CPU optimiser step: a loop over the parameters of one call, each updated in parallel over its
// elements with the shared per-element math of kernels/common/optim.h.
//
// Floating-point contraction is off for this whole file (the pragma must come before the
// includes, so that the header's templates are compiled under it): GCC contracts `a * b + c` into
// an fma by default, even in ISO mode, and that would change results in the last bit where
// PyTorch rounds the product (see optim.h). The explicit std::fma calls still compile to the fma
// instruction, and the loops still vectorise.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "kernels/common/optim.h"

#include <stdexcept>
#include <string>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"

namespace seg::cpu {
namespace {

// One parameter of one call. The update variant is chosen once per parameter (bool_dispatch) and
// each variant's loop runs over __restrict pointers (the front-end gives every parameter, gradient
// and state buffer its own memory): with up to five streams GCC gives up vectorising when it has
// to prove they do not overlap itself. The flags come from the tag types (decltype(tag)::value).
template <class T, bool kMaximize, bool kWeightDecay, bool kMomentum, bool kNesterov, bool kFirst>
void sgd_range(const OptimScalars<T> s, T* __restrict p, const T* __restrict g, T* __restrict buf,
               int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    sgd_update<T, kMaximize, kWeightDecay, kMomentum, kNesterov, kFirst>(
        s, p[i], g[i], kMomentum ? buf + i : nullptr);
  }
}

template <class T, bool kMaximize, bool kWeightDecay, bool kCentered, bool kMomentum>
void rmsprop_range(const OptimScalars<T> s, T* __restrict p, const T* __restrict g,
                   T* __restrict square_avg, T* __restrict buf, T* __restrict grad_avg,
                   int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    rmsprop_update<T, kMaximize, kWeightDecay, kCentered, kMomentum>(
        s, p[i], g[i], square_avg[i], kMomentum ? buf + i : nullptr,
        kCentered ? grad_avg + i : nullptr);
  }
}

template <class T, bool kMaximize, bool kL2Decay, bool kDecoupled, bool kAmsgrad>
void adam_range(const OptimScalars<T> s, T* __restrict p, const T* __restrict g,
                T* __restrict exp_avg, T* __restrict exp_avg_sq, T* __restrict max_sq,
                int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    adam_update<T, kMaximize, kL2Decay, kDecoupled, kAmsgrad>(
        s, p[i], g[i], exp_avg[i], exp_avg_sq[i], kAmsgrad ? max_sq + i : nullptr);
  }
}

template <class T>
void sgd_tensor(const OptimHyper& h, const OptimScalars<T>& s, const OptimTensor& t, int64_t n) {
  T* p = t.param.ptr<T>();
  const T* g = t.grad.ptr<T>();
  T* buf = t.state0.ptr<T>();
  const SgdFlags f = sgd_flags(h);
  bool_dispatch(
      [&](auto maximize, auto weight_decay, auto momentum, auto nesterov, auto first) {
        parallel_for(n, kParallelGrain, [&](int64_t begin, int64_t end) {
          sgd_range<T, decltype(maximize)::value, decltype(weight_decay)::value,
                    decltype(momentum)::value, decltype(nesterov)::value, decltype(first)::value>(
              s, p, g, buf, begin, end);
        });
      },
      f.maximize, f.weight_decay, f.momentum, f.nesterov, f.first);
}

template <class T>
void rmsprop_tensor(const OptimHyper& h, const OptimScalars<T>& s, const OptimTensor& t,
                    int64_t n) {
  T* p = t.param.ptr<T>();
  const T* g = t.grad.ptr<T>();
  T* square_avg = t.state0.ptr<T>();
  T* buf = t.state1.ptr<T>();
  T* grad_avg = t.state2.ptr<T>();
  const RmspropFlags f = rmsprop_flags(h);
  bool_dispatch(
      [&](auto maximize, auto weight_decay, auto centered, auto momentum) {
        parallel_for(n, kParallelGrain, [&](int64_t begin, int64_t end) {
          rmsprop_range<T, decltype(maximize)::value, decltype(weight_decay)::value,
                        decltype(centered)::value, decltype(momentum)::value>(
              s, p, g, square_avg, buf, grad_avg, begin, end);
        });
      },
      f.maximize, f.weight_decay, f.centered, f.momentum);
}

template <class T>
void adam_tensor(const OptimHyper& h, const OptimScalars<T>& s, bool decoupled,
                 const OptimTensor& t, int64_t n) {
  T* p = t.param.ptr<T>();
  const T* g = t.grad.ptr<T>();
  T* exp_avg = t.state0.ptr<T>();
  T* exp_avg_sq = t.state1.ptr<T>();
  T* max_sq = t.state2.ptr<T>();
  const AdamFlags f = adam_flags(h, decoupled);
  bool_dispatch(
      [&](auto maximize, auto l2_decay, auto decoupled_decay, auto amsgrad) {
        parallel_for(n, kParallelGrain, [&](int64_t begin, int64_t end) {
          adam_range<T, decltype(maximize)::value, decltype(l2_decay)::value,
                     decltype(decoupled_decay)::value, decltype(amsgrad)::value>(
              s, p, g, exp_avg, exp_avg_sq, max_sq, begin, end);
        });
      },
      f.maximize, f.l2_decay, f.decoupled, f.amsgrad);
}

template <class T>
void step_typed(OptimKind kind, const OptimHyper& h, const OptimTensor* tensors, int64_t count) {
  const OptimScalars<T> s(h);
  for (int64_t k = 0; k < count; ++k) {
    const OptimTensor& t = tensors[k];
    const int64_t n = t.param.numel();
    if (n == 0) continue;
    switch (kind) {
      case OptimKind::sgd: sgd_tensor<T>(h, s, t, n); break;
      case OptimKind::rmsprop: rmsprop_tensor<T>(h, s, t, n); break;
      case OptimKind::adam:
      case OptimKind::adamw: adam_tensor<T>(h, s, kind == OptimKind::adamw, t, n); break;
    }
  }
}

void step(const ExecContext&, OptimKind kind, const OptimHyper& hyper, const OptimTensor* tensors,
          int64_t count) {
  if (count <= 0) return;
  check_optim_tensors(kind, hyper, tensors, count);
  const DType dtype = tensors[0].param.dtype;
  SEG_CPU_DISPATCH_FLOAT(dtype, "optimizer_step", T,
                         { step_typed<T>(kind, hyper, tensors, count); });
}

const OptimKernels kOptimKernels{step};

}  // namespace

void register_optim_kernels(KernelRegistry& r) {
  r.set<OpId::optimizer_step>(DeviceType::cpu, &kOptimKernels);
}

}  // namespace seg::cpu
