// Kernel interfaces of the basic families: fill, copy/cast, arange, random, unary, binary,
// reduction and argmax. The math that CPU and CUDA share is here as SEG_HD functions.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/philox.h"
#include "kernels/common/types.h"

namespace seg {

struct FillKernels {
  // Every element of `out` (any strides) = value, converted to out's dtype.
  void (*fill)(const ExecContext& ctx, const View& out, double value);
};

struct CopyKernels {
  // dst = src elementwise with dtype conversion; both have the same sizes, any strides (a src
  // stride of 0 broadcasts). dst must not overlap src.
  void (*copy)(const ExecContext& ctx, const View& src, const View& dst);
};

struct ArangeKernels {
  // out (contiguous, n) = start + i * step
  void (*arange)(const ExecContext& ctx, const View& out, double start, double step);
};

enum class RandomKind : uint8_t { uniform, normal, bernoulli };

struct RandomKernels {
  // Fills contiguous `out` from the Philox stream (seed, call): uniform in [a, b), normal with
  // mean a and std b, or bernoulli with probability a (values 0 and 1). Element i depends only on
  // (seed, call, i): see kernels/common/philox.h.
  void (*fill)(const ExecContext& ctx, const View& out, RandomKind kind, double a, double b,
               uint64_t seed, uint64_t call);
};

// ---- values both backends store ----
//
// The CPU kernels write `a + b * c` and GCC (fp-contract=fast, its default for C++, with the FMA of
// x86-64-v3) compiles that to one fused multiply-add; the helpers below spell the fma out, so the
// CUDA kernels (and a CPU build without FMA, should one adopt them) store the same bits.

// x * y + z rounded once.
template <class T>
SEG_HD T fma_once(T x, T y, T z) {
#if defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4)
    return __fmaf_rn(x, y, z);
  else
    return __fma_rn(x, y, z);
#else
  return std::fma(x, y, z);
#endif
}

// arange: element i = start + i * step, in f64 (then converted to the output's dtype).
SEG_HD double arange_value(double start, double step, int64_t i) {
  return fma_once(static_cast<double>(i), step, start);
}

// random fills. f32, bf16 and f16 outputs are computed in f32 from 32-bit draws (then rounded to
// the 16-bit formats); f64 outputs in f64, except bernoulli, which compares an f32 draw.
SEG_HD float random_uniform_f32(double low, double high, float unit) {
  return fma_once(static_cast<float>(high - low), unit, static_cast<float>(low));
}
SEG_HD float random_normal_f32(double mean, double std, float z) {
  return fma_once(static_cast<float>(std), z, static_cast<float>(mean));
}
SEG_HD float random_bernoulli_f32(double p, float unit) {
  return unit < static_cast<float>(p) ? 1.0f : 0.0f;
}
SEG_HD double random_uniform_f64(double low, double high, double unit) {
  return fma_once(high - low, unit, low);
}
SEG_HD double random_normal_f64(double mean, double std, double z) { return fma_once(std, z, mean); }

// Elements 4g .. 4g+3 of a fill from 32-bit draws (uniform, normal or bernoulli), as f32: exactly
// what philox_{uniform,normal}_f32 give element by element (kernels/common/philox.h), from one
// Philox block instead of four. A GPU thread computes one group.
SEG_HD void random_group_f32(RandomKind kind, double a, double b, uint64_t seed, uint64_t call,
                             uint64_t group, float (&out)[4]) {
  const Philox4 r = philox4x32_10(seed, group, call);
  switch (kind) {
    case RandomKind::uniform:
      for (int l = 0; l < 4; ++l) out[l] = random_uniform_f32(a, b, u32_to_unit_f32(r.v[l]));
      break;
    case RandomKind::bernoulli:
      for (int l = 0; l < 4; ++l) out[l] = random_bernoulli_f32(a, u32_to_unit_f32(r.v[l]));
      break;
    case RandomKind::normal:
      for (int pair = 0; pair < 4; pair += 2) {
        // Box-Muller as in philox_normal_f32: lanes (pair, pair + 1) give cos and sin.
        const double u1 = static_cast<double>(u32_to_open_unit_f32(r.v[pair]));
        const double u2 = static_cast<double>(u32_to_unit_f32(r.v[pair + 1]));
        const double radius = std::sqrt(-2.0 * std::log(u1));
        const double angle = 6.283185307179586476925 * u2;
        out[pair] = random_normal_f32(a, b, static_cast<float>(radius * std::cos(angle)));
        out[pair + 1] = random_normal_f32(a, b, static_cast<float>(radius * std::sin(angle)));
      }
      break;
  }
}

// Elements 2g and 2g+1 of an f64 uniform fill (philox_uniform_f64: lanes (0,1) and (2,3) of block g).
SEG_HD void random_group_uniform_f64(double low, double high, uint64_t seed, uint64_t call,
                                     uint64_t group, double (&out)[2]) {
  const Philox4 r = philox4x32_10(seed, group, call);
  out[0] = random_uniform_f64(low, high, u32x2_to_unit_f64(r.v[0], r.v[1]));
  out[1] = random_uniform_f64(low, high, u32x2_to_unit_f64(r.v[2], r.v[3]));
}

// Elementwise functions of one tensor; `alpha` is the scalar of the scalar ops.
enum class UnaryOp : uint8_t {
  neg,
  relu,
  abs,
  exp,
  log,
  sqrt,
  tanh,
  sigmoid,
  add_scalar,  // x + alpha
  mul_scalar,  // x * alpha
  pow_scalar,  // x ^ alpha
  rsub_scalar, // alpha - x
};

struct UnaryKernels {
  // y = f(x); x and y contiguous with the same numel (y may alias x).
  void (*forward)(const ExecContext& ctx, UnaryOp op, double alpha, const View& x, const View& y);
  // gx = gy * f'(x); uses x or y as the op needs (both passed, contiguous); gx may alias gy.
  void (*backward)(const ExecContext& ctx, UnaryOp op, double alpha, const View& x, const View& y,
                   const View& gy, const View& gx);
};

template <class T>
SEG_HD T unary_forward(UnaryOp op, T x, T alpha) {
  switch (op) {
    case UnaryOp::neg: return -x;
    case UnaryOp::relu: return x <= T(0) ? T(0) : x;  // NaN stays NaN, as PyTorch's
    case UnaryOp::abs: return x < T(0) ? -x : x;
    case UnaryOp::exp: return std::exp(x);
    case UnaryOp::log: return std::log(x);
    case UnaryOp::sqrt: return std::sqrt(x);
    case UnaryOp::tanh: return std::tanh(x);
    case UnaryOp::sigmoid: return T(1) / (T(1) + std::exp(-x));
    case UnaryOp::add_scalar: return x + alpha;
    case UnaryOp::mul_scalar: return x * alpha;
    case UnaryOp::pow_scalar: return std::pow(x, alpha);
    case UnaryOp::rsub_scalar: return alpha - x;
  }
  return x;
}

// d f / d x at x (with y = f(x)), times gy. relu'(0) = 0 and abs'(0) = 0, as in PyTorch. relu
// reads whichever of x and y its caller saved (the other given as 0): y > 0 exactly when x > 0.
template <class T>
SEG_HD T unary_backward(UnaryOp op, T x, T y, T gy, T alpha) {
  switch (op) {
    case UnaryOp::neg: return -gy;
    case UnaryOp::relu: return x <= T(0) && y <= T(0) ? T(0) : gy;  // NaN passes gy, as PyTorch
    case UnaryOp::abs: return x > T(0) ? gy : (x < T(0) ? -gy : T(0));
    case UnaryOp::exp: return gy * y;
    case UnaryOp::log: return gy / x;
    case UnaryOp::sqrt: return gy / (T(2) * y);
    case UnaryOp::tanh: return gy * (T(1) - y * y);
    case UnaryOp::sigmoid: return gy * y * (T(1) - y);
    case UnaryOp::add_scalar: return gy;
    case UnaryOp::mul_scalar: return gy * alpha;
    case UnaryOp::pow_scalar: return alpha == T(0) ? T(0) : gy * alpha * std::pow(x, alpha - T(1));
    case UnaryOp::rsub_scalar: return -gy;
  }
  return gy;
}

enum class BinaryOp : uint8_t { add, sub, mul, div };

template <class T>
SEG_HD T binary_apply(BinaryOp op, T a, T b) {
  switch (op) {
    case BinaryOp::add: return a + b;
    case BinaryOp::sub: return a - b;
    case BinaryOp::mul: return a * b;
    case BinaryOp::div: return a / b;
  }
  return a;
}

struct BinaryKernels {
  // out = a (op) b. All three have out's sizes; a and b may be strided (stride 0 broadcasts); out
  // is contiguous and may alias a (in-place updates) when a is contiguous too.
  void (*forward)(const ExecContext& ctx, BinaryOp op, const View& a, const View& b, const View& out);
};

struct ReduceKernels {
  // y = sum of x over the dims where y's size is 1 and x's is not. x contiguous; y contiguous with
  // x's ndim (keepdim layout). Accumulates in f64 for f32 inputs on the CPU.
  void (*sum)(const ExecContext& ctx, const View& x, const View& y);
};

struct ArgmaxKernels {
  // x contiguous viewed as (outer, n, inner); out (outer, inner) i32 = index of the largest value
  // along n (the first one on ties; NaN counts as largest, as in PyTorch).
  void (*argmax)(const ExecContext& ctx, const View& x, int64_t outer, int64_t n, int64_t inner,
                 const View& out);
};

}  // namespace seg
