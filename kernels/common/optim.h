// Optimiser updates: per-element math shared by the CPU loop and the CUDA multi-tensor kernels.
// Each follows PyTorch's single-tensor implementation step for step (torch.optim, 1.13-2.x).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

enum class OptimKind : uint8_t { sgd, rmsprop, adam, adamw };

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
  // Step bookkeeping, filled by the optimiser: `first` is true on a parameter's first update (its
  // momentum buffer starts as the gradient); bias corrections 1 - beta^step for adam.
  bool first = false;
  double bias_correction1 = 1.0;
  double bias_correction2 = 1.0;
};

// One parameter and its state. Unused state views are undefined. All contiguous, same numel.
//   sgd: state0 = momentum buffer
//   rmsprop: state0 = square_avg, state1 = momentum buffer, state2 = grad_avg (centered)
//   adam/adamw: state0 = exp_avg, state1 = exp_avg_sq, state2 = max_exp_avg_sq (amsgrad)
struct OptimTensor {
  View param, grad, state0, state1, state2;
};

struct OptimKernels {
  // Updates `count` parameters in place with one step of `kind`.
  void (*step)(const ExecContext& ctx, OptimKind kind, const OptimHyper& hyper,
               const OptimTensor* tensors, int64_t count);
};

// Math in the parameter's type T; hyperparameters are rounded to T first, as PyTorch passes them
// to its kernels as Python floats applied to float tensors.
template <class T>
SEG_HD void sgd_update(const OptimHyper& h, T& p, T g, T* buf) {
  if (h.maximize) g = -g;
  if (h.weight_decay != 0.0) g = g + static_cast<T>(h.weight_decay) * p;
  if (h.momentum != 0.0) {
    T b = h.first ? g : static_cast<T>(h.momentum) * *buf + static_cast<T>(1.0 - h.dampening) * g;
    *buf = b;
    g = h.nesterov ? g + static_cast<T>(h.momentum) * b : b;
  }
  p = p - static_cast<T>(h.lr) * g;
}

template <class T>
SEG_HD void rmsprop_update(const OptimHyper& h, T& p, T g, T& square_avg, T* buf, T* grad_avg) {
  if (h.maximize) g = -g;
  if (h.weight_decay != 0.0) g = g + static_cast<T>(h.weight_decay) * p;
  const T alpha = static_cast<T>(h.alpha);
  square_avg = square_avg * alpha + static_cast<T>(1.0 - h.alpha) * g * g;
  T avg;
  if (h.centered) {
    *grad_avg = *grad_avg * alpha + static_cast<T>(1.0 - h.alpha) * g;
    avg = std::sqrt(square_avg - *grad_avg * *grad_avg) + static_cast<T>(h.eps);
  } else {
    avg = std::sqrt(square_avg) + static_cast<T>(h.eps);
  }
  if (h.momentum > 0.0) {
    *buf = *buf * static_cast<T>(h.momentum) + g / avg;
    p = p - static_cast<T>(h.lr) * *buf;
  } else {
    p = p - static_cast<T>(h.lr) * g / avg;
  }
}

// Adam (decoupled = false) and AdamW (decoupled = true).
template <class T>
SEG_HD void adam_update(const OptimHyper& h, bool decoupled, T& p, T g, T& exp_avg, T& exp_avg_sq,
                        T* max_exp_avg_sq) {
  if (h.maximize) g = -g;
  if (decoupled) {
    p = p * static_cast<T>(1.0 - h.lr * h.weight_decay);
  } else if (h.weight_decay != 0.0) {
    g = g + static_cast<T>(h.weight_decay) * p;
  }
  exp_avg = exp_avg * static_cast<T>(h.beta1) + g * static_cast<T>(1.0 - h.beta1);
  exp_avg_sq = exp_avg_sq * static_cast<T>(h.beta2) + static_cast<T>(1.0 - h.beta2) * g * g;
  const T step_size = static_cast<T>(h.lr / h.bias_correction1);
  const T bc2_sqrt = static_cast<T>(std::sqrt(h.bias_correction2));
  T second = exp_avg_sq;
  if (h.amsgrad) {
    if (exp_avg_sq > *max_exp_avg_sq) *max_exp_avg_sq = exp_avg_sq;
    second = *max_exp_avg_sq;
  }
  const T denom = std::sqrt(second) / bc2_sqrt + static_cast<T>(h.eps);
  p = p - step_size * exp_avg / denom;
}

}  // namespace seg
