// ASPP's 1x1 projection without the concatenation: aspp_projection(branches, pooled, weight).
//
// Design notes
// - The projection of cat(x_0, ..., x_{B-1}, pooled broadcast over h, w) by W (k, C) splits by
//   columns of W: W = [W_0 | ... | W_{B-1} | W_p] with W_i (k, b_i) and W_p (k, p), so
//     out_n = sum_i W_i @ x_{i,n}  +  (W_p @ pooled_n) 1^T          (per image n, (k, hw))
//   Every term is a call of the GemmKernels table, so the op runs on any device with GEMM kernels
//   (OpenBLAS on the CPU, cuBLAS on CUDA) and never materialises the (n, C, h, w) concatenation,
//   neither in the forward nor for the backward:
//     bias   (n, k)     = pooled (n, p) @ W_p^T                      (W_p read in place, ld C)
//     out_n  (k, hw)    = bias_n (k, 1) @ ones (1, hw)               (beta 0: writes out)
//     out_n (k, hw)    += W_i (k, b_i) @ x_{i,n} (b_i, hw)           (beta 1, one batched GEMM
//                                                                     per branch over the images)
//   The pooled branch's share is thus a per-(image, channel) bias, written by a rank-1 GEMM in
//   one pass before the branch GEMMs accumulate on top (the one broadcast add the design allows).
//   Without a pooled branch the first branch GEMM writes out with beta 0.
// - Backward, with g = d out (n, k, hw):
//     gx_i   (n, b_i, hw) = W_i^T @ g_n                              (batched over images)
//     gW_i   (k, b_i)     = sum_n g_n @ x_{i,n}^T                    (stride_c 0: summed by the
//                                                                     GEMM kernel in image order)
//     gbias  (n, k)       = g (n*k, hw) @ ones (hw, 1)
//     gW_p   (k, p)       = gbias^T @ pooled;   gpooled (n, p) = gbias @ W_p
//   gW's column blocks are written in place in the (k, C) gradient (ldc = C): no concatenation
//   and no copy. Deterministic wherever the GEMM kernels are.
// - Saved for backward: the branches and pooled only when the weight needs a gradient, the weight
//   only when a branch or pooled does.
// - pooled may be undefined (no image-pooling branch) and may also be given as (n, p, 1, 1), the
//   shape adaptive_avg_pool2d produces; its gradient has pooled's shape.
#include <string>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

constexpr const char* kOp = "aspp_projection";

// A view of `t`'s data starting `offset` elements later (GEMM operand inside a larger matrix).
View at_offset(const Tensor& t, int64_t offset) {
  View v = view_of(t);
  v.data = static_cast<char*>(v.data) + offset * static_cast<int64_t>(dtype_size(t.dtype()));
  return v;
}

std::string shapes_str(const std::vector<Tensor>& ts) {
  std::string out;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (i > 0) out += ", ";
    out += ts[i].defined() ? shape_str(ts[i].sizes()) : std::string("undefined");
  }
  return out;
}

// The per-branch geometry shared by forward and backward.
struct AsppGeometry {
  int64_t n = 0, h = 0, w = 0, hw = 0, k = 0;
  int64_t total = 0;  // C = sum b_i + p
  int64_t p = 0;      // pooled channels (0 without a pooled branch)
  std::vector<int64_t> widths, offsets;  // b_i and the column of W_i in W
  int64_t pooled_offset = 0;
};

