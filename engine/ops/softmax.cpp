// softmax and log_softmax over any dim: x is viewed as (outer, dim, inner) and made contiguous.
// The backward reads only the output (saved), never the input: softmax' = y * (g - sum(g * y)),
// log_softmax' = g - exp(y) * sum(g).
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

template <OpId id>
Tensor softmax_impl(const Tensor& x, int dim, bool log) {
  const char* name = op_info(id).name.data();
  check_floating(x, name, "input");
  // A 0-d tensor takes dim 0 or -1 (PyTorch); its softmax is 1 and its log_softmax 0.
  const int d = wrap_dim(dim, x.dim(), name);
  SoftmaxShape shape;
  if (x.dim() > 0) {
    for (int i = 0; i < d; ++i) shape.outer *= x.size(i);
    shape.dim = x.size(d);
    for (int i = d + 1; i < x.dim(); ++i) shape.inner *= x.size(i);
  }
  const auto& k = kernels_for<id>(x.device());
  Tensor xc = contiguous_data(x);
  Tensor y = empty(x.sizes(), x.dtype(), x.device());  // x's shape, contiguous
  if (y.numel() > 0) k.forward(exec_context(y), shape, log, view_of(xc), view_of(y));
  if (any_requires_grad({x})) {
    SavedTensor sy(y);
    record(backward_node_name(name), {x}, {&y},
           [shape, log, sy, &k](const std::vector<Tensor>& g, const std::vector<bool>&) {
             Tensor gy = contiguous_data(g[0]);
             Tensor yv = sy.get();
             Tensor gx = empty_like(yv);
             if (gx.numel() > 0) {
               k.backward(exec_context(gx), shape, log, view_of(yv), view_of(gy), view_of(gx));
             }
             return std::vector<Tensor>{gx};
           });
  }
  return y;
}

}  // namespace

Tensor softmax(const Tensor& x, int dim) {
  return softmax_impl<OpId::softmax>(x, dim, false);
}
Tensor log_softmax(const Tensor& x, int dim) {
  return softmax_impl<OpId::log_softmax>(x, dim, true);
}

}  // namespace seg
