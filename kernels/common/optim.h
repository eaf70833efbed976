// Optimiser updates: per-element math shared by the CPU loop and the CUDA multi-tensor kernels.
//
// Design notes
// - Each update follows PyTorch 1.13's single-tensor implementation (torch/optim/{sgd,rmsprop,adam,
//   adamw}.py, the default when `foreach` is not set) op for op, in the parameter's type T, so that
//   f32 trajectories match PyTorch's bit for bit where the rounding is the same:
//   * every hyperparameter is rounded to T first, as ATen converts a Python float scalar to the
//     tensor's dtype; scalars PyTorch computes in Python (1 - beta, lr / bias_correction1,
//     1 - lr * weight_decay, sqrt(bias_correction2)) are computed in double here, then rounded;
//   * `x.add(y, alpha=a)` is one fused multiply-add, fma(y, a, x), and
//     `x.addcmul(y, z, value=v)` is fma(v * y, z, x): that is what ATen's AVX2 kernels compute
//     (vec::fmadd, and GCC contracting `self + v * y * z`); `x.addcdiv(y, z, value=v)` is
//     x + (v * y) / z, unfused;
//   * `mul_`, `/`, `sqrt` and the plain adds round once each.
//   The products that PyTorch rounds must stay rounded: a compiler contracting `a * b + c` into an
//   fma would change results in the last bit. Host code therefore includes this header only in a
//   file compiled with FP contraction off (kernels/cpu/optim.cpp sets it with a pragma); on a CUDA
//   device the rn_* helpers use the __fmul_rn-style intrinsics, which nvcc never contracts.
// - PyTorch on a CPU without AVX2 (ATen's "default" capability) does not fuse: its results then
//   differ from these by an ulp here and there. The reference script pins ATen to AVX2.
// - The options that change the shape of an update (maximize, weight decay, momentum, ...) are
//   template flags: a kernel picks the instantiation once per call with bool_dispatch, so the
//   per-element loop has no branches (on the CPU it vectorises; on a GPU nothing diverges).
// - Memory: params, grads and state are distinct buffers; the CPU loops rely on it (__restrict).
#pragma once

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>

#include "kernels/common/types.h"