AsppGeometry check_inputs(const std::vector<Tensor>& branches, const Tensor& pooled,
                          const Tensor& weight) {
  SEG_CHECK(!branches.empty(), kOp, ": needs at least one spatial branch (got none; pooled ",
            pooled.defined() ? shape_str(pooled.sizes()) : std::string("undefined"), ", weight ",
            weight.defined() ? shape_str(weight.sizes()) : std::string("undefined"), ")");
  for (size_t i = 0; i < branches.size(); ++i) {
    const std::string arg = "branch " + std::to_string(i);
    check_floating(branches[i], kOp, arg.c_str());
  }
  check_floating(weight, kOp, "weight");
  if (pooled.defined()) check_floating(pooled, kOp, "pooled");
  const Tensor& ref = branches[0];
  std::vector<Tensor> others(branches.begin() + 1, branches.end());
  others.push_back(pooled);
  others.push_back(weight);
  check_same_device_dtype(kOp, ref, others);
  SEG_CHECK(!ref.device().is_cpu() || ref.dtype() == DType::f32 || ref.dtype() == DType::f64, kOp,
            ": branch 0 ", ref.str(), ": the CPU computes products in f32 and f64 only");

  AsppGeometry g;
  for (size_t i = 0; i < branches.size(); ++i) {
    const Tensor& b = branches[i];
    SEG_CHECK(b.dim() == 4, kOp, ": branch ", i, " ", shape_str(b.sizes()),
              " must be 4-D (n, c, h, w); branches ", shapes_str(branches));
    if (i == 0) {
      g.n = b.size(0);
      g.h = b.size(2);
      g.w = b.size(3);
    }
    SEG_CHECK(b.size(0) == g.n && b.size(2) == g.h && b.size(3) == g.w, kOp, ": branch ", i, " ",
              shape_str(b.sizes()), " does not match branch 0 ", shape_str(ref.sizes()),
              " in batch or spatial size; branches ", shapes_str(branches));
    g.offsets.push_back(g.total);
    g.widths.push_back(b.size(1));
    g.total += b.size(1);
  }
  g.hw = g.h * g.w;
  if (pooled.defined()) {
    const bool flat = pooled.dim() == 2;
    const bool spatial = pooled.dim() == 4 && pooled.size(2) == 1 && pooled.size(3) == 1;
    SEG_CHECK(flat || spatial, kOp, ": pooled ", shape_str(pooled.sizes()),
              " must be (n, p) or (n, p, 1, 1)");
    SEG_CHECK(pooled.size(0) == g.n, kOp, ": pooled ", shape_str(pooled.sizes()), " has batch ",
              pooled.size(0), " but the branches ", shapes_str(branches), " have batch ", g.n);
    g.p = pooled.size(1);
  }
  g.pooled_offset = g.total;
  g.total += g.p;
  const bool w2 = weight.dim() == 2;
  const bool w4 = weight.dim() == 4 && weight.size(2) == 1 && weight.size(3) == 1;
  SEG_CHECK(w2 || w4, kOp, ": weight ", shape_str(weight.sizes()),
            " must be (k, c) or (k, c, 1, 1)");
  SEG_CHECK(weight.size(1) == g.total, kOp, ": weight ", shape_str(weight.sizes()), " has ",
            weight.size(1), " input channels but the branches ", shapes_str(branches),
            (pooled.defined() ? " and pooled " + shape_str(pooled.sizes()) : std::string()),
            " have ", g.total);
  g.k = weight.size(0);
  return g;
}

}  // namespace

