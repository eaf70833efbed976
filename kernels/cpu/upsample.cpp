// CPU kernels of bilinear resizing (PyTorch's upsample_bilinear2d with an output size), contiguous
// NCHW, forward and backward.
//
// Design notes
// - Both axes' taps (two source indices and weights per output coordinate) are computed once per
//   call with bilinear_tap from kernels/common/upsample.h, the same math as the CUDA kernels.
// - Forward: parallel over output rows (n * c * p). The interpolation is separable: a thread keeps
//   the two input rows of its current output row already resized along w, so upsampling by k
//   resizes each input row about once instead of k times; the arithmetic (and so the result) is
//   exactly that of w0h * (w0w * x00 + w1w * x01) + w1h * (w0w * x10 + w1w * x11).
// - Backward, separable too and deterministic for any thread count (no float atomics): pass 1
//   reduces every row of gy along w into t (n * c * p, w), each row owned by one thread; pass 2
//   gathers: the h taps are transposed into, for every input row, the list of (output row, weight)
//   pairs that read it, in increasing output order, and each row of gx (owned by one thread) is
//   the weighted sum of those rows of t. Work: 2 p q + 2 p w multiply-adds per plane, against
//   4 p q for a plain scatter.
#include <memory>
#include <vector>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"

namespace seg::cpu {
namespace {

int64_t grain_for(int64_t work_per_item) {
  return std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(work_per_item, 1));
}

template <class T>
std::vector<BilinearTap<T>> axis_taps(int64_t in, int64_t out, bool align_corners) {
  const T scale = bilinear_scale<T>(in, out, align_corners);
  std::vector<BilinearTap<T>> taps(static_cast<size_t>(out));
  for (int64_t o = 0; o < out; ++o)
    taps[static_cast<size_t>(o)] = bilinear_tap<T>(o, in, scale, align_corners);
  return taps;
}

// The transpose of one axis' taps: input index k is read by outputs index[begin[k] .. begin[k+1])
// with the matching weights.
template <class T>
struct AxisAdjoint {
  std::vector<int64_t> begin;  // (in + 1)
  std::vector<int64_t> index;  // (2 * out)
  std::vector<T> weight;       // (2 * out)
};

template <class T>
AxisAdjoint<T> transpose_taps(const std::vector<BilinearTap<T>>& taps, int64_t in) {
  AxisAdjoint<T> a;
  a.begin.assign(static_cast<size_t>(in + 1), 0);
  for (const BilinearTap<T>& t : taps) {
    ++a.begin[static_cast<size_t>(t.i0 + 1)];
    ++a.begin[static_cast<size_t>(t.i1 + 1)];
  }
  for (int64_t k = 0; k < in; ++k)
    a.begin[static_cast<size_t>(k + 1)] += a.begin[static_cast<size_t>(k)];
  a.index.resize(2 * taps.size());
  a.weight.resize(2 * taps.size());
  std::vector<int64_t> fill(a.begin.begin(), a.begin.end() - 1);
  for (size_t o = 0; o < taps.size(); ++o) {
    const BilinearTap<T>& t = taps[o];
    size_t k0 = static_cast<size_t>(fill[static_cast<size_t>(t.i0)]++);
    a.index[k0] = static_cast<int64_t>(o);
    a.weight[k0] = t.w0;
    size_t k1 = static_cast<size_t>(fill[static_cast<size_t>(t.i1)]++);
    a.index[k1] = static_cast<int64_t>(o);
    a.weight[k1] = t.w1;
  }
  return a;
}

template <class T>
void forward_typed(const UpsampleShape& s, const View& x, const View& y) {
  const std::vector<BilinearTap<T>> th = axis_taps<T>(s.h, s.p, s.align_corners);
  const std::vector<BilinearTap<T>> tw = axis_taps<T>(s.w, s.q, s.align_corners);
  const T* px = x.ptr<T>();
  T* py = y.ptr<T>();
  const int64_t rows = s.n * s.c * s.p;
  parallel_for(rows, grain_for(3 * s.q), [&](int64_t begin, int64_t end) {
    // The two input rows of the current output row, resized along w (keyed by plane * h + row);
    // consecutive output rows mostly share them.
    std::vector<T> buf0(static_cast<size_t>(s.q)), buf1(static_cast<size_t>(s.q));
    int64_t key0 = -1, key1 = -1;
    auto resize_row = [&](int64_t key, std::vector<T>& buf) {
      const T* src = px + key * s.w;
      for (int64_t j = 0; j < s.q; ++j) {
        const BilinearTap<T>& b = tw[static_cast<size_t>(j)];
        buf[static_cast<size_t>(j)] = b.w0 * src[b.i0] + b.w1 * src[b.i1];
      }
    };
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / s.p, i = r % s.p;
      const BilinearTap<T>& a = th[static_cast<size_t>(i)];
      const int64_t k0 = plane * s.h + a.i0, k1 = plane * s.h + a.i1;
      if (k0 != key0) {
        if (k0 == key1) {
          std::swap(buf0, buf1);
          std::swap(key0, key1);
        } else {
          resize_row(k0, buf0);
          key0 = k0;
        }
      }
      if (k1 != k0 && k1 != key1) {
        resize_row(k1, buf1);
        key1 = k1;
      }
      const T* r0 = buf0.data();
      const T* r1 = k1 == k0 ? buf0.data() : buf1.data();
      T* out = py + r * s.q;
      for (int64_t j = 0; j < s.q; ++j) out[j] = a.w0 * r0[j] + a.w1 * r1[j];
    }
  });
}

