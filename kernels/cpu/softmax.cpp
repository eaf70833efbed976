// CPU kernels of softmax / log-softmax along one dim and of cross entropy fused with log-softmax.
//
// Design notes
// - Data is (outer, dim, inner), contiguous. With inner == 1 each row is contiguous and is handled
//   alone; otherwise a task takes a block of up to kBlock neighbouring inner positions and sweeps
//   the dim with the block as the inner (contiguous, vectorisable) loop, keeping per-position
//   maxima and sums in small stack arrays.
// - Exponentials are evaluated in the storage type (f32: vexp below, a polynomial the compiler
//   vectorises, within ~1 ulp of std::exp; std::exp is a scalar libm call), their sums accumulate
//   in f64. Every output depends only on its own row and sums run in a fixed order, so results do
//   not depend on the thread count.
// - Hot loops avoid selects between computed floats: under the default -ftrapping-math GCC does not
//   if-convert them and the loop stays scalar.
// - Cross entropy reuses the same blocking with dim = classes; the forward writes per-position
//   loss, weight and log-sum-exp; the backward recomputes probabilities from the saved lse.
#include <bit>
#include <cmath>
#include <limits>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"

namespace seg::cpu {
namespace {

// Inner positions handled together by one task when inner > 1.
constexpr int64_t kBlock = 64;

// Runs body(o, i0, len) over blocks of inner positions of every outer index, in parallel.
template <class F>
void for_each_block(int64_t outer, int64_t dim, int64_t inner, F&& body) {
  const int64_t blocks = (inner + kBlock - 1) / kBlock;
  const int64_t per_task = std::min(inner, kBlock) * std::max<int64_t>(dim, 1);
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / per_task);
  parallel_for(outer * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t o = t / blocks, b = t % blocks;
      const int64_t i0 = b * kBlock;
      body(o, i0, std::min(kBlock, inner - i0));
    }
  });
}

// exp(x) for f32 that loops vectorise without -ffast-math (Cephes expf: x = n ln2 + r, a degree-6
// polynomial in r; max error 1.01 ulp on [-87.3, 88.3], checked against std::exp in f64). x is
// clamped to [-88, 89] through the integer image of its bits (no float compare), which makes the
// exponent field 0 (result +0, where the true value is below ~1e-38) or 255 (+inf, above ~2.7e38)
// at the ends; NaN stays NaN.
inline float vexp(float x) {
  const int32_t xb = std::bit_cast<int32_t>(x);
  const int32_t key = xb ^ ((xb >> 31) & 0x7fffffff);  // monotonic in x; its own inverse
  constexpr int32_t kLo = std::bit_cast<int32_t>(-88.0f) ^ 0x7fffffff;
  constexpr int32_t kHi = std::bit_cast<int32_t>(89.0f);
  const int32_t kc = std::min(std::max(key, kLo), kHi);
  const float xc = std::bit_cast<float>(kc ^ ((kc >> 31) & 0x7fffffff));
  // n = round(xc / ln 2) by adding 1.5 * 2^23: the low mantissa bits of `shifted` hold n.
  const float shifted = xc * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  float r = xc - n * 0.693359375f;  // ln 2 in two parts: r is exact to ~1e-10
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const uint32_t biased = std::bit_cast<uint32_t>(shifted) - 0x4B400000u + 127u;  // n + 127
  const float v = p * std::bit_cast<float>(biased << 23);
  const int32_t nan_mask = (0x7f800000 - (xb & 0x7fffffff)) >> 31;  // all ones when x is NaN
  return std::bit_cast<float>((xb & nan_mask) | (std::bit_cast<int32_t>(v) & ~nan_mask));
}
inline double vexp(double x) {
  return std::exp(x);
}

// Lanes of the row reductions: fixed, so the order of the sums is too (deterministic), and the
// compiler maps the lanes onto vector registers without reassociating anything.
constexpr int kLanes = 8;

template <class T>
T row_max(const T* x, int64_t n) {
  T m[kLanes];
  for (int l = 0; l < kLanes; ++l) m[l] = x[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) m[l] = x[i + l] > m[l] ? x[i + l] : m[l];
  }
  for (; i < n; ++i) m[0] = x[i] > m[0] ? x[i] : m[0];
  T best = m[0];
  for (int l = 1; l < kLanes; ++l) best = m[l] > best ? m[l] : best;
  return best;
}

