// Losses: cross entropy (fused with log-softmax), L1, MSE and the triplet margin loss.
//
// Design notes
// - cross_entropy runs one kernel per direction. The forward writes per-position loss, weight and
//   log-sum-exp; reductions are ordinary (deterministic) sums of those. The backward receives the
//   upstream gradient as a tensor and turns it into the kernel's `scale` with tensor ops (g, or
//   g / sum(w) for 'mean'), so it never reads a device value on the host. The forward does read one
//   integer (the kernel's bad-label count) to raise the bad-label error; only then does it copy the
//   labels to the host, to name the first offending value and position and count them.
// - 'mean' divides by the summed weights of the non-ignored positions: 0 / 0 = NaN when every
//   position is ignored, as in PyTorch; ignored positions always get a zero gradient.
// - i64 labels are converted to i32 (the kernels' label type); a value outside the i32 range, which
//   the conversion would wrap into a plausible class, is caught by check_class_labels (op_util.h),
//   the check shared with the confusion matrix.
// - l1_loss and mse_loss are composites of elementwise ops and reductions (no kernels).
// - triplet_margin_loss runs the fused kernels of kernels/common/loss.h; the backward's scale is
//   g (none), g (sum) or g / n (mean), again without a host read.
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

const char* reduction_name(Reduction r) {
  switch (r) {
    case Reduction::none: return "none";
    case Reduction::mean: return "mean";
    case Reduction::sum: return "sum";
  }
  return "?";
}

}  // namespace

// ---- cross entropy ----

Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options) {
  constexpr const char* op = "cross_entropy";
  check_floating(logits, op, "logits");
  SEG_CHECK(logits.dim() >= 2, op, ": logits must be (n, c) or (n, c, d1, ...), got ",
            logits.str());
  SEG_CHECK(labels.defined(), op, ": labels are undefined");
  SEG_CHECK(labels.dtype() == DType::i32 || labels.dtype() == DType::i64, op,
            ": labels must be i32 or i64 class indices, got ", labels.str());
  SEG_CHECK(labels.device() == logits.device(), op, ": logits ", logits.str(), " and labels ",
            labels.str(), " are on different devices");
  Shape expected = logits.sizes();
  expected.erase(expected.begin() + 1);
  SEG_CHECK(labels.sizes() == expected, op, ": labels ", shape_str(labels.sizes()),
            " do not match logits ", shape_str(logits.sizes()), " (expected labels ",
            shape_str(expected), ")");
  const Tensor& weight = options.weight;
  const int64_t n = logits.size(0), c = logits.size(1);
  if (weight.defined()) {
    check_same_device_dtype(op, logits, {weight});
    SEG_CHECK(weight.dim() == 1 && weight.size(0) == c, op, ": weight ", shape_str(weight.sizes()),
              " must be (", c, ") for logits ", shape_str(logits.sizes()), " with ", c, " classes");
    // As PyTorch (not implemented there either): say so instead of silently dropping it.
    SEG_CHECK(
        !any_requires_grad({weight}), op, ": weight ", weight.str(),
        " requires grad, but cross_entropy has no gradient for the class weights (detach it)");
  }
  CrossEntropyShape shape;
  shape.n = n;
  shape.c = c;
  shape.inner = 1;
  for (int d = 2; d < logits.dim(); ++d) shape.inner *= logits.size(d);
  shape.ignore_index = options.ignore_index;

  const auto& k = kernels_for<OpId::cross_entropy>(logits.device());
  const Device dev = logits.device();
  const DType dt = logits.dtype();
  Tensor xc = contiguous_data(logits);
  Tensor lab = class_labels_i32(labels);
  Tensor wc = contiguous_data(weight);
  Tensor loss = empty({n, shape.inner}, dt, dev);  // (n, inner)
  Tensor wsum = empty({n, shape.inner}, dt, dev);  // (n, inner)
  Tensor lse = empty({n, shape.inner}, dt, dev);   // (n, inner)
  Tensor bad = zeros({}, DType::i32, dev);
  k.forward(exec_context(loss), shape, view_of(xc), view_of(lab), view_of(wc), view_of(loss),
            view_of(wsum), view_of(lse), view_of(bad));
  check_class_labels(op, labels, lab, bad, c, options.ignore_index,
                     "for logits " + shape_str(logits.sizes()));

  const Reduction reduction = options.reduction;
  Tensor out;
  Tensor total_weight;  // () sum of the weights of non-ignored positions, for 'mean'
  {
    NoGradGuard no_grad;
    switch (reduction) {
      case Reduction::none: out = loss.view(labels.sizes()); break;
      case Reduction::sum: out = sum(loss); break;
      case Reduction::mean:
        total_weight = sum(wsum);
        out = div(sum(loss), total_weight);
        break;
    }
  }
  if (any_requires_grad({logits})) {
    SavedTensor s_x(xc), s_lab(lab), s_w(wc), s_lse(lse), s_total(total_weight);
    const int64_t positions = n * shape.inner;
    record("CrossEntropyBackward", {logits}, {&out},
           [shape, reduction, positions, s_x, s_lab, s_w, s_lse, s_total, &k](
               const std::vector<Tensor>& g, const std::vector<bool>&) {
             Tensor x = s_x.get();
             Tensor scale;  // () or (n, inner), the logits' dtype
             switch (reduction) {
               case Reduction::none: scale = contiguous_data(g[0]).view({positions}); break;
               case Reduction::sum: scale = contiguous_data(g[0]); break;
               case Reduction::mean: scale = div(g[0], s_total.get()).contiguous(); break;
             }
             Tensor gx = empty(x.sizes(), x.dtype(), x.device());
             if (gx.numel() > 0) {
               k.backward(exec_context(gx), shape, view_of(x), view_of(s_lab.get()),
                          view_of(s_w.get()), view_of(s_lse.get()), view_of(scale), view_of(gx));
             }
             return std::vector<Tensor>{gx};
           });
  }
  return out;
}