namespace seg {

enum class OptimKind : uint8_t { sgd, rmsprop, adam, adamw };

constexpr const char* optim_kind_name(OptimKind k) {
  switch (k) {
    case OptimKind::sgd: return "SGD";
    case OptimKind::rmsprop: return "RMSprop";
    case OptimKind::adam: return "Adam";
    case OptimKind::adamw: return "AdamW";
  }
  return "?";
}

// Hyperparameters of one step for one parameter group. Fields unused by a kind are ignored.
struct OptimHyper {
  double lr = 0.0;
  double weight_decay = 0.0;
  // sgd
  double momentum = 0.0;
  double dampening = 0.0;
  bool nesterov = false;
  // rmsprop (momentum above is shared)
  double alpha = 0.99;
  bool centered = false;
  // adam / adamw
  double beta1 = 0.9, beta2 = 0.999;
  bool amsgrad = false;
  // shared
  double eps = 1e-8;
  bool maximize = false;
  // Step bookkeeping, filled by the optimiser for the parameters of one kernel call: `first` is
  // true on SGD's first momentum update (the buffer starts as the gradient); adam's bias
  // corrections are 1 - beta^step with the parameter's step count after the increment.
  bool first = false;
  double bias_correction1 = 1.0;
  double bias_correction2 = 1.0;
};

// One parameter and its state. Unused state views are undefined. All contiguous, same numel and
// dtype (f32 or f64), none overlapping another.
//   sgd: state0 = momentum buffer (when momentum != 0)
//   rmsprop: state0 = square_avg, state1 = momentum buffer (momentum > 0), state2 = grad_avg
//            (centered)
//   adam/adamw: state0 = exp_avg, state1 = exp_avg_sq, state2 = max_exp_avg_sq (amsgrad)
struct OptimTensor {
  View param, grad, state0, state1, state2;
};

struct OptimKernels {
  // Updates `count` parameters in place with one step of `kind`; `hyper` applies to all of them
  // (the optimiser makes one call per group of parameters with the same step bookkeeping).
  void (*step)(const ExecContext& ctx, OptimKind kind, const OptimHyper& hyper,
               const OptimTensor* tensors, int64_t count);
};

// The checks both backends make before a step (host code). The optimiser guarantees them; a
// violation is a bug in the caller, reported naming the tensor's index in the call. An empty
// parameter (numel 0) has no data, so it may come with undefined grad and state views: it is
// skipped by the update and needs only the call's dtype.
inline void check_optim_tensors(OptimKind kind, const OptimHyper& h, const OptimTensor* tensors,
                                int64_t count) {
  const auto require = [kind](bool ok, int64_t k, const char* what) {
    if (!ok) {
      throw std::invalid_argument(std::string("optimizer_step (") + optim_kind_name(kind) +
                                  "): tensor " + std::to_string(k) + ": " + what);
    }
  };
  for (int64_t k = 0; k < count; ++k) {
    const OptimTensor& t = tensors[k];
    const int64_t n = t.param.numel();
    require(t.param.dtype == tensors[0].param.dtype, k, "all parameters of one call share a dtype");
    if (n == 0) continue;
    require(t.param.is_contiguous() && t.grad.defined() && t.grad.is_contiguous() &&
                t.grad.numel() == n && t.grad.dtype == t.param.dtype,
            k, "param and grad must be contiguous, of one dtype and size");
    for (const View* v : {&t.state0, &t.state1, &t.state2}) {
      require(!v->defined() || (v->is_contiguous() && v->numel() == n && v->dtype == t.param.dtype),
              k, "state must be contiguous and shaped like the parameter");
    }
    switch (kind) {
      case OptimKind::sgd:
        require(h.momentum == 0.0 || t.state0.defined(), k, "missing momentum buffer");
        break;
      case OptimKind::rmsprop:
        require(t.state0.defined(), k, "missing square_avg");
        require(!(h.momentum > 0.0) || t.state1.defined(), k, "missing momentum buffer");
        require(!h.centered || t.state2.defined(), k, "missing grad_avg");
        break;
      case OptimKind::adam:
      case OptimKind::adamw:
        require(t.state0.defined() && t.state1.defined(), k, "missing exp_avg/exp_avg_sq");
        require(!h.amsgrad || t.state2.defined(), k, "missing max_exp_avg_sq");
        break;
    }
  }
}

// Arithmetic rounded once per operation, never contracted (see the design notes).
template <class T>
SEG_HD T rn_mul(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4)
    return __fmul_rn(a, b);
  else
    return __dmul_rn(a, b);
#else
  return a * b;
#endif
}
template <class T>
SEG_HD T rn_add(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4)
    return __fadd_rn(a, b);
  else
    return __dadd_rn(a, b);
#else
  return a + b;
#endif
}
template <class T>
SEG_HD T rn_div(T a, T b) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4)
    return __fdiv_rn(a, b);
  else
    return __ddiv_rn(a, b);
#else
  return a / b;
