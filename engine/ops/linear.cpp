// Matrix products: matmul (2-D and batched, a 2-D operand broadcast over the batch) and linear.
//
// Design notes
// - Every product is one call of the GemmKernels table (strided-batched GEMM). Operands are passed
//   as they are stored whenever their last two dims are row-major or column-major with unit stride
//   (a transposed view becomes a transpose flag, an expanded batch a batch stride of 0); only other
//   layouts are copied.
// - A batch whose rows are stacked in memory ((b, m, k) contiguous times a shared (k, n)) is folded
//   into one GEMM with b*m rows, which is both faster and the same arithmetic. Gradients of a
//   matrix shared by the batch are summed by the kernel itself (stride_c = 0, or one folded GEMM
//   over b*m), in a fixed order: no temporary (b, k, n) and no separate reduction.
// - linear: y (M, out) = x (M, in) @ W^T + b with W used in place through trans_b; the bias is
//   written into y first and the GEMM adds to it (beta = 1). Its gradient is ones (1, M) @ gy.
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

void check_cpu_dtype(const Tensor& t, const char* op, const char* arg) {
  SEG_CHECK(!t.device().is_cpu() || t.dtype() == DType::f32 || t.dtype() == DType::f64, op, ": ",
            arg, " ", t.str(), ": the CPU computes products in f32 and f64 only");
}

// How the GEMM reads the matrices in the last two dims of a 2-D or 3-D tensor (rows, cols).
struct MatArg {
  Tensor storage;  // keeps a copy alive when one was needed
  View view;
  int64_t rows = 0, cols = 0;
  bool trans = false;        // memory holds the matrix transposed: (cols, rows) row-major
  int64_t ld = 1;            // leading dimension of the stored row-major matrix
  int64_t batch_stride = 0;  // 0 for a 2-D tensor (or a broadcast batch)
  int64_t batch = 1;
};

MatArg mat_arg(const Tensor& t_in) {
  Tensor t = t_in.detach();
  const int nd = t.dim();
  MatArg a;
  a.rows = t.size(nd - 2);
  a.cols = t.size(nd - 1);
  const int64_t rs = t.stride(nd - 2), cs = t.stride(nd - 1);
  if ((cs == 1 || a.cols <= 1) && (a.rows <= 1 || rs >= std::max<int64_t>(1, a.cols))) {
    a.trans = false;
    a.ld = a.rows <= 1 ? std::max<int64_t>(1, a.cols) : rs;
  } else if ((rs == 1 || a.rows <= 1) && (a.cols <= 1 || cs >= std::max<int64_t>(1, a.rows))) {
    a.trans = true;
    a.ld = a.cols <= 1 ? std::max<int64_t>(1, a.rows) : cs;
  } else {
    t = t.contiguous();
    a.trans = false;
    a.ld = std::max<int64_t>(1, a.cols);
  }
  a.storage = t;
  a.view = view_of(t);
  if (nd == 3) {
    a.batch = t.size(0);
    a.batch_stride = a.batch > 1 ? t.stride(0) : 0;
  }
  return a;
}

// Stored row-major with the batches stacked: (batch * rows, cols) with the same ld.
bool foldable(const MatArg& a) {
  return !a.trans && (a.batch <= 1 || a.batch_stride == a.rows * a.ld);
}

// c = op(x) @ op(y) (+ beta * c), where op transposes when tx / ty is set.
// x, y: 2-D or 3-D (a 2-D operand is shared by the batch). c: contiguous, (batch, m, n) or, when
// it is 2-D and the operands are batched, the sum over the batch of the products.
void product(const GemmKernels& kern, const Tensor& c, const Tensor& x, bool tx, const Tensor& y,
             bool ty, double beta = 0.0) {
  MatArg a = mat_arg(x), b = mat_arg(y);
  const bool x3 = x.dim() == 3, y3 = y.dim() == 3;
  const int64_t batch = x3 ? a.batch : (y3 ? b.batch : 1);
  const int64_t m = tx ? a.cols : a.rows, kk = tx ? a.rows : a.cols, n = ty ? b.rows : b.cols;
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.k = kk;
  g.beta = beta;
  g.trans_a = a.trans != tx;
  g.trans_b = b.trans != ty;
  g.lda = a.ld;
  g.ldb = b.ld;
  g.ldc = std::max<int64_t>(1, n);
  const bool c_batched = c.dim() == 3;
  if (c_batched && x3 && !y3 && !tx && foldable(a)) {
    g.m = batch * m;  // (batch*m, k) @ (k, n) in one GEMM
  } else if (!c_batched && x3 && y3 && tx && !ty && foldable(a) && foldable(b)) {
    g.k = batch * kk;  // sum_b x_b^T y_b = (batch*rows, m)^T @ (batch*rows, n)
  } else {
    g.batch = batch;
    g.stride_a = a.batch_stride;
    g.stride_b = b.batch_stride;
    g.stride_c = c_batched ? m * n : 0;
  }
  kern.gemm(exec_context(c), g, a.view, b.view, view_of(c));
}

}  // namespace

