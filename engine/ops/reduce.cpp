// Reductions: sum and mean over all or some dims, argmax.
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

// Sorted, unique, wrapped dims; all dims when `dims` is empty.
std::vector<int> normalise_dims(const Tensor& x, const std::vector<int>& dims, const char* op) {
  std::vector<int> out;
  if (dims.empty()) {
    for (int d = 0; d < x.dim(); ++d) out.push_back(d);
    return out;
  }
  for (int d : dims) out.push_back(wrap_dim(d, x.dim(), op));
  std::sort(out.begin(), out.end());
  SEG_CHECK(std::adjacent_find(out.begin(), out.end()) == out.end(), op, ": repeated dim in reduction");
  return out;
}

// sum (scale 1) and mean (scale 1 / count) over `dims`, with one node named after `op`.
Tensor reduce_sum(const Tensor& x, const std::vector<int>& dims, bool keepdim, const char* op,
                  bool average) {
  SEG_CHECK(x.defined(), op, ": undefined input");
  if (average) check_floating(x, op, "input");
  std::vector<int> rd = normalise_dims(x, dims, op);
  Shape kept = x.sizes();
  int64_t count = 1;
  for (int d : rd) {
    count *= kept[d];
    kept[d] = 1;
  }
  Shape out_shape;
  for (int d = 0; d < x.dim(); ++d) {
    if (keepdim || std::find(rd.begin(), rd.end(), d) == rd.end()) out_shape.push_back(kept[d]);
  }
  // PyTorch's mean of no elements is NaN (0 / 0); so is ours.
  const double scale = average ? 1.0 / static_cast<double>(count) : 1.0;
  Tensor xc = contiguous_data(x);
  Tensor y = empty(kept, x.dtype(), x.device());
  kernels_for<OpId::sum>(x.device()).sum(exec_context(y), view_of(xc), view_of(y));
  if (average) {
    kernels_for<OpId::mul_scalar>(x.device())
        .forward(exec_context(y), UnaryOp::mul_scalar, scale, view_of(y), view_of(y));
  }
  Tensor out = y.view(out_shape);
  if (any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    record(backward_node_name(op), {x}, {&out},
           [in_shape, kept, scale](const std::vector<Tensor>& g, const std::vector<bool>&) {
             const Tensor gy = scale == 1.0 ? g[0] : mul_scalar(g[0], scale);
             return std::vector<Tensor>{gy.reshape(kept).expand(in_shape)};
           });
  }
  return out;
}

}  // namespace

Tensor sum(const Tensor& x) {
  return reduce_sum(x, {}, false, "sum", false);
}
Tensor sum(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  return reduce_sum(x, dims, keepdim, "sum", false);
}

Tensor mean(const Tensor& x) { return mean(x, {}, false); }
Tensor mean(const Tensor& x, const std::vector<int>& dims, bool keepdim) {
  return reduce_sum(x, dims, keepdim, "mean", true);
}

Tensor argmax(const Tensor& x, int dim, bool keepdim) {
  SEG_CHECK(x.defined(), "argmax: undefined input");
  SEG_CHECK(x.numel() > 0, "argmax: empty input ", x.str());
  int d = wrap_dim(dim, x.dim(), "argmax");
  int64_t outer = 1, inner = 1;
  for (int i = 0; i < d; ++i) outer *= x.size(i);
  for (int i = d + 1; i < x.dim(); ++i) inner *= x.size(i);
  Shape shape = x.sizes();
  if (x.dim() > 0) {
    if (keepdim) {
      shape[d] = 1;
    } else {
      shape.erase(shape.begin() + d);
    }
  }
  Tensor xc = contiguous_data(x);
  Tensor out = empty(shape, DType::i32, x.device());
  kernels_for<OpId::argmax>(x.device())
      .argmax(exec_context(out), view_of(xc), outer, x.dim() > 0 ? x.size(d) : 1, inner, view_of(out));
  return out;
}

}  // namespace seg