void forward(const ExecContext&, const UpsampleShape& shape, const View& x, const View& y) {
  SEG_CPU_DISPATCH_FLOAT(x.dtype, "upsample_bilinear2d", T, { forward_typed<T>(shape, x, y); });
}

template <class T>
void backward_typed(const UpsampleShape& s, const View& gy, const View& gx) {
  const std::vector<BilinearTap<T>> tw = axis_taps<T>(s.w, s.q, s.align_corners);
  const AxisAdjoint<T> ah = transpose_taps(axis_taps<T>(s.h, s.p, s.align_corners), s.h);
  const T* pgy = gy.ptr<T>();
  T* pgx = gx.ptr<T>();
  // Pass 1: every row of gy reduced along w, t (n * c * p, w); each row is one thread's.
  // (default-initialised: every row is zeroed by its owner)
  std::unique_ptr<T[]> t(new T[static_cast<size_t>(s.n * s.c * s.p * s.w)]);
  parallel_for(s.n * s.c * s.p, grain_for(2 * s.q + s.w), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* out = t.get() + r * s.w;
      std::fill(out, out + s.w, T(0));
      const T* g = pgy + r * s.q;
      for (int64_t j = 0; j < s.q; ++j) {
        const BilinearTap<T>& b = tw[static_cast<size_t>(j)];
        out[b.i0] += b.w0 * g[j];
        out[b.i1] += b.w1 * g[j];
      }
    }
  });
  // Pass 2: every row of gx gathers the rows of t that read it.
  const int64_t rows_per_input = 2 * s.p / s.h + 1;
  parallel_for(s.n * s.c * s.h, grain_for(rows_per_input * s.w), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t plane = r / s.h, ih = r % s.h;
      T* out = pgx + r * s.w;
      std::fill(out, out + s.w, T(0));
      for (int64_t e = ah.begin[static_cast<size_t>(ih)]; e < ah.begin[static_cast<size_t>(ih + 1)];
           ++e) {
        const T a = ah.weight[static_cast<size_t>(e)];
        const T* src = t.get() + (plane * s.p + ah.index[static_cast<size_t>(e)]) * s.w;
        for (int64_t iw = 0; iw < s.w; ++iw) out[iw] += a * src[iw];
      }
    }
  });
}

void backward(const ExecContext&, const UpsampleShape& shape, const View& gy, const View& gx) {
  SEG_CPU_DISPATCH_FLOAT(gy.dtype, "upsample_bilinear2d backward", T,
                         { backward_typed<T>(shape, gy, gx); });
}

const UpsampleBilinearKernels kUpsampleBilinear{&forward, &backward};

}  // namespace

void register_upsample_kernels(KernelRegistry& r) {
  r.set<OpId::upsample_bilinear2d>(DeviceType::cpu, &kUpsampleBilinear);
}

}  // namespace seg::cpu
