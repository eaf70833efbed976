// Kernel interface of the triplet margin loss, forward and backward fused (PyTorch's
// triplet_margin_loss with p = 1 or 2: d(x, y) = || x - y + eps ||_p, eps = 1e-6).
#pragma once

#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

// anchor, positive, negative: (n, d) contiguous.
struct TripletShape {
  int64_t n = 0, d = 0;
  int p = 2;             // 1 or 2
  double margin = 1.0;
  double eps = 1e-6;
};

struct TripletKernels {
  // loss (n) = max(d(a, p) - d(a, n) + margin, 0); dist_ap, dist_an (n) saved for backward.
  // As in PyTorch (clamp_min), the gradient passes where the hinge argument is >= 0.
  void (*forward)(const ExecContext& ctx, const TripletShape& shape, const View& anchor,
                  const View& positive, const View& negative, const View& loss,
                  const View& dist_ap, const View& dist_an);
  // Gradients (written) of anchor, positive, negative; `scale` (n) is the gradient of each sample's
  // loss (1/n * upstream for the mean). Samples whose hinge argument is < 0 get zero gradients; a
  // zero distance gets a zero norm gradient. Any of ga/gp/gn may
  // be undefined (not needed).
  void (*backward)(const ExecContext& ctx, const TripletShape& shape, const View& anchor,
                   const View& positive, const View& negative, const View& dist_ap,
                   const View& dist_an, const View& scale, const View& ga, const View& gp,
                   const View& gn);
};

}  // namespace seg
