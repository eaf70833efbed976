// CPU kernels of 2-D batch normalisation (PyTorch's semantics).
//
// Design notes
// - Two phases per call: per-channel reductions (parallel over channels, each channel summed by one
//   thread in a fixed order), then an elementwise pass parallel over (n, c) planes with per-channel
//   constants. Results never depend on the thread count.
// - Reductions accumulate in f64 for f32 too, with kLanes independent partial sums per channel so
//   the loop vectorises (the lanes are added in a fixed order). The variance takes two passes: the
//   mean first, then squared deviations from it, so a large common offset costs no precision.
// - The elementwise passes run in the tensor's dtype with per-channel constants rounded once:
//   y = ((x - mean_hi) - mean_lo) * scale + bias, scale = weight * invstd, where mean_hi is the
//   mean rounded to T and mean_lo the rest. x - mean_hi is exact when x is near the mean, so y
//   keeps its digits when |mean| >> std (PyTorch's x * scale + (bias - mean * scale) loses them in
//   f32). The backward recovers the f64 mean from x the same way (one more sum in its reduction
//   pass) because the saved mean is rounded to T.
#include <array>
#include <cmath>
#include <vector>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"

namespace seg::cpu {
namespace {

constexpr int kLanes = 8;

// K sums over the elements of channel c of a contiguous (n, c_count, hw) tensor (one (n, c) plane
// after another): f(index, terms) writes the K terms of one element. f64, in an order fixed by the
// shape alone.
template <int K, class F>
std::array<double, K> channel_sums(int64_t n, int64_t c_count, int64_t hw, int64_t c, F&& f) {
  double lanes[K][kLanes] = {};
  double terms[K];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t base = (i * c_count + c) * hw;
    int64_t j = 0;
    for (; j + kLanes <= hw; j += kLanes) {
      for (int l = 0; l < kLanes; ++l) {
        f(base + j + l, terms);
        for (int k = 0; k < K; ++k) lanes[k][l] += terms[k];
      }
    }
    for (; j < hw; ++j) {
      f(base + j, terms);
      for (int k = 0; k < K; ++k) lanes[k][0] += terms[k];
    }
  }
  std::array<double, K> out{};
  for (int k = 0; k < K; ++k) {
    for (int l = 0; l < kLanes; ++l) out[k] += lanes[k][l];
  }
  return out;
}

template <class T>
T param_or(const View& v, int64_t c, T fallback) {
  return v.defined() ? v.ptr<T>()[c] : fallback;
}

// Per-channel constants of the normalising pass: y = ((x - mean_hi) - mean_lo) * scale + shift.
template <class T>
struct ChannelAffine {
  std::vector<T> mean_hi, mean_lo, scale, shift;
  explicit ChannelAffine(int64_t c)
      : mean_hi(static_cast<size_t>(c)),
        mean_lo(static_cast<size_t>(c)),
        scale(static_cast<size_t>(c)),
        shift(static_cast<size_t>(c)) {}
  void set(int64_t c, double mean, double a, T b) {
    const size_t i = static_cast<size_t>(c);
    mean_hi[i] = static_cast<T>(mean);
    mean_lo[i] = static_cast<T>(mean - static_cast<double>(mean_hi[i]));
    scale[i] = static_cast<T>(a);
    shift[i] = b;
  }
};

// Applies ChannelAffine to every (n, c) plane, parallel over planes.
template <class T>
void apply_affine(const BatchNormShape& s, const T* x, const ChannelAffine<T>& k, T* y) {
  const int64_t planes = s.n * s.c;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(s.hw, 1));
  parallel_for(planes, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const size_t c = static_cast<size_t>(t % s.c);
      const T hi = k.mean_hi[c], lo = k.mean_lo[c], a = k.scale[c], b = k.shift[c];
      const T* px = x + t * s.hw;
      T* py = y + t * s.hw;
      for (int64_t j = 0; j < s.hw; ++j) py[j] = ((px[j] - hi) - lo) * a + b;
    }
  });
}

// The f64 mean of channel c (the same sum, in the same order, in forward and backward).
template <class T>
double channel_mean(const BatchNormShape& s, const T* px, int64_t c) {
  const int64_t count = s.n * s.hw;
  if (count == 0) return 0.0;
  return channel_sums<1>(s.n, s.c, s.hw, c,
                         [px](int64_t i, double* t) { t[0] = static_cast<double>(px[i]); })[0] /
         static_cast<double>(count);
}