Tensor matmul(const Tensor& a, const Tensor& b) {
  check_floating(a, "matmul", "a");
  check_floating(b, "matmul", "b");
  check_same_device_dtype("matmul", a, {b});
  check_cpu_dtype(a, "matmul", "a");
  SEG_CHECK(a.dim() == 2 || a.dim() == 3, "matmul: a ", shape_str(a.sizes()),
            " must be (m, k) or (batch, m, k)");
  SEG_CHECK(b.dim() == 2 || b.dim() == 3, "matmul: b ", shape_str(b.sizes()),
            " must be (k, n) or (batch, k, n)");
  SEG_CHECK(a.size(-1) == b.size(-2), "matmul: a ", shape_str(a.sizes()), " and b ",
            shape_str(b.sizes()), " do not match: a has ", a.size(-1), " columns, b has ",
            b.size(-2), " rows");
  SEG_CHECK(a.dim() != 3 || b.dim() != 3 || a.size(0) == b.size(0), "matmul: a ",
            shape_str(a.sizes()), " and b ", shape_str(b.sizes()), " have different batch sizes");
  const auto& kern = kernels_for<OpId::matmul>(a.device());
  const int64_t m = a.size(-2), n = b.size(-1);
  Shape shape{m, n};
  if (a.dim() == 3) shape.insert(shape.begin(), a.size(0));
  if (b.dim() == 3 && a.dim() == 2) shape.insert(shape.begin(), b.size(0));
  Tensor out = empty(shape, a.dtype(), a.device());
  product(kern, out, a, false, b, false);
  if (any_requires_grad({a, b})) {
    SavedTensor saved_a(b.requires_grad() ? a : Tensor());
    SavedTensor saved_b(a.requires_grad() ? b : Tensor());
    Shape sa = a.sizes(), sb = b.sizes();
    record("MatmulBackward", {a, b}, {&out},
           [&kern, saved_a, saved_b, sa, sb](const std::vector<Tensor>& g,
                                             const std::vector<bool>& needs) {
             const Tensor& gy = g[0];
             Tensor ga, gb;
             if (needs[0]) {  // ga = gy @ b^T (summed over the batch when a is shared)
               ga = empty(sa, gy.dtype(), gy.device());
               product(kern, ga, gy, false, saved_b.get(), true);
             }
             if (needs[1]) {  // gb = a^T @ gy (summed over the batch when b is shared)
               gb = empty(sb, gy.dtype(), gy.device());
               product(kern, gb, saved_a.get(), true, gy, false);
             }
             return std::vector<Tensor>{ga, gb};
           });
  }
  return out;
}

Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_floating(x, "linear", "input");
  check_floating(weight, "linear", "weight");
  check_same_device_dtype("linear", x, {weight, bias});
  check_cpu_dtype(x, "linear", "input");
  SEG_CHECK(weight.dim() == 2, "linear: weight ", shape_str(weight.sizes()), " must be (out, in)");
  SEG_CHECK(x.dim() >= 1, "linear: input ", shape_str(x.sizes()), " must have at least 1 dim");
  const int64_t in = weight.size(1), out_features = weight.size(0);
  SEG_CHECK(x.size(-1) == in, "linear: input ", shape_str(x.sizes()), " has ", x.size(-1),
            " features but weight ", shape_str(weight.sizes()), " expects ", in);
  if (bias.defined()) {
    SEG_CHECK(bias.dim() == 1 && bias.size(0) == out_features, "linear: bias ",
              shape_str(bias.sizes()), " does not match weight ", shape_str(weight.sizes()),
              ": expected (", out_features, ")");
  }
  const auto& kern = kernels_for<OpId::linear>(x.device());
  int64_t rows = 1;  // product of the leading dims
  for (int d = 0; d + 1 < x.dim(); ++d) rows *= x.size(d);
  Shape out_shape = x.sizes();
  out_shape.back() = out_features;
  Tensor x2 = x.detach().reshape({rows, in});  // a view when x's layout allows
  Tensor y = empty(out_shape, x.dtype(), x.device());
  Tensor y2 = y.view({rows, out_features});
  double beta = 0.0;
  if (bias.defined()) {
    y2.copy_(bias.detach().expand({rows, out_features}));
    beta = 1.0;
  }
  product(kern, y2, x2, false, weight, true, beta);
  if (any_requires_grad({x, weight, bias})) {
    SavedTensor saved_x(weight.requires_grad() ? x2 : Tensor());
    SavedTensor saved_w(x.requires_grad() ? weight : Tensor());
    Shape x_shape = x.sizes();
    record("LinearBackward", {x, weight, bias}, {&y},
           [&kern, saved_x, saved_w, x_shape, rows, in, out_features](
               const std::vector<Tensor>& g, const std::vector<bool>& needs) {
             Tensor g2 = g[0].reshape({rows, out_features});  // (M, out), any strides
             Tensor gx, gw, gb;
             if (needs[0]) {  // gx (M, in) = gy (M, out) @ W (out, in)
               gx = empty(x_shape, g2.dtype(), g2.device());
               product(kern, gx.view({rows, in}), g2, false, saved_w.get(), false);
             }
             if (needs[1]) {  // gW (out, in) = gy^T (out, M) @ x (M, in)
               gw = empty({out_features, in}, g2.dtype(), g2.device());
               product(kern, gw, g2, true, saved_x.get(), false);
             }
             if (needs[2]) {  // gb (1, out) = ones (1, M) @ gy (M, out)
               gb = empty({out_features}, g2.dtype(), g2.device());
               product(kern, gb.view({1, out_features}), ones({1, rows}, g2.dtype(), g2.device()),
                       false, g2, false);
             }
             return std::vector<Tensor>{gx, gw, gb};
           });
  }
  return y;
}

}  // namespace seg