#endif
}
template <class T>
SEG_HD T rn_fma(T a, T b, T c) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4)
    return __fmaf_rn(a, b, c);
  else
    return __fma_rn(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// The hyperparameters of one kernel call, rounded to T once (what ATen does with each Python
// scalar).
template <class T>
struct OptimScalars {
  T lr, neg_lr, weight_decay, momentum, one_minus_dampening;
  T alpha, one_minus_alpha;
  T beta1, one_minus_beta1, beta2, one_minus_beta2;
  T eps;
  T decay_factor;           // adamw: 1 - lr * weight_decay
  T neg_step_size;          // adam: -(lr / bias_correction1)
  T bias_correction2_sqrt;  // adam: sqrt(bias_correction2)

  SEG_HD explicit OptimScalars(const OptimHyper& h)
      : lr(static_cast<T>(h.lr)),
        neg_lr(static_cast<T>(-h.lr)),
        weight_decay(static_cast<T>(h.weight_decay)),
        momentum(static_cast<T>(h.momentum)),
        one_minus_dampening(static_cast<T>(1.0 - h.dampening)),
        alpha(static_cast<T>(h.alpha)),
        one_minus_alpha(static_cast<T>(1.0 - h.alpha)),
        beta1(static_cast<T>(h.beta1)),
        one_minus_beta1(static_cast<T>(1.0 - h.beta1)),
        beta2(static_cast<T>(h.beta2)),
        one_minus_beta2(static_cast<T>(1.0 - h.beta2)),
        eps(static_cast<T>(h.eps)),
        decay_factor(static_cast<T>(1.0 - h.lr * h.weight_decay)),
        neg_step_size(static_cast<T>(-(h.lr / h.bias_correction1))),
        bias_correction2_sqrt(static_cast<T>(std::sqrt(h.bias_correction2))) {}
};

// The options that change the shape of an update, as compile-time flags: a kernel picks the
// instantiation once per call (bool_dispatch below), so its per-element loop has no branches and
// vectorises. Each flag list is given by the *_flags() function next to the update.
//
// bool_dispatch(f, b0, b1, ...) calls f(std::bool_constant<b0>{}, std::bool_constant<b1>{}, ...).
template <class F, class... Tags>
void bool_dispatch_impl(F& f, std::tuple<Tags...>) {
  f(Tags{}...);
}
template <class F, class... Tags, class... Rest>
void bool_dispatch_impl(F& f, std::tuple<Tags...>, bool b, Rest... rest) {
  if (b) {
    bool_dispatch_impl(f, std::tuple<Tags..., std::true_type>{}, rest...);
  } else {
    bool_dispatch_impl(f, std::tuple<Tags..., std::false_type>{}, rest...);
  }
}
template <class F, class... Bools>
void bool_dispatch(F&& f, Bools... flags) {
  bool_dispatch_impl(f, std::tuple<>{}, static_cast<bool>(flags)...);
}

// torch.optim.SGD, _single_tensor_sgd. Flags: maximize, weight_decay != 0, momentum != 0,
// nesterov, first (the momentum buffer starts as the gradient). `buf` is unused without momentum.
struct SgdFlags {
  bool maximize, weight_decay, momentum, nesterov, first;
};
inline SgdFlags sgd_flags(const OptimHyper& h) {
  return {h.maximize, h.weight_decay != 0.0, h.momentum != 0.0, h.nesterov && h.momentum != 0.0,
          h.first && h.momentum != 0.0};
}
template <class T, bool kMaximize, bool kWeightDecay, bool kMomentum, bool kNesterov, bool kFirst>
SEG_HD void sgd_update(const OptimScalars<T>& s, T& p, T g, T* buf) {
  if constexpr (kMaximize) g = -g;
  if constexpr (kWeightDecay) g = rn_fma(p, s.weight_decay, g);  // d_p.add(param, alpha=wd)
  if constexpr (kMomentum) {
    // first: buf = clone(d_p); else buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
    T b;
    if constexpr (kFirst) {
      b = g;
    } else {
      b = rn_fma(g, s.one_minus_dampening, rn_mul(*buf, s.momentum));
    }
    *buf = b;
    if constexpr (kNesterov) {
      g = rn_fma(b, s.momentum, g);  // d_p.add(buf, alpha=momentum)
    } else {
      g = b;
    }
  }
  p = rn_fma(g, s.neg_lr, p);  // param.add_(d_p, alpha=-lr)
}

// torch.optim.RMSprop, _single_tensor_rmsprop. Flags: maximize, weight_decay != 0, centered,
// momentum > 0. `buf` is unused without momentum, `grad_avg` unless centered.
struct RmspropFlags {
  bool maximize, weight_decay, centered, momentum;
};
inline RmspropFlags rmsprop_flags(const OptimHyper& h) {
  return {h.maximize, h.weight_decay != 0.0, h.centered, h.momentum > 0.0};
}
template <class T, bool kMaximize, bool kWeightDecay, bool kCentered, bool kMomentum>
SEG_HD void rmsprop_update(const OptimScalars<T>& s, T& p, T g, T& square_avg, T* buf,
                           T* grad_avg) {
  if constexpr (kMaximize) g = -g;
  if constexpr (kWeightDecay) g = rn_fma(p, s.weight_decay, g);
  // square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
  square_avg = rn_fma(rn_mul(s.one_minus_alpha, g), g, rn_mul(square_avg, s.alpha));
  T avg;
  if constexpr (kCentered) {
    // grad_avg.mul_(alpha).add_(grad, alpha=1 - alpha)
    const T ga = rn_fma(g, s.one_minus_alpha, rn_mul(*grad_avg, s.alpha));
    *grad_avg = ga;
    // square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_()
    avg = std::sqrt(rn_fma(-ga, ga, square_avg));
  } else {
    avg = std::sqrt(square_avg);
  }
  avg = rn_add(avg, s.eps);
  if constexpr (kMomentum) {
    // buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
    const T b = rn_add(rn_mul(*buf, s.momentum), rn_div(g, avg));
    *buf = b;
    p = rn_fma(b, s.neg_lr, p);
  } else {
    p = rn_add(p, rn_div(rn_mul(s.neg_lr, g), avg));  // param.addcdiv_(grad, avg, value=-lr)
  }
}

// torch.optim.Adam and AdamW, _single_tensor_adam(w). Flags: maximize, L2 weight decay (Adam with
// weight_decay != 0), decoupled weight decay (AdamW, always applied as PyTorch does), amsgrad.
// `max_exp_avg_sq` is unused without amsgrad.
struct AdamFlags {
  bool maximize, l2_decay, decoupled, amsgrad;
};
inline AdamFlags adam_flags(const OptimHyper& h, bool decoupled) {
  return {h.maximize, !decoupled && h.weight_decay != 0.0, decoupled, h.amsgrad};
}
template <class T, bool kMaximize, bool kL2Decay, bool kDecoupled, bool kAmsgrad>
SEG_HD void adam_update(const OptimScalars<T>& s, T& p, T g, T& exp_avg, T& exp_avg_sq,
                        T* max_exp_avg_sq) {
  if constexpr (kMaximize) g = -g;
  if constexpr (kDecoupled) p = rn_mul(p, s.decay_factor);   // param.mul_(1 - lr * weight_decay)
  if constexpr (kL2Decay) g = rn_fma(p, s.weight_decay, g);  // grad.add(param, alpha=weight_decay)
  // exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
  const T m = rn_fma(g, s.one_minus_beta1, rn_mul(exp_avg, s.beta1));
  exp_avg = m;
  // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
  const T v = rn_fma(rn_mul(s.one_minus_beta2, g), g, rn_mul(exp_avg_sq, s.beta2));
  exp_avg_sq = v;
  T second = v;
  if constexpr (kAmsgrad) {
    // torch.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq): NaN propagates
    const T old = *max_exp_avg_sq;
    second = ((v > old) | (v != v)) ? v : old;
    *max_exp_avg_sq = second;
  }
  // denom = (second.sqrt() / bias_correction2_sqrt).add_(eps)
  const T denom = rn_add(rn_div(std::sqrt(second), s.bias_correction2_sqrt), s.eps);
  // param.addcdiv_(exp_avg, denom, value=-step_size)
  p = rn_add(p, rn_div(rn_mul(s.neg_step_size, m), denom));
}

}  // namespace seg
