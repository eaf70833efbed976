// Kernel interface of 2-D batch normalisation over (N, C, H*W).
//
// Statistics are per channel over N * H*W values, accumulated in f64 for every dtype (two passes:
// mean, then the sum of squared deviations), so a large common offset costs no precision. (The CUDA
// backend's cuDNN paths accumulate as cuDNN does, in f32 for f32 data: they agree with the CPU within
// the parity tolerance for data whose |mean| is not orders of magnitude above its spread; its own
// kernels, used beyond cuDNN's 2^31-element limit, follow the CPU's arithmetic.) x, y, gy and
// gx are contiguous; weight, bias, save_mean and save_invstd are contiguous (c) vectors of x's dtype;
// running_mean/running_var are (c) vectors of x's dtype with any stride (they are updated in place).
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

struct BatchNormShape {
  int64_t n = 0, c = 0, hw = 0;
};

struct BatchNormKernels {
  // Training: batch mean and biased variance per channel normalise x; saves mean and
  // invstd = 1 / sqrt(var + eps) (each (c), f32 for f32 inputs). When running_mean/var are defined
  // they are updated in place: r = (1 - momentum) * r + momentum * batch value, using the unbiased
  // variance for running_var (PyTorch's convention). weight/bias undefined means affine off.
  // N * H*W == 0 writes mean 0 and invstd 1 / sqrt(eps) and leaves the running statistics alone.
  void (*forward_train)(const ExecContext& ctx, const BatchNormShape& shape, const View& x,
                        const View& weight, const View& bias, const View& running_mean,
                        const View& running_var, double momentum, double eps, const View& y,
                        const View& save_mean, const View& save_invstd);
  // Evaluation: normalise with the running statistics.
  void (*forward_eval)(const ExecContext& ctx, const BatchNormShape& shape, const View& x,
                       const View& weight, const View& bias, const View& running_mean,
                       const View& running_var, double eps, const View& y);
  // Gradients (written) of x, weight and bias; any of gx/gweight/gbias may be undefined (not
  // needed). `training` selects batch statistics (mean, invstd from forward_train) or fixed ones
  // (running mean and 1 / sqrt(running_var + eps), passed in the same two views). eps is the
  // forward's (cuDNN asks for the same value in both passes).
  void (*backward)(const ExecContext& ctx, const BatchNormShape& shape, bool training,
                   const View& x, const View& gy, const View& weight, const View& mean,
                   const View& invstd, double eps, const View& gx, const View& gweight,
                   const View& gbias);
};

}  // namespace seg
