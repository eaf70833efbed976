// Kernel interfaces of softmax / log-softmax over one dim, and of cross entropy fused with
// log-softmax over the class dim of (N, C, inner) logits.
//
// Design notes
// - Every reduction along the softmax (class) dim is max-subtracted, with one max rule on both
//   backends (v > m ? v : m from the first element); f32 sums of exponentials accumulate in f64 on
//   the CPU and in f32 on CUDA (a few ulps of the sum apart).
// - CUDA layout: for (n, c, h * w) data a thread owns a position and loops over the c classes, so
//   the warp's loads are coalesced along h * w; contiguous rows (inner == 1) get a warp or a block.
// - Cross entropy never materialises the softmax: the forward saves one log-sum-exp per position
//   (in the logits' dtype) and the backward recomputes exp(logit - lse) on the fly. In f32 the
//   exponent then carries an absolute error of ulp(lse), negligible for logits of ordinary size
//   (|lse| < 64: below 4e-6).
// - Bad labels are counted by the kernel (an integer, so no float atomics; on CUDA one atomic per
//   warp); the caller turns a non-zero count into an error and looks for the first offending label
//   on the host.
// - The upstream gradient reaches the cross-entropy backward as a device View (`scale`), never as a
//   host number, so a CUDA backward needs no synchronisation.
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

// x viewed as (outer, dim, inner), contiguous; softmax along `dim`.
struct SoftmaxShape {
  int64_t outer = 1, dim = 1, inner = 1;
};

struct SoftmaxKernels {
  // y = softmax(x) or log_softmax(x) along dim (max-subtracted).
  void (*forward)(const ExecContext& ctx, const SoftmaxShape& shape, bool log, const View& x,
                  const View& y);
  // gx (written) from y and gy: softmax: y * (gy - sum(gy * y)); log: gy - exp(y) * sum(gy).
  void (*backward)(const ExecContext& ctx, const SoftmaxShape& shape, bool log, const View& y,
                   const View& gy, const View& gx);
};

// logits (n, c, inner) contiguous; labels (n, inner) i32 in [0, c) or ignore_index.
struct CrossEntropyShape {
  int64_t n = 1, c = 1, inner = 1;
  int64_t ignore_index = -100;
};

// What a label means at one position.
enum class LabelKind : uint8_t { valid, ignored, bad };

SEG_HD LabelKind cross_entropy_label_kind(int64_t label, const CrossEntropyShape& shape) {
  if (label == shape.ignore_index) return LabelKind::ignored;
  return label >= 0 && label < shape.c ? LabelKind::valid : LabelKind::bad;
}

struct CrossEntropyKernels {
  // Per position: loss = w[y] * (logsumexp(logits) - logits[y]) and wsum = w[y] (w = 1 when weight
  // is undefined); both 0 at ignored positions. lse (n, inner) saves the log-sum-exp for backward.
  // A label outside [0, c) that is not ignore_index contributes nothing and is counted in
  // `bad_count` (i32 scalar, zeroed by the caller), which the caller turns into an error.
  void (*forward)(const ExecContext& ctx, const CrossEntropyShape& shape, const View& logits,
                  const View& labels, const View& weight, const View& loss, const View& wsum,
                  const View& lse, const View& bad_count);
  // glogits (written) = scale * w[y] * (exp(logits - lse) - onehot(y)), 0 at ignored positions.
  // `scale` is a device scalar (numel 1: 'sum', and 'mean' with 1 / sum(w) folded in) or per
  // position (n, inner) (reduction 'none'), in the logits' dtype.
  void (*backward)(const ExecContext& ctx, const CrossEntropyShape& shape, const View& logits,
                   const View& labels, const View& weight, const View& lse, const View& scale,
                   const View& glogits);
};

}  // namespace seg
