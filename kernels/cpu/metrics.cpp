// CPU kernel of the segmentation metric: argmax over the class logits (optionally bilinearly
// upsampled to the label size on the fly) and the confusion matrix, in one pass.
//
// Design notes
// - Parallel over label rows (n * label_h). A task keeps, for its current row, the best value and
//   class of every pixel and sweeps the classes in the outer loop and the pixels in the inner one,
//   so the logits are read row by row (contiguous) instead of with a stride of h * w per class.
// - Upsampled path: the taps of every label column are computed once per call with bilinear_tap,
//   each row's two taps per row, and every value is bilinear_blend(row taps, bilinear_blend(column
//   taps)) - the same arithmetic, bit for bit, as upsample_bilinear2d's kernels (the row is resized
//   along w first, then blended along h), so the prediction equals argmax(upsample_bilinear2d(x)).
//   Equal sizes skip the interpolation (the identity, except that it does not spread an Inf or NaN
//   of a neighbour through a zero weight).
// - Counts go to a per-task histogram (c * c i64) merged into the matrix at the end under a lock:
//   integer sums, so the result does not depend on the thread count or order.
#include <limits>
#include <mutex>
#include <vector>

#include "kernels/common/registry.h"
#include "kernels/cpu/cpu_util.h"

namespace seg::cpu {
namespace {

template <class T>
void accumulate_typed(const ConfusionShape& s, const T* x, const int32_t* labels,
                      int64_t* confusion, int32_t* bad_count) {
  const int64_t c = s.c, lh = s.label_h, lw = s.label_w;
  const int64_t plane = s.h * s.w;
  const bool resize = s.h != lh || s.w != lw;
  std::vector<BilinearTap<T>> tw;
  T scale_h = T(0);
  if (resize) {
    scale_h = bilinear_scale<T>(s.h, lh, s.align_corners);
    const T scale_w = bilinear_scale<T>(s.w, lw, s.align_corners);
    tw.resize(static_cast<size_t>(lw));
    for (int64_t j = 0; j < lw; ++j) {
      tw[static_cast<size_t>(j)] = bilinear_tap<T>(j, s.w, scale_w, s.align_corners);
    }
  }
  std::mutex merge;
  const int64_t rows = s.n * lh;
  const int64_t per_row = std::max<int64_t>(1, c * lw * (resize ? 3 : 1));
  const int64_t grain = std::max<int64_t>(1, kParallelGrain / per_row);
  parallel_for(rows, grain, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> hist(static_cast<size_t>(c * c), 0);
    int64_t bad = 0;
    std::vector<T> best(static_cast<size_t>(lw)), value(static_cast<size_t>(lw));
    std::vector<int32_t> best_k(static_cast<size_t>(lw));
    for (int64_t r = begin; r < end; ++r) {
      const int64_t img = r / lh, i = r % lh;
      const T* xi = x + img * c * plane;  // (c, h, w) of this image
      // value[j] = the logit of class k at label pixel (i, j)
      auto class_row = [&](int64_t k) {
        if (!resize) {
          const T* src = xi + k * plane + i * s.w;
          for (int64_t j = 0; j < lw; ++j) value[static_cast<size_t>(j)] = src[j];
          return;
        }
        const BilinearTap<T> a = bilinear_tap<T>(i, s.h, scale_h, s.align_corners);
        const T* src0 = xi + k * plane + a.i0 * s.w;
        const T* src1 = xi + k * plane + a.i1 * s.w;
        for (int64_t j = 0; j < lw; ++j) {
          const BilinearTap<T>& b = tw[static_cast<size_t>(j)];
          const T r0 = bilinear_blend(b.w0, src0[b.i0], b.w1, src0[b.i1]);
          const T r1 = bilinear_blend(b.w0, src1[b.i0], b.w1, src1[b.i1]);
          value[static_cast<size_t>(j)] = bilinear_blend(a.w0, r0, a.w1, r1);
        }
      };
      class_row(0);
      for (int64_t j = 0; j < lw; ++j) {
        best[static_cast<size_t>(j)] = value[static_cast<size_t>(j)];
        best_k[static_cast<size_t>(j)] = 0;
      }
      for (int64_t k = 1; k < c; ++k) {
        class_row(k);
        for (int64_t j = 0; j < lw; ++j) {
          const size_t u = static_cast<size_t>(j);
          if (argmax_replaces(value[u], best[u])) {
            best[u] = value[u];
            best_k[u] = static_cast<int32_t>(k);
          }
        }
      }
      const int32_t* lab = labels + r * lw;
      for (int64_t j = 0; j < lw; ++j) {
        const int64_t y = lab[j];
        if (y == s.ignore_index) continue;
        if (y < 0 || y >= c) {
          ++bad;
          continue;
        }
        ++hist[static_cast<size_t>(y * c + best_k[static_cast<size_t>(j)])];
      }
    }
    std::lock_guard<std::mutex> lock(merge);
    for (int64_t b = 0; b < c * c; ++b) confusion[b] += hist[static_cast<size_t>(b)];
    const int64_t total = static_cast<int64_t>(*bad_count) + bad;
    *bad_count =
        static_cast<int32_t>(std::min<int64_t>(total, std::numeric_limits<int32_t>::max()));
  });
}

void accumulate(const ExecContext&, const ConfusionShape& shape, const View& logits,
                const View& labels, const View& confusion, const View& bad_count) {
  if (labels.dtype != DType::i32) unsupported_dtype("confusion_matrix labels", labels.dtype);
  if (shape.n == 0 || shape.label_h == 0 || shape.label_w == 0 || shape.c == 0) return;
  SEG_CPU_DISPATCH_FLOAT(logits.dtype, "confusion_matrix", T, {
    accumulate_typed<T>(shape, logits.ptr<const T>(), labels.ptr<const int32_t>(),
                        confusion.ptr<int64_t>(), bad_count.ptr<int32_t>());
  });
}

const ConfusionKernels kConfusion{&accumulate};

}  // namespace

void register_metrics_kernels(KernelRegistry& r) {
  r.set<OpId::confusion_matrix>(DeviceType::cpu, &kConfusion);
}

}  // namespace seg::cpu