template <class T>
void forward_train_typed(const BatchNormShape& s, const View& x, const View& weight,
                         const View& bias, const View& running_mean, const View& running_var,
                         double momentum, double eps, const View& y, const View& save_mean,
                         const View& save_invstd) {
  const T* px = x.ptr<T>();
  const int64_t count = s.n * s.hw;  // values per channel
  ChannelAffine<T> k(s.c);
  const bool update = running_mean.defined() && running_var.defined() && count > 0;
  T* rm = running_mean.ptr<T>();
  T* rv = running_var.ptr<T>();
  const int64_t rm_stride = running_mean.defined() ? running_mean.strides[0] : 0;
  const int64_t rv_stride = running_var.defined() ? running_var.strides[0] : 0;
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(count, 1));
  parallel_for(s.c, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const double mean = channel_mean(s, px, c);
      const double sq =
          count == 0 ? 0.0 : channel_sums<1>(s.n, s.c, s.hw, c, [px, mean](int64_t i, double* t) {
            const double d = static_cast<double>(px[i]) - mean;
            t[0] = d * d;
          })[0];
      const double var = count > 0 ? sq / static_cast<double>(count) : 0.0;
      const double invstd = 1.0 / std::sqrt(var + eps);
      save_mean.ptr<T>()[c] = static_cast<T>(mean);
      save_invstd.ptr<T>()[c] = static_cast<T>(invstd);
      if (update) {
        // PyTorch divides by count - 1 (the front-end requires count > 1 in training).
        const double unbiased = sq / static_cast<double>(count - 1);
        T& m = rm[c * rm_stride];
        T& v = rv[c * rv_stride];
        m = static_cast<T>(momentum * mean + (1.0 - momentum) * static_cast<double>(m));
        v = static_cast<T>(momentum * unbiased + (1.0 - momentum) * static_cast<double>(v));
      }
      k.set(c, mean, static_cast<double>(param_or<T>(weight, c, T(1))) * invstd,
            param_or<T>(bias, c, T(0)));
    }
  });
  apply_affine<T>(s, px, k, y.ptr<T>());
}

void forward_train(const ExecContext&, const BatchNormShape& shape, const View& x,
                   const View& weight, const View& bias, const View& running_mean,
                   const View& running_var, double momentum, double eps, const View& y,
                   const View& save_mean, const View& save_invstd) {
  SEG_CPU_DISPATCH_FLOAT(x.dtype, "batch_norm2d", T, {
    forward_train_typed<T>(shape, x, weight, bias, running_mean, running_var, momentum, eps, y,
                           save_mean, save_invstd);
  });
}

template <class T>
void forward_eval_typed(const BatchNormShape& s, const View& x, const View& weight,
                        const View& bias, const View& running_mean, const View& running_var,
                        double eps, const View& y) {
  ChannelAffine<T> k(s.c);
  for (int64_t c = 0; c < s.c; ++c) {
    const double mean = static_cast<double>(running_mean.ptr<T>()[c * running_mean.strides[0]]);
    const double var = static_cast<double>(running_var.ptr<T>()[c * running_var.strides[0]]);
    k.set(c, mean, static_cast<double>(param_or<T>(weight, c, T(1))) / std::sqrt(var + eps),
          param_or<T>(bias, c, T(0)));
  }
  apply_affine<T>(s, x.ptr<T>(), k, y.ptr<T>());
}

void forward_eval(const ExecContext&, const BatchNormShape& shape, const View& x,
                  const View& weight, const View& bias, const View& running_mean,
                  const View& running_var, double eps, const View& y) {
  SEG_CPU_DISPATCH_FLOAT(x.dtype, "batch_norm2d", T, {
    forward_eval_typed<T>(shape, x, weight, bias, running_mean, running_var, eps, y);
  });
}

