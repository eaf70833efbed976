// dropout: y = x * mask / (1 - p), mask ~ bernoulli(1 - p) drawn with the tensor random fill
// (counter-based Philox stream of the given Generator: one generator call per op, so a run is
// reproducible from the seed on any backend and thread count).
//
// Design notes
// - The saved tensor is the scaled mask (0 or 1 / (1 - p), x's dtype), so the backward is one
//   multiply, exactly the forward's scaling. p == 1 uses an all-zero mask (no 1 / 0) and draws
//   nothing. Evaluation and p == 0 return x itself, as PyTorch does.
// - No kernels of its own: bernoulli fill, an in-place scale and the binary multiply.
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

Tensor dropout(const Tensor& x, double p, bool training, Generator& gen) {
  check_floating(x, "dropout", "input");
  SEG_CHECK(p >= 0.0 && p <= 1.0, "dropout: probability p = ", p, " is outside [0, 1] (input ",
            x.str(), ")");
  if (!training || p == 0.0) return x;
  Tensor mask;  // x's shape: 0 or 1 / (1 - p)
  if (p == 1.0) {
    mask = zeros(x.sizes(), x.dtype(), x.device());
  } else {
    mask = bernoulli(x.sizes(), 1.0 - p, gen, x.dtype(), x.device());
    mask.mul_(1.0 / (1.0 - p));
  }
  Tensor y;
  {
    NoGradGuard no_grad;
    y = mul(x.detach(), mask);
  }
  if (any_requires_grad({x})) {
    SavedTensor saved_mask(mask);
    record("DropoutBackward", {x}, {&y},
           [saved_mask](const std::vector<Tensor>& g, const std::vector<bool>&) {
             return std::vector<Tensor>{mul(g[0], saved_mask.get())};
           });
  }
  return y;
}

}  // namespace seg
