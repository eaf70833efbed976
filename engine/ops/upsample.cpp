// Bilinear resize front-end (PyTorch's F.interpolate(mode="bilinear", size=..., align_corners=...)).
//
// Design notes
// - Only the output size is given, so the scale is computed from the sizes (as PyTorch does when
//   called with `size`, not `scale_factor`). Output smaller than the input is plain bilinear
//   sampling of the two nearest rows/columns (no antialiasing), as PyTorch's default.
// - The backward needs only the shape: nothing is saved.
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

Tensor upsample_bilinear2d(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners) {
  constexpr const char* op = "upsample_bilinear2d";
  check_floating(x, op, "input");
  SEG_CHECK(x.dim() == 4, op, ": input must be (n, c, h, w), got ", shape_str(x.sizes()));
  SEG_CHECK(x.size(2) > 0 && x.size(3) > 0, op, ": input ", shape_str(x.sizes()),
            " has an empty spatial dim");
  SEG_CHECK(out_h > 0 && out_w > 0, op, ": output size (", out_h, ",", out_w,
            ") must be positive (input ", shape_str(x.sizes()), ")");
  UpsampleShape s;
  s.n = x.size(0);
  s.c = x.size(1);
  s.h = x.size(2);
  s.w = x.size(3);
  s.p = out_h;
  s.q = out_w;
  s.align_corners = align_corners;
  const auto& k = kernels_for<OpId::upsample_bilinear2d>(x.device());
  Tensor xc = contiguous_data(x);
  Tensor y = empty({s.n, s.c, s.p, s.q}, x.dtype(), x.device());
  k.forward(exec_context(x), s, view_of(xc), view_of(y));
  if (any_requires_grad({x})) {
    record("UpsampleBilinear2dBackward", {x}, {&y},
           [s, &k](const std::vector<Tensor>& g, const std::vector<bool>&) {
             Tensor gy = contiguous_data(g[0]);
             Tensor gx = empty({s.n, s.c, s.h, s.w}, gy.dtype(), gy.device());
             k.backward(exec_context(gy), s, view_of(gy), view_of(gx));
             return std::vector<Tensor>{gx};
           });
  }
  return y;
}

}  // namespace seg
