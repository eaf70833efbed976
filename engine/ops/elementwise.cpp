// Elementwise ops: unary functions, scalar ops and broadcasting binary ops.
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

// Which tensors the backward of a unary op reads. relu keeps its output, not its input: the input
// (typically a batch norm's output, which nothing else keeps) can then be freed as soon as the
// forward has moved on, as with PyTorch's in-place ReLU.
bool backward_reads_x(UnaryOp op) {
  return op == UnaryOp::abs || op == UnaryOp::log || op == UnaryOp::pow_scalar;
}
bool backward_reads_y(UnaryOp op) {
  return op == UnaryOp::relu || op == UnaryOp::exp || op == UnaryOp::sqrt || op == UnaryOp::tanh ||
         op == UnaryOp::sigmoid;
}

template <OpId id>
Tensor unary(UnaryOp op, const Tensor& x, double alpha) {
  const char* name = op_info(id).name.data();
  check_floating(x, name, "input");
  const auto& k = kernels_for<id>(x.device());
  Tensor xc = contiguous_data(x);
  Tensor y = empty(x.sizes(), x.dtype(), x.device());
  k.forward(exec_context(y), op, alpha, view_of(xc), view_of(y));
  if (any_requires_grad({x})) {
    SavedTensor sx(backward_reads_x(op) ? xc : Tensor());
    SavedTensor sy(backward_reads_y(op) ? y : Tensor());
    record(backward_node_name(name), {x}, {&y},
           [op, alpha, sx, sy, &k](const std::vector<Tensor>& g, const std::vector<bool>&) {
             Tensor gy = contiguous_data(g[0]);
             Tensor gx = empty_like(gy);
             k.backward(exec_context(gy), op, alpha, view_of(sx.get()), view_of(sy.get()),
                        view_of(gy), view_of(gx));
             return std::vector<Tensor>{gx};
           });
  }
  return y;
}

}  // namespace

Tensor neg(const Tensor& x) { return unary<OpId::neg>(UnaryOp::neg, x, 0.0); }
Tensor relu(const Tensor& x) { return unary<OpId::relu>(UnaryOp::relu, x, 0.0); }
Tensor abs(const Tensor& x) { return unary<OpId::abs>(UnaryOp::abs, x, 0.0); }
Tensor exp(const Tensor& x) { return unary<OpId::exp>(UnaryOp::exp, x, 0.0); }
Tensor log(const Tensor& x) { return unary<OpId::log>(UnaryOp::log, x, 0.0); }
Tensor sqrt(const Tensor& x) { return unary<OpId::sqrt>(UnaryOp::sqrt, x, 0.0); }
Tensor tanh(const Tensor& x) { return unary<OpId::tanh>(UnaryOp::tanh, x, 0.0); }
Tensor sigmoid(const Tensor& x) { return unary<OpId::sigmoid>(UnaryOp::sigmoid, x, 0.0); }
Tensor add_scalar(const Tensor& x, double s) { return unary<OpId::add_scalar>(UnaryOp::add_scalar, x, s); }
Tensor mul_scalar(const Tensor& x, double s) { return unary<OpId::mul_scalar>(UnaryOp::mul_scalar, x, s); }
Tensor pow_scalar(const Tensor& x, double e) { return unary<OpId::pow_scalar>(UnaryOp::pow_scalar, x, e); }
Tensor rsub_scalar(double s, const Tensor& x) {
  return unary<OpId::rsub_scalar>(UnaryOp::rsub_scalar, x, s);
}

Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op) {
  const size_t n = std::max(a.size(), b.size());
  Shape out(n);
  for (size_t i = 0; i < n; ++i) {
    int64_t da = i < n - a.size() ? 1 : a[i - (n - a.size())];
    int64_t db = i < n - b.size() ? 1 : b[i - (n - b.size())];
    SEG_CHECK(da == db || da == 1 || db == 1, op, ": shapes ", shape_str(a), " and ", shape_str(b),
              " do not broadcast");
    out[i] = da == 1 ? db : da;
  }
  return out;
}