template <class T>
double row_sum_f64(const T* x, int64_t n) {
  double s[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) s[l] += static_cast<double>(x[i + l]);
  }
  for (; i < n; ++i) s[0] += static_cast<double>(x[i]);
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total += s[l];
  return total;
}

template <class T>
double row_dot_f64(const T* a, const T* b, int64_t n) {
  double s[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      s[l] += static_cast<double>(a[i + l]) * static_cast<double>(b[i + l]);
    }
  }
  for (; i < n; ++i) s[0] += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total += s[l];
  return total;
}

// ---- softmax ----

// One contiguous row; y doubles as the buffer of the exponentials.
template <class T>
void softmax_row(const T* x, T* y, int64_t dim, bool log) {
  const T mx = row_max(x, dim);
  for (int64_t d = 0; d < dim; ++d) y[d] = vexp(x[d] - mx);
  const double acc = row_sum_f64(y, dim);
  if (log) {
    // (x - max) - log(sum), never x - (max + log(sum)): the latter loses ulp(max) in f32.
    const T log_sum = static_cast<T>(std::log(acc));
    for (int64_t d = 0; d < dim; ++d) y[d] = (x[d] - mx) - log_sum;
  } else {
    const T inv = static_cast<T>(1.0 / acc);
    for (int64_t d = 0; d < dim; ++d) y[d] *= inv;
  }
}

template <class T>
void softmax_forward_typed(const SoftmaxShape& s, bool log, const T* x, T* y) {
  const int64_t dim = s.dim, inner = s.inner;
  if (dim == 0) return;
  if (inner == 1) {
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / dim);
    parallel_for(s.outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) softmax_row(x + o * dim, y + o * dim, dim, log);
    });
    return;
  }
  for_each_block(s.outer, dim, inner, [&](int64_t o, int64_t i0, int64_t len) {
    const T* px = x + o * dim * inner + i0;
    T* py = y + o * dim * inner + i0;
    T mx[kBlock];
    double acc[kBlock];
    for (int64_t j = 0; j < len; ++j) {
      mx[j] = px[j];
      acc[j] = 0.0;
    }
    for (int64_t d = 1; d < dim; ++d) {
      const T* row = px + d * inner;
      for (int64_t j = 0; j < len; ++j) mx[j] = row[j] > mx[j] ? row[j] : mx[j];
    }
    for (int64_t d = 0; d < dim; ++d) {
      const T* row = px + d * inner;
      T* out = py + d * inner;
      if (log) {
        for (int64_t j = 0; j < len; ++j) acc[j] += static_cast<double>(vexp(row[j] - mx[j]));
      } else {
        for (int64_t j = 0; j < len; ++j) {
          const T e = vexp(row[j] - mx[j]);
          out[j] = e;
          acc[j] += static_cast<double>(e);
        }
      }
    }
    if (log) {
      T log_sum[kBlock];
      for (int64_t j = 0; j < len; ++j) log_sum[j] = static_cast<T>(std::log(acc[j]));
      for (int64_t d = 0; d < dim; ++d) {
        const T* row = px + d * inner;
        T* out = py + d * inner;
        for (int64_t j = 0; j < len; ++j) out[j] = (row[j] - mx[j]) - log_sum[j];
      }
    } else {
      T inv[kBlock];
      for (int64_t j = 0; j < len; ++j) inv[j] = static_cast<T>(1.0 / acc[j]);
      for (int64_t d = 0; d < dim; ++d) {
        T* out = py + d * inner;
        for (int64_t j = 0; j < len; ++j) out[j] *= inv[j];
      }
    }
  });
}

void softmax_forward(const ExecContext&, const SoftmaxShape& shape, bool log, const View& x,
                     const View& y) {
  SEG_CPU_DISPATCH_FLOAT(x.dtype, "softmax", T,
                         { softmax_forward_typed<T>(shape, log, x.ptr<const T>(), y.ptr<T>()); });
}

