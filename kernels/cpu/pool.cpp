// CPU kernels of max pooling and adaptive average pooling (contiguous NCHW).
//
// Design notes
// - Forward passes are parallel over output rows (n * c * p of them): every output is computed by
//   one thread from its window alone.
// - Backward passes scatter into gx, which is only deterministic when one thread owns each (n, c)
//   plane of gx and walks its outputs in a fixed order: they are parallel over planes. (A window's
//   winner, or an adaptive bin, always lies in the output's own plane.)
// - Window and bin bounds, the output size and the max comparison come from kernels/common/pool.h,
//   shared with the CUDA kernels. Averages accumulate in f64.
#include <limits>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"

namespace seg::cpu {
namespace {

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(work_per_item, 1));
}

// ---- max pooling ----

template <class T>
void max_pool_forward_typed(const Pool2dShape& s, const View& x, const View& y,
                            const View& indices) {
  const T* px = x.ptr<T>();
  T* py = y.ptr<T>();
  int32_t* pi = indices.ptr<int32_t>();
  const int64_t rows = s.n * s.c * s.p;
  parallel_for(rows, grain_for(s.q * s.kernel_h * s.kernel_w), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / s.p, i = r % s.p;
      const T* xp = px + plane * s.h * s.w;
      const PoolWindow wh = pool_window(i, s.h, s.kernel_h, s.stride_h, s.pad_h);
      for (int64_t j = 0; j < s.q; ++j) {
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
        py[r * s.q + j] = best;
        pi[r * s.q + j] = static_cast<int32_t>(best_index);
      }
    }
  });
}

void max_pool_forward(const ExecContext&, const Pool2dShape& shape, const View& x, const View& y,
                      const View& indices) {
  SEG_CPU_DISPATCH_FLOAT(x.dtype, "max_pool2d", T,
                         { max_pool_forward_typed<T>(shape, x, y, indices); });
}

template <class T>
void max_pool_backward_typed(const Pool2dShape& s, const View& gy, const View& indices,
                             const View& gx) {
  const T* pgy = gy.ptr<T>();
  const int32_t* pi = indices.ptr<int32_t>();
  T* pgx = gx.ptr<T>();
  const int64_t plane_in = s.h * s.w, plane_out = s.p * s.q;
  parallel_for(s.n * s.c, grain_for(plane_in + plane_out), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* g = pgx + t * plane_in;
      std::fill(g, g + plane_in, T(0));
      const T* go = pgy + t * plane_out;
      const int32_t* io = pi + t * plane_out;
      for (int64_t o = 0; o < plane_out; ++o) g[io[o]] += go[o];
    }
  });
}

void max_pool_backward(const ExecContext&, const Pool2dShape& shape, const View& gy,
                       const View& indices, const View& gx) {
  SEG_CPU_DISPATCH_FLOAT(gy.dtype, "max_pool2d backward", T,
                         { max_pool_backward_typed<T>(shape, gy, indices, gx); });
}

// ---- adaptive average pooling ----

template <class T>
void adaptive_avg_forward_typed(const Pool2dShape& s, const View& x, const View& y) {
  const T* px = x.ptr<T>();
  T* py = y.ptr<T>();
  const int64_t rows = s.n * s.c * s.p;
  // A row of outputs reads about (h / p + 1) input rows of w values.
  parallel_for(rows, grain_for((s.h / s.p + 1) * s.w), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / s.p, i = r % s.p;
      const T* xp = px + plane * s.h * s.w;
      const int64_t h0 = adaptive_start(i, s.h, s.p), h1 = adaptive_end(i, s.h, s.p);
      for (int64_t j = 0; j < s.q; ++j) {
        const int64_t w0 = adaptive_start(j, s.w, s.q), w1 = adaptive_end(j, s.w, s.q);
        double acc = 0.0;
        for (int64_t ih = h0; ih < h1; ++ih) {
          const T* row = xp + ih * s.w;
          for (int64_t iw = w0; iw < w1; ++iw) acc += static_cast<double>(row[iw]);
        }
        py[r * s.q + j] = static_cast<T>(acc / static_cast<double>((h1 - h0) * (w1 - w0)));
      }
    }
  });
}

void adaptive_avg_forward(const ExecContext&, const Pool2dShape& shape, const View& x,
                          const View& y) {
  SEG_CPU_DISPATCH_FLOAT(x.dtype, "adaptive_avg_pool2d", T,
                         { adaptive_avg_forward_typed<T>(shape, x, y); });
}

template <class T>
void adaptive_avg_backward_typed(const Pool2dShape& s, const View& gy, const View& gx) {
  const T* pgy = gy.ptr<T>();
  T* pgx = gx.ptr<T>();
  const int64_t plane_in = s.h * s.w, plane_out = s.p * s.q;
  parallel_for(s.n * s.c, grain_for(plane_in + plane_out), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* g = pgx + t * plane_in;
      std::fill(g, g + plane_in, T(0));
      const T* go = pgy + t * plane_out;
      for (int64_t i = 0; i < s.p; ++i) {
        const int64_t h0 = adaptive_start(i, s.h, s.p), h1 = adaptive_end(i, s.h, s.p);
        for (int64_t j = 0; j < s.q; ++j) {
          const int64_t w0 = adaptive_start(j, s.w, s.q), w1 = adaptive_end(j, s.w, s.q);
          const T share = go[i * s.q + j] / static_cast<T>((h1 - h0) * (w1 - w0));
          for (int64_t ih = h0; ih < h1; ++ih) {
            T* row = g + ih * s.w;
            for (int64_t iw = w0; iw < w1; ++iw) row[iw] += share;
          }
        }
      }
    }
  });
}

void adaptive_avg_backward(const ExecContext&, const Pool2dShape& shape, const View& gy,
                           const View& gx) {
  SEG_CPU_DISPATCH_FLOAT(gy.dtype, "adaptive_avg_pool2d backward", T,
                         { adaptive_avg_backward_typed<T>(shape, gy, gx); });
}

const MaxPool2dKernels kMaxPool{&max_pool_forward, &max_pool_backward};
const AdaptiveAvgPool2dKernels kAdaptiveAvgPool{&adaptive_avg_forward, &adaptive_avg_backward};

}  // namespace

void register_pool_kernels(KernelRegistry& r) {
  r.set<OpId::max_pool2d>(DeviceType::cpu, &kMaxPool);
  r.set<OpId::adaptive_avg_pool2d>(DeviceType::cpu, &kAdaptiveAvgPool);
}

}  // namespace seg::cpu