// ---- l1 and mse ----

namespace {

Tensor pointwise_loss(const char* op, const Tensor& input, const Tensor& target,
                      Reduction reduction, bool squared) {
  check_floating(input, op, "input");
  check_floating(target, op, "target");
  check_same_device_dtype(op, input, {target});
  SEG_CHECK(input.sizes() == target.sizes(), op, ": input ", shape_str(input.sizes()),
            " and target ", shape_str(target.sizes()), " must have the same shape");
  SEG_CHECK(
      reduction == Reduction::none || reduction == Reduction::sum || reduction == Reduction::mean,
      op, ": unknown reduction ", reduction_name(reduction));
  // The values through the elementwise ops, then one node: d/d input = g * (sign(diff) or
  // 2 diff) [/ n for mean], d/d target = its negation. sign(0) = 0, as PyTorch's l1_loss.
  Tensor diff, out;
  {
    NoGradGuard no_grad;
    diff = sub(input.detach(), target.detach());
    Tensor per_element = squared ? mul(diff, diff) : abs(diff);
    switch (reduction) {
      case Reduction::none: out = per_element; break;
      case Reduction::sum: out = sum(per_element); break;
      case Reduction::mean: out = mean(per_element); break;
    }
  }
  if (any_requires_grad({input, target})) {
    SavedTensor saved_diff(diff);
    const Shape shape = input.sizes();
    const double scale =
        reduction == Reduction::mean ? 1.0 / static_cast<double>(diff.numel()) : 1.0;
    record(backward_node_name(op), {input, target}, {&out},
           [saved_diff, shape, scale, squared](const std::vector<Tensor>& g,
                                               const std::vector<bool>& needs) {
             const Tensor d = saved_diff.get();
             Tensor gy = contiguous_data(g[0].expand(shape));  // the incoming gradient per element
             Tensor gx;
             if (squared) {
               gx = mul(gy, d);
             } else {  // gy * sign(d): abs's own backward
               gx = empty_like(d);
               const auto& k = kernels_for<OpId::abs>(d.device());
               k.backward(exec_context(d), UnaryOp::abs, 0.0, view_of(d), view_of(Tensor()),
                          view_of(gy), view_of(gx));
             }
             const double factor = (squared ? 2.0 : 1.0) * scale;
             if (factor != 1.0) gx = mul_scalar(gx, factor);
             return std::vector<Tensor>{needs[0] ? gx : Tensor(), needs[1] ? neg(gx) : Tensor()};
           });
  }
  return out;
}

}  // namespace

Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  return pointwise_loss("l1_loss", input, target, reduction, /*squared=*/false);
}

Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction) {
  return pointwise_loss("mse_loss", input, target, reduction, /*squared=*/true);
}

