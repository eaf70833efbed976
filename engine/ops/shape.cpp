// Shape ops that copy: constant padding and concatenation (views are Tensor methods).
#include <algorithm>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

Tensor pad2d(const Tensor& x, const std::vector<int64_t>& pads, double value) {
  SEG_CHECK(x.defined(), "pad2d: undefined input");
  SEG_CHECK(pads.size() == 4, "pad2d: expected 4 pads {left, right, top, bottom}, got ", pads.size());
  SEG_CHECK(x.dim() >= 2, "pad2d: input ", x.str(), " has fewer than 2 dims");
  const int hd = x.dim() - 2, wd = x.dim() - 1;
  const int64_t left = pads[0], right = pads[1], top = pads[2], bottom = pads[3];
  const int64_t h = x.size(hd), w = x.size(wd);
  const int64_t oh = h + top + bottom, ow = w + left + right;
  SEG_CHECK(oh >= 0 && ow >= 0, "pad2d: pads {", left, ",", right, ",", top, ",", bottom,
            "} crop more than the input ", x.str());
  Shape shape = x.sizes();
  shape[hd] = oh;
  shape[wd] = ow;
  Tensor out = full(shape, value, x.dtype(), x.device());
  // The part of the input that survives negative pads, and where it lands in the output.
  const int64_t src_h0 = std::max<int64_t>(0, -top), src_w0 = std::max<int64_t>(0, -left);
  const int64_t dst_h0 = std::max<int64_t>(0, top), dst_w0 = std::max<int64_t>(0, left);
  const int64_t ch = std::max<int64_t>(0, std::min(h - src_h0, oh - dst_h0));
  const int64_t cw = std::max<int64_t>(0, std::min(w - src_w0, ow - dst_w0));
  if (ch > 0 && cw > 0) {
    out.narrow(hd, dst_h0, ch).narrow(wd, dst_w0, cw).copy_(
        x.detach().narrow(hd, src_h0, ch).narrow(wd, src_w0, cw));
  }
  if (any_requires_grad({x})) {
    Shape in_shape = x.sizes();
    record("Pad2dBackward", {x}, {&out},
           [=](const std::vector<Tensor>& g, const std::vector<bool>&) {
             Tensor gx = zeros(in_shape, g[0].dtype(), g[0].device());
             if (ch > 0 && cw > 0) {
               gx.narrow(hd, src_h0, ch).narrow(wd, src_w0, cw).copy_(
                   g[0].narrow(hd, dst_h0, ch).narrow(wd, dst_w0, cw));
             }
             return std::vector<Tensor>{gx};
           });
  }
  return out;
}

Tensor cat(const std::vector<Tensor>& xs, int dim) {
  SEG_CHECK(!xs.empty(), "cat: no tensors");
  const Tensor& ref = xs[0];
  SEG_CHECK(ref.defined(), "cat: undefined input 0");
  const int d = wrap_dim(dim, ref.dim(), "cat");
  Shape shape = ref.sizes();
  shape[d] = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& t = xs[i];
    SEG_CHECK(t.defined(), "cat: undefined input ", i);
    check_same_device_dtype("cat", ref, {t});
    SEG_CHECK(t.dim() == ref.dim(), "cat: input ", i, " ", t.str(), " and input 0 ", ref.str(),
              " differ in dims");
    for (int k = 0; k < t.dim(); ++k) {
      SEG_CHECK(k == d || t.size(k) == ref.size(k), "cat: input ", i, " ", shape_str(t.sizes()),
                " and input 0 ", shape_str(ref.sizes()), " differ in dim ", k,
                " (concatenating along dim ", d, ")");
    }
    shape[d] += t.size(d);
  }
  Tensor out = empty(shape, ref.dtype(), ref.device());
  std::vector<int64_t> starts, lengths;
  int64_t at = 0;
  for (const Tensor& t : xs) {
    out.narrow(d, at, t.size(d)).copy_(t.detach());
    starts.push_back(at);
    lengths.push_back(t.size(d));
    at += t.size(d);
  }
  record("CatBackward", xs, {&out},
         [d, starts, lengths](const std::vector<Tensor>& g, const std::vector<bool>& needs) {
           std::vector<Tensor> grads(starts.size());
           for (size_t i = 0; i < starts.size(); ++i) {
             if (needs[i]) grads[i] = g[0].narrow(d, starts[i], lengths[i]);
           }
           return grads;
         });
  return out;
}

}  // namespace seg
