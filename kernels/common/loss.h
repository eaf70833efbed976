// Kernel interface of the triplet margin loss, forward and backward fused (PyTorch's
// triplet_margin_loss with p = 1 or 2: d(x, y) = || x - y + eps ||_p, eps = 1e-6), and the
// per-sample math both backends share.
//
// Design notes
// - One pass over (anchor, positive, negative) per direction: the forward keeps only the two
//   distances per sample; the backward recomputes the differences instead of saving (n, d) buffers.
// - The hinge test of the backward uses the saved (storage-dtype) distances, and so does the loss
//   of the forward, so both directions agree on which samples are active even at the border.
// - Both backends accumulate the norms and compute the gradient terms in f64 (the CUDA kernels with
//   a warp or a block per sample and fixed-order reductions), so their stored distances, and hence
//   the active samples, agree.
// - As PyTorch (clamp_min), the gradient passes where the hinge argument is >= 0; the L2 norm has a
//   zero gradient at a zero distance and |t| has gradient sign(t) (0 at 0).
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

// anchor, positive, negative: (n, d) contiguous.
struct TripletShape {
  int64_t n = 0, d = 0;
  int p = 2;  // 1 or 2
  double margin = 1.0;
  double eps = 1e-6;
};

// One element's contribution to the p-norm accumulator: |t| (p = 1) or t^2 (p = 2).
template <class A>
SEG_HD A triplet_norm_term(A t, int p) {
  return p == 1 ? (t < A(0) ? -t : t) : t * t;
}

// The norm from the accumulated terms.
template <class A>
SEG_HD A triplet_norm_finish(A acc, int p) {
  return p == 1 ? acc : std::sqrt(acc);
}

// d(a, p) - d(a, n) + margin, from the distances as stored.
template <class A>
SEG_HD A triplet_hinge(A dist_ap, A dist_an, A margin) {
  return dist_ap - dist_an + margin;
}

// clamp_min(h, 0) passes its gradient where h >= 0.
template <class A>
SEG_HD bool triplet_active(A hinge) {
  return hinge >= A(0);
}

// d ||t||_p / d t for one element t of the difference whose norm is `dist`.
template <class A>
SEG_HD A triplet_norm_grad(A t, A dist, int p) {
  if (p == 1) return t > A(0) ? A(1) : (t < A(0) ? A(-1) : A(0));
  return dist == A(0) ? A(0) : t / dist;
}

struct TripletKernels {
  // loss (n) = max(d(a, p) - d(a, n) + margin, 0); dist_ap, dist_an (n) saved for backward.
  void (*forward)(const ExecContext& ctx, const TripletShape& shape, const View& anchor,
                  const View& positive, const View& negative, const View& loss, const View& dist_ap,
                  const View& dist_an);
  // Gradients (written) of anchor, positive, negative. `scale` is the gradient of each sample's
  // loss: (n) (reduction 'none'), or a device scalar (numel 1) shared by every sample ('sum', and
  // 'mean' with the 1/n folded in). Samples whose hinge argument is < 0 get zero gradients. Any of
  // ga/gp/gn may be undefined (not needed).
  void (*backward)(const ExecContext& ctx, const TripletShape& shape, const View& anchor,
                   const View& positive, const View& negative, const View& dist_ap,
                   const View& dist_an, const View& scale, const View& ga, const View& gp,
                   const View& gn);
};

}  // namespace seg