// ---- triplet margin loss ----

Tensor triplet_margin_loss(const Tensor& anchor, const Tensor& positive, const Tensor& negative,
                           double margin, int p, double eps, Reduction reduction) {
  constexpr const char* op = "triplet_margin_loss";
  check_floating(anchor, op, "anchor");
  check_floating(positive, op, "positive");
  check_floating(negative, op, "negative");
  check_same_device_dtype(op, anchor, {positive, negative});
  SEG_CHECK(anchor.dim() == 2, op, ": anchor must be (n, d), got ", anchor.str());
  SEG_CHECK(positive.sizes() == anchor.sizes() && negative.sizes() == anchor.sizes(), op,
            ": anchor ", shape_str(anchor.sizes()), ", positive ", shape_str(positive.sizes()),
            " and negative ", shape_str(negative.sizes()), " must have the same shape");
  SEG_CHECK(p == 1 || p == 2, op, ": p = ", p, " is not supported (1 or 2) for anchor ",
            shape_str(anchor.sizes()));
  TripletShape shape;
  shape.n = anchor.size(0);
  shape.d = anchor.size(1);
  shape.p = p;
  shape.margin = margin;
  shape.eps = eps;

  const auto& k = kernels_for<OpId::triplet_margin_loss>(anchor.device());
  Tensor ac = contiguous_data(anchor), pc = contiguous_data(positive),
         nc = contiguous_data(negative);
  Tensor loss = empty({shape.n}, anchor.dtype(), anchor.device());     // (n)
  Tensor dist_ap = empty({shape.n}, anchor.dtype(), anchor.device());  // (n)
  Tensor dist_an = empty({shape.n}, anchor.dtype(), anchor.device());  // (n)
  k.forward(exec_context(loss), shape, view_of(ac), view_of(pc), view_of(nc), view_of(loss),
            view_of(dist_ap), view_of(dist_an));
  Tensor out;
  {
    NoGradGuard no_grad;
    switch (reduction) {
      case Reduction::none: out = loss; break;
      case Reduction::sum: out = sum(loss); break;
      case Reduction::mean: out = mean(loss); break;
    }
  }
  if (any_requires_grad({anchor, positive, negative})) {
    SavedTensor s_a(ac), s_p(pc), s_n(nc), s_dap(dist_ap), s_dan(dist_an);
    record("TripletMarginLossBackward", {anchor, positive, negative}, {&out},
           [shape, reduction, s_a, s_p, s_n, s_dap, s_dan, &k](const std::vector<Tensor>& g,
                                                               const std::vector<bool>& needs) {
             Tensor scale = contiguous_data(g[0]);  // (n) for 'none', () otherwise
             if (reduction == Reduction::mean) {
               scale = mul_scalar(scale, 1.0 / static_cast<double>(shape.n));
             }
             Tensor a = s_a.get();
             Tensor ga = needs[0] ? empty_like(a) : Tensor();
             Tensor gp = needs[1] ? empty_like(a) : Tensor();
             Tensor gn = needs[2] ? empty_like(a) : Tensor();
             if (a.numel() > 0) {
               k.backward(exec_context(a), shape, view_of(a), view_of(s_p.get()),
                          view_of(s_n.get()), view_of(s_dap.get()), view_of(s_dan.get()),
                          view_of(scale), view_of(ga), view_of(gp), view_of(gn));
             }
             return std::vector<Tensor>{ga, gp, gn};
           });
  }
  return out;
}

}  // namespace seg