// softmax: gx = y * (gy - sum(gy * y)); log_softmax: gx = gy - exp(y) * sum(gy).
template <class T>
void softmax_backward_typed(const SoftmaxShape& s, bool log, const T* y, const T* gy, T* gx) {
  const int64_t dim = s.dim, inner = s.inner;
  if (dim == 0) return;
  if (inner == 1) {
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / dim);
    parallel_for(s.outer, grain, [&](int64_t begin, int64_t end) {
      for (int64_t o = begin; o < end; ++o) {
        const T* py = y + o * dim;
        const T* pg = gy + o * dim;
        T* out = gx + o * dim;
        if (log) {
          const T total = static_cast<T>(row_sum_f64(pg, dim));
          for (int64_t d = 0; d < dim; ++d) out[d] = pg[d] - vexp(py[d]) * total;
        } else {
          const T dot = static_cast<T>(row_dot_f64(pg, py, dim));
          for (int64_t d = 0; d < dim; ++d) out[d] = py[d] * (pg[d] - dot);
        }
      }
    });
    return;
  }
  for_each_block(s.outer, dim, inner, [&](int64_t o, int64_t i0, int64_t len) {
    const int64_t base = o * dim * inner + i0;
    double acc[kBlock];
    for (int64_t j = 0; j < len; ++j) acc[j] = 0.0;
    for (int64_t d = 0; d < dim; ++d) {
      const T* py = y + base + d * inner;
      const T* pg = gy + base + d * inner;
      if (log) {
        for (int64_t j = 0; j < len; ++j) acc[j] += static_cast<double>(pg[j]);
      } else {
        for (int64_t j = 0; j < len; ++j)
          acc[j] += static_cast<double>(pg[j]) * static_cast<double>(py[j]);
      }
    }
    T dot[kBlock];
    for (int64_t j = 0; j < len; ++j) dot[j] = static_cast<T>(acc[j]);
    for (int64_t d = 0; d < dim; ++d) {
      const T* py = y + base + d * inner;
      const T* pg = gy + base + d * inner;
      T* out = gx + base + d * inner;
      if (log) {
        for (int64_t j = 0; j < len; ++j) out[j] = pg[j] - vexp(py[j]) * dot[j];
      } else {
        for (int64_t j = 0; j < len; ++j) out[j] = py[j] * (pg[j] - dot[j]);
      }
    }
  });
}

void softmax_backward(const ExecContext&, const SoftmaxShape& shape, bool log, const View& y,
                      const View& gy, const View& gx) {
  SEG_CPU_DISPATCH_FLOAT(y.dtype, "softmax backward", T, {
    softmax_backward_typed<T>(shape, log, y.ptr<const T>(), gy.ptr<const T>(), gx.ptr<T>());
  });
}

// ---- cross entropy ----

template <class T>
void cross_entropy_forward_typed(const CrossEntropyShape& s, const T* x, const int32_t* labels,
                                 const T* weight, T* loss, T* wsum, T* lse, int32_t* bad_count) {
  const int64_t c = s.c, inner = s.inner;
  if (c == 0) {  // no classes: every label is bad unless ignored; nothing to normalise
    for (int64_t i = 0; i < s.n * inner; ++i) {
      loss[i] = T(0);
      wsum[i] = T(0);
      lse[i] = -std::numeric_limits<T>::infinity();
      if (cross_entropy_label_kind(labels[i], s) == LabelKind::bad) ++*bad_count;
    }
    return;
  }
  for_each_block(s.n, c, inner, [&](int64_t o, int64_t i0, int64_t len) {
    const T* px = x + o * c * inner + i0;
    const int64_t pos = o * inner + i0;
    T mx[kBlock];
    double acc[kBlock];
    for (int64_t j = 0; j < len; ++j) {
      mx[j] = px[j];
      acc[j] = 0.0;
    }
    for (int64_t d = 1; d < c; ++d) {
      const T* row = px + d * inner;
      for (int64_t j = 0; j < len; ++j) mx[j] = row[j] > mx[j] ? row[j] : mx[j];
    }
    for (int64_t d = 0; d < c; ++d) {
      const T* row = px + d * inner;
      for (int64_t j = 0; j < len; ++j) acc[j] += static_cast<double>(vexp(row[j] - mx[j]));
    }
    int32_t bad = 0;
    for (int64_t j = 0; j < len; ++j) {
      const double l = static_cast<double>(mx[j]) + std::log(acc[j]);
      lse[pos + j] = static_cast<T>(l);
      const int64_t y = labels[pos + j];
      switch (cross_entropy_label_kind(y, s)) {
        case LabelKind::valid: {
          const double w = weight ? static_cast<double>(weight[y]) : 1.0;
          loss[pos + j] = static_cast<T>(w * (l - static_cast<double>(px[y * inner + j])));
          wsum[pos + j] = static_cast<T>(w);
          break;
        }
        case LabelKind::bad: ++bad; [[fallthrough]];
        case LabelKind::ignored:
          loss[pos + j] = T(0);
          wsum[pos + j] = T(0);
          break;
      }
    }
    if (bad > 0) {
      // An integer count: the total is the same whatever the thread order.
#pragma omp atomic
      *bad_count += bad;
    }
  });
}