Tensor aspp_projection(const std::vector<Tensor>& branches, const Tensor& pooled,
                       const Tensor& weight) {
  const AsppGeometry g = check_inputs(branches, pooled, weight);
  const auto& kern = kernels_for<OpId::aspp_projection>(weight.device());
  const DType dtype = weight.dtype();
  const Device device = weight.device();
  std::vector<Tensor> xs;  // (n, b_i, h, w) contiguous
  for (const Tensor& b : branches) xs.push_back(contiguous_data(b));
  Tensor wc = contiguous_data(weight);  // (k, C), row stride C
  Tensor pc = contiguous_data(pooled);  // (n, p) contiguous, or undefined

  Tensor out = empty({g.n, g.k, g.h, g.w}, dtype, device);
  const ExecContext ctx = exec_context(out);
  const int64_t khw = g.k * g.hw;
  bool written = false;  // whether out holds a first term (beta 0 before, 1 after)
  if (g.p > 0 && g.n > 0 && khw > 0) {
    Tensor bias = empty({g.n, g.k}, dtype, device);  // (n, k) = pooled @ W_p^T
    GemmArgs b;
    b.m = g.n;
    b.n = g.k;
    b.k = g.p;
    b.trans_b = true;
    b.lda = g.p;
    b.ldb = g.total;
    b.ldc = g.k;
    kern.gemm(ctx, b, view_of(pc), at_offset(wc, g.pooled_offset), view_of(bias));
    Tensor ones_row = ones({g.hw}, dtype, device);  // (1, hw)
    GemmArgs r;  // out_n (k, hw) = bias_n (k, 1) @ ones (1, hw)
    r.m = g.k;
    r.n = g.hw;
    r.k = 1;
    r.lda = 1;
    r.ldb = g.hw;
    r.ldc = g.hw;
    r.batch = g.n;
    r.stride_a = g.k;
    r.stride_b = 0;
    r.stride_c = khw;
    kern.gemm(ctx, r, view_of(bias), view_of(ones_row), view_of(out));
    written = true;
  }
  for (size_t i = 0; i < xs.size(); ++i) {
    if (g.widths[i] == 0) continue;
    GemmArgs a;  // out_n (k, hw) (+)= W_i (k, b_i) @ x_{i,n} (b_i, hw)
    a.m = g.k;
    a.n = g.hw;
    a.k = g.widths[i];
    a.beta = written ? 1.0 : 0.0;
    a.lda = g.total;
    a.ldb = std::max<int64_t>(1, g.hw);
    a.ldc = std::max<int64_t>(1, g.hw);
    a.batch = g.n;
    a.stride_a = 0;
    a.stride_b = g.widths[i] * g.hw;
    a.stride_c = khw;
    kern.gemm(ctx, a, at_offset(wc, g.offsets[i]), view_of(xs[i]), view_of(out));
    written = true;
  }
  if (!written && out.numel() > 0) out.zero_();  // no input channels at all: an empty sum

  std::vector<Tensor> inputs = branches;
  inputs.push_back(pooled);
  inputs.push_back(weight);
  if (!any_requires_grad(inputs)) return out;

  const size_t nb = branches.size();
  bool any_input_grad = pooled.defined() && pooled.requires_grad();
  for (const Tensor& b : branches) any_input_grad = any_input_grad || b.requires_grad();
  std::vector<SavedTensor> saved_x;
  for (const Tensor& x : xs) saved_x.emplace_back(weight.requires_grad() ? x : Tensor());
  SavedTensor saved_pooled(weight.requires_grad() ? pc : Tensor());
  SavedTensor saved_w(any_input_grad ? wc : Tensor());
  const Shape w_shape = weight.sizes();
  const Shape p_shape = pooled.defined() ? pooled.sizes() : Shape{};
  std::vector<Shape> x_shapes;
  for (const Tensor& b : branches) x_shapes.push_back(b.sizes());
  record("AsppProjectionBackward", inputs, {&out},
         [&kern, g, nb, saved_x, saved_pooled, saved_w, w_shape, p_shape, x_shapes](
             const std::vector<Tensor>& grads, const std::vector<bool>& needs) {
           Tensor gy = contiguous_data(grads[0]);  // (n, k, h, w)
           const ExecContext bctx = exec_context(gy);
           const DType dt = gy.dtype();
           const Device dev = gy.device();
           const int64_t gkhw = g.k * g.hw;
           std::vector<Tensor> result(nb + 2);
           Tensor w_saved = saved_w.get();
           for (size_t i = 0; i < nb; ++i) {
             if (!needs[i]) continue;
             Tensor gx = empty(x_shapes[i], dt, dev);
             if (gx.numel() > 0) {
               GemmArgs a;  // gx_n (b_i, hw) = W_i^T (b_i, k) @ g_n (k, hw)
               a.trans_a = true;
               a.m = g.widths[i];
               a.n = g.hw;
               a.k = g.k;
               a.lda = g.total;
               a.ldb = g.hw;
               a.ldc = g.hw;
               a.batch = g.n;
               a.stride_a = 0;
               a.stride_b = gkhw;
               a.stride_c = g.widths[i] * g.hw;
               kern.gemm(bctx, a, at_offset(w_saved, g.offsets[i]), view_of(gy), view_of(gx));
             }
             result[i] = gx;
           }
           const bool need_pooled = nb < needs.size() && needs[nb];
           const bool need_w = needs[nb + 1];
           Tensor gbias;  // (n, k): the gradient of the pooled branch's bias
           if (g.p > 0 && (need_pooled || need_w)) {
             gbias = empty({g.n, g.k}, dt, dev);
             Tensor ones_col = ones({std::max<int64_t>(g.hw, 1)}, dt, dev);  // (hw, 1)
             GemmArgs s;  // gbias (n*k, 1) = g (n*k, hw) @ ones (hw, 1)
             s.m = g.n * g.k;
             s.n = 1;
             s.k = g.hw;
             s.lda = std::max<int64_t>(1, g.hw);
             s.ldb = 1;
             s.ldc = 1;
             kern.gemm(bctx, s, view_of(gy), view_of(ones_col), view_of(gbias));
           }
           if (need_pooled) {
             Tensor gp = empty(p_shape, dt, dev);
             if (g.p > 0 && g.n > 0) {  // (gbias exists when p > 0)
               GemmArgs a;  // gpooled (n, p) = gbias (n, k) @ W_p (k, p)
               a.m = g.n;
               a.n = g.p;
               a.k = g.k;
               a.lda = std::max<int64_t>(1, g.k);
               a.ldb = g.total;
               a.ldc = g.p;
               kern.gemm(bctx, a, view_of(gbias), at_offset(w_saved, g.pooled_offset), view_of(gp));
             }
             result[nb] = gp;
           }
           if (need_w) {
             Tensor gw = empty(w_shape, dt, dev);  // (k, C) row-major whatever its 2 or 4 dims
             for (size_t i = 0; i < nb; ++i) {
               if (g.widths[i] == 0) continue;
               GemmArgs a;  // gW_i (k, b_i) = sum_n g_n (k, hw) @ x_{i,n}^T (hw, b_i)
               a.trans_b = true;
               a.m = g.k;
               a.n = g.widths[i];
               a.k = g.hw;
               a.lda = std::max<int64_t>(1, g.hw);
               a.ldb = std::max<int64_t>(1, g.hw);
               a.ldc = g.total;
               a.batch = g.n;
               a.stride_a = gkhw;
               a.stride_b = g.widths[i] * g.hw;
               a.stride_c = 0;
               kern.gemm(bctx, a, view_of(gy), view_of(saved_x[i].get()), at_offset(gw, g.offsets[i]));
             }
             if (g.p > 0) {
               GemmArgs a;  // gW_p (k, p) = gbias^T (k, n) @ pooled (n, p)
               a.trans_a = true;
               a.m = g.k;
               a.n = g.p;
               a.k = g.n;
               a.lda = std::max<int64_t>(1, g.k);
               a.ldb = std::max<int64_t>(1, g.p);
               a.ldc = g.total;
               kern.gemm(bctx, a, view_of(gbias), view_of(saved_pooled.get()),
                         at_offset(gw, g.pooled_offset));
             }
             result[nb + 1] = gw;
           }
           return result;
         });
  return out;
}

}  // namespace seg