Tensor sum_to(const Tensor& g, const Shape& shape) {
  if (g.sizes() == shape) return g;
  const int lead = g.dim() - static_cast<int>(shape.size());
  SEG_CHECK(lead >= 0, "sum_to: cannot reduce ", g.str(), " to ", shape_str(shape));
  std::vector<int> dims;
  for (int d = 0; d < g.dim(); ++d) {
    if (d < lead || (shape[d - lead] == 1 && g.size(d) != 1)) dims.push_back(d);
  }
  Tensor r = dims.empty() ? g : sum(g, dims, /*keepdim=*/true);
  return r.reshape(shape);
}

namespace {

template <OpId id>
Tensor binary(BinaryOp op, const Tensor& a, const Tensor& b) {
  const char* name = op_info(id).name.data();
  SEG_CHECK(a.defined() && b.defined(), name, ": undefined input");
  check_same_device_dtype(name, a, {b});
  SEG_CHECK(a.dtype() != DType::u8 && a.dtype() != DType::bf16 && a.dtype() != DType::f16, name,
            ": ", dtype_name(a.dtype()), " arithmetic is not supported");
  const auto& k = kernels_for<id>(a.device());
  Shape shape = broadcast_shapes(a.sizes(), b.sizes(), name);
  Tensor out = empty(shape, a.dtype(), a.device());
  Tensor ea = a.detach().expand(shape);
  Tensor eb = b.detach().expand(shape);
  k.forward(exec_context(out), op, view_of(ea), view_of(eb), view_of(out));
  if (any_requires_grad({a, b})) {
    Shape sa = a.sizes(), sb = b.sizes();
    // mul needs both operands; div needs b and the output.
    SavedTensor saved_a(op == BinaryOp::mul ? a : Tensor());
    SavedTensor saved_b(op == BinaryOp::mul || op == BinaryOp::div ? b : Tensor());
    SavedTensor saved_out(op == BinaryOp::div ? out : Tensor());
    record(backward_node_name(name), {a, b}, {&out},
           [op, sa, sb, saved_a, saved_b, saved_out](const std::vector<Tensor>& grads,
                                                     const std::vector<bool>& needs) {
             const Tensor& g = grads[0];
             Tensor ga, gb;
             switch (op) {
               case BinaryOp::add:
                 if (needs[0]) ga = sum_to(g, sa);
                 if (needs[1]) gb = sum_to(g, sb);
                 break;
               case BinaryOp::sub:
                 if (needs[0]) ga = sum_to(g, sa);
                 if (needs[1]) gb = neg(sum_to(g, sb));
                 break;
               case BinaryOp::mul:
                 if (needs[0]) ga = sum_to(mul(g, saved_b.get()), sa);
                 if (needs[1]) gb = sum_to(mul(g, saved_a.get()), sb);
                 break;
               case BinaryOp::div: {
                 Tensor g_over_b = div(g, saved_b.get());
                 if (needs[0]) ga = sum_to(g_over_b, sa);
                 if (needs[1]) gb = neg(sum_to(mul(g_over_b, saved_out.get()), sb));
                 break;
               }
             }
             // sum_to may return the incoming gradient itself; give each input its own tensor
             // shape (a view is fine: consumers never write into gradients they receive).
             return std::vector<Tensor>{ga, gb};
           });
  }
  return out;
}

}  // namespace

Tensor add(const Tensor& a, const Tensor& b) { return binary<OpId::add>(BinaryOp::add, a, b); }
Tensor sub(const Tensor& a, const Tensor& b) { return binary<OpId::sub>(BinaryOp::sub, a, b); }
Tensor mul(const Tensor& a, const Tensor& b) { return binary<OpId::mul>(BinaryOp::mul, a, b); }
Tensor div(const Tensor& a, const Tensor& b) { return binary<OpId::div>(BinaryOp::div, a, b); }

}  // namespace seg
