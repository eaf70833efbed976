// Kernel interfaces of softmax / log-softmax over one dim, and of cross entropy fused with
// log-softmax over the class dim of (N, C, inner) logits.
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

struct CrossEntropyKernels {
  // Per position: loss = w[y] * (logsumexp(logits) - logits[y]) and wsum = w[y] (w = 1 when weight
  // is undefined); both 0 at ignored positions. lse (n, inner) saves the log-sum-exp for backward.
  // A label outside [0, c) that is not ignore_index contributes nothing and is counted in
  // `bad_count` (i32 scalar, zeroed by the caller), which the caller turns into an error.
  void (*forward)(const ExecContext& ctx, const CrossEntropyShape& shape, const View& logits,
                  const View& labels, const View& weight, const View& loss, const View& wsum,
                  const View& lse, const View& bad_count);
  // glogits (written) = scale * w[y] * (softmax(logits) - onehot(y)), 0 at ignored positions.
  // `scale` is a device scalar (numel 1) or per position (n, inner) (reduction 'none').
  void (*backward)(const ExecContext& ctx, const CrossEntropyShape& shape, const View& logits,
                   const View& labels, const View& weight, const View& lse, const View& scale,
                   const View& glogits);
};

}  // namespace seg