// With xhat = (x - mean) * invstd and M values per channel:
// Training:   gx = (gy - sum(gy) / M - (x - mean) * invstd^2 * sum((x - mean) * gy) / M) * invstd *
// w Evaluation: gx = gy * invstd * w Both:       gweight = sum((x - mean) * gy) * invstd, gbias =
// sum(gy)
template <class T>
void backward_typed(const BatchNormShape& s, bool training, const View& x, const View& gy,
                    const View& weight, const View& mean_v, const View& invstd_v, const View& gx,
                    const View& gweight, const View& gbias) {
  const T* px = x.ptr<T>();
  const T* pgy = gy.ptr<T>();
  const int64_t count = s.n * s.hw;
  const bool batch_terms = training && gx.defined() && count > 0;
  const bool need_sums = gweight.defined() || gbias.defined() || batch_terms;
  // Per-channel constants of the gx pass: gx = (gy - gmean - ((x - mean_hi) - mean_lo) * k) * g.
  std::vector<T> cg(static_cast<size_t>(s.c)), ck(static_cast<size_t>(s.c)),
      cm(static_cast<size_t>(s.c)), clo(static_cast<size_t>(s.c));
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(count, 1));
  parallel_for(s.c, grain, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const size_t i = static_cast<size_t>(c);
      const T mean_hi = mean_v.ptr<T>()[c];
      const double m = static_cast<double>(mean_hi);
      const double invstd = static_cast<double>(invstd_v.ptr<T>()[c]);
      const double w = static_cast<double>(param_or<T>(weight, c, T(1)));
      // Training normalised with the f64 batch mean, of which mean_hi is the rounding: recovered
      // as m + sum(x - m) / M in the same pass as the other sums.
      double mean = m, sum_gy = 0.0, dot = 0.0;
      if (need_sums && count > 0) {
        const std::array<double, 3> sums =
            channel_sums<3>(s.n, s.c, s.hw, c, [px, pgy, m](int64_t e, double* t) {
              const double g = static_cast<double>(pgy[e]), d = static_cast<double>(px[e]) - m;
              t[0] = g;
              t[1] = d * g;
              t[2] = d;
            });
        if (training) mean = m + sums[2] / static_cast<double>(count);
        sum_gy = sums[0];
        dot = sums[1] - (mean - m) * sum_gy;  // sum((x - mean) * gy)
      }
      if (gweight.defined()) gweight.ptr<T>()[c] = static_cast<T>(dot * invstd);
      if (gbias.defined()) gbias.ptr<T>()[c] = static_cast<T>(sum_gy);
      cg[i] = static_cast<T>(invstd * w);
      ck[i] =
          batch_terms ? static_cast<T>(dot * invstd * invstd / static_cast<double>(count)) : T(0);
      cm[i] = batch_terms ? static_cast<T>(sum_gy / static_cast<double>(count)) : T(0);
      clo[i] = static_cast<T>(mean - m);
    }
  });
  if (!gx.defined()) return;
  T* pgx = gx.ptr<T>();
  const int64_t planes = s.n * s.c;
  const int64_t pgrain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(s.hw, 1));
  parallel_for(planes, pgrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t c = t % s.c;
      const size_t i = static_cast<size_t>(c);
      const T g = cg[i], k = ck[i], gmean = cm[i], hi = mean_v.ptr<T>()[c], lo = clo[i];
      const T* pg = pgy + t * s.hw;
      const T* xv = px + t * s.hw;
      T* out = pgx + t * s.hw;
      if (batch_terms) {
        for (int64_t j = 0; j < s.hw; ++j) out[j] = (pg[j] - gmean - ((xv[j] - hi) - lo) * k) * g;
      } else {
        for (int64_t j = 0; j < s.hw; ++j) out[j] = pg[j] * g;
      }
    }
  });
}

void backward(const ExecContext&, const BatchNormShape& shape, bool training, const View& x,
              const View& gy, const View& weight, const View& mean, const View& invstd,
              double /*eps: mean and invstd carry it*/, const View& gx, const View& gweight,
              const View& gbias) {
  SEG_CPU_DISPATCH_FLOAT(gy.dtype, "batch_norm2d backward", T, {
    backward_typed<T>(shape, training, x, gy, weight, mean, invstd, gx, gweight, gbias);
  });
}

const BatchNormKernels kBatchNorm{&forward_train, &forward_eval, &backward};

}  // namespace

void register_norm_kernels(KernelRegistry& r) {
  r.set<OpId::batch_norm2d>(DeviceType::cpu, &kBatchNorm);
}

}  // namespace seg::cpu