void cross_entropy_forward(const ExecContext&, const CrossEntropyShape& shape, const View& logits,
                           const View& labels, const View& weight, const View& loss,
                           const View& wsum, const View& lse, const View& bad_count) {
  if (labels.dtype != DType::i32) unsupported_dtype("cross_entropy labels", labels.dtype);
  SEG_CPU_DISPATCH_FLOAT(logits.dtype, "cross_entropy", T, {
    cross_entropy_forward_typed<T>(shape, logits.ptr<const T>(), labels.ptr<const int32_t>(),
                                   weight.defined() ? weight.ptr<const T>() : nullptr,
                                   loss.ptr<T>(), wsum.ptr<T>(), lse.ptr<T>(),
                                   bad_count.ptr<int32_t>());
  });
}

template <class T>
void cross_entropy_backward_typed(const CrossEntropyShape& s, const T* x, const int32_t* labels,
                                  const T* weight, const T* lse, const T* scale,
                                  bool scale_per_position, T* gx) {
  const int64_t c = s.c, inner = s.inner;
  if (c == 0) return;
  for_each_block(s.n, c, inner, [&](int64_t o, int64_t i0, int64_t len) {
    const int64_t base = o * c * inner + i0;
    const int64_t pos = o * inner + i0;
    // coef = scale * w[y], exactly 0 where ignored (scale may be inf there: all-ignored 'mean').
    // The gradient coef * (p - onehot) is then 0 at ignored positions unless the logits are NaN,
    // which PyTorch propagates too.
    T coef[kBlock];
    int32_t lab[kBlock];  // the label, -1 where ignored
    for (int64_t j = 0; j < len; ++j) {
      const int32_t y = labels[pos + j];
      lab[j] = y;
      if (cross_entropy_label_kind(y, s) != LabelKind::valid) {
        coef[j] = T(0);
        lab[j] = -1;
        continue;
      }
      const T sc = scale_per_position ? scale[pos + j] : scale[0];
      coef[j] = weight ? sc * weight[y] : sc;
    }
    const T* plse = lse + pos;
    for (int64_t d = 0; d < c; ++d) {
      const T* row = x + base + d * inner;
      T* out = gx + base + d * inner;
      const int32_t dd = static_cast<int32_t>(d);
      for (int64_t j = 0; j < len; ++j) {
        const T onehot = static_cast<T>(lab[j] == dd);
        out[j] = coef[j] * (vexp(row[j] - plse[j]) - onehot);
      }
    }
  });
}

void cross_entropy_backward(const ExecContext&, const CrossEntropyShape& shape, const View& logits,
                            const View& labels, const View& weight, const View& lse,
                            const View& scale, const View& glogits) {
  if (labels.dtype != DType::i32) unsupported_dtype("cross_entropy backward labels", labels.dtype);
  SEG_CPU_DISPATCH_FLOAT(logits.dtype, "cross_entropy backward", T, {
    cross_entropy_backward_typed<T>(shape, logits.ptr<const T>(), labels.ptr<const int32_t>(),
                                    weight.defined() ? weight.ptr<const T>() : nullptr,
                                    lse.ptr<const T>(), scale.ptr<const T>(), scale.numel() != 1,
                                    glogits.ptr<T>());
  });
}

const SoftmaxKernels kSoftmax{&softmax_forward, &softmax_backward};
const CrossEntropyKernels kCrossEntropy{&cross_entropy_forward, &cross_entropy_backward};

}  // namespace

void register_softmax_kernels(KernelRegistry& r) {
  constexpr DeviceType cpu = DeviceType::cpu;
  r.set<OpId::softmax>(cpu, &kSoftmax);
  r.set<OpId::log_softmax>(cpu, &kSoftmax);
  r.set<OpId::cross_entropy>(cpu, &kCrossEntropy);
}

}  // namespace seg::cpu
