// Pooling front-ends: max_pool2d (PyTorch's F.max_pool2d, dilation 1) and adaptive_avg_pool2d.
//
// Design notes
// - max_pool2d keeps the i32 winner index of every output (position in its (h, w) plane) for the
//   backward, so the backward never re-reads x (x may be changed in place afterwards) and never
//   re-decides ties. The indices are internal: they are not returned.
// - Argument checks follow PyTorch's pool2d_shape_check: positive kernel and stride, 0 <= pad <=
//   kernel / 2, and an output of at least one element per axis.
#include <cstdint>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

void check_pool_input(const Tensor& x, const char* op) {
  check_floating(x, op, "input");
  SEG_CHECK(x.dim() == 4, op, ": input must be (n, c, h, w), got ", shape_str(x.sizes()));
  SEG_CHECK(x.size(1) > 0 && x.size(2) > 0 && x.size(3) > 0, op,
            ": input ", shape_str(x.sizes()), " has an empty channel or spatial dim");
}

}  // namespace

Tensor max_pool2d(const Tensor& x, const MaxPool2dOptions& o) {
  constexpr const char* op = "max_pool2d";
  check_pool_input(x, op);
  SEG_CHECK(o.kernel_h > 0 && o.kernel_w > 0, op, ": kernel size must be positive, got (", o.kernel_h,
            ",", o.kernel_w, ")");
  SEG_CHECK(o.stride_h > 0 && o.stride_w > 0, op, ": stride must be positive, got (", o.stride_h, ",",
            o.stride_w, ")");
  SEG_CHECK(o.pad_h >= 0 && o.pad_w >= 0 && o.pad_h <= o.kernel_h / 2 && o.pad_w <= o.kernel_w / 2, op,
            ": padding (", o.pad_h, ",", o.pad_w, ") must be >= 0 and at most half of kernel (",
            o.kernel_h, ",", o.kernel_w, ")");
  Pool2dShape s;
  s.n = x.size(0);
  s.c = x.size(1);
  s.h = x.size(2);
  s.w = x.size(3);
  s.kernel_h = o.kernel_h;
  s.kernel_w = o.kernel_w;
  s.stride_h = o.stride_h;
  s.stride_w = o.stride_w;
  s.pad_h = o.pad_h;
  s.pad_w = o.pad_w;
  s.p = pool_out_size(s.h, o.kernel_h, o.stride_h, o.pad_h, o.ceil_mode);
  s.q = pool_out_size(s.w, o.kernel_w, o.stride_w, o.pad_w, o.ceil_mode);
  SEG_CHECK(s.p > 0 && s.q > 0, op, ": input ", shape_str(x.sizes()), " is too small for kernel (",
            o.kernel_h, ",", o.kernel_w, ") stride (", o.stride_h, ",", o.stride_w, ") padding (",
            o.pad_h, ",", o.pad_w, "): output size (", s.p, ",", s.q, ")");
  SEG_CHECK(s.h * s.w <= INT32_MAX, op, ": input plane ", shape_str(x.sizes()),
            " is too large for i32 indices");

  const auto& k = kernels_for<OpId::max_pool2d>(x.device());
  Tensor xc = contiguous_data(x);
  Tensor y = empty({s.n, s.c, s.p, s.q}, x.dtype(), x.device());
  Tensor indices = empty({s.n, s.c, s.p, s.q}, DType::i32, x.device());  // (n, c, p, q)
  k.forward(exec_context(x), s, view_of(xc), view_of(y), view_of(indices));
  if (any_requires_grad({x})) {
    SavedTensor saved_indices(indices);
    record("MaxPool2dBackward", {x}, {&y},
           [s, saved_indices, &k](const std::vector<Tensor>& g, const std::vector<bool>&) {
             Tensor gy = contiguous_data(g[0]);
             Tensor gx = empty({s.n, s.c, s.h, s.w}, gy.dtype(), gy.device());
             k.backward(exec_context(gy), s, view_of(gy), view_of(saved_indices.get()), view_of(gx));
             return std::vector<Tensor>{gx};
           });
  }
  return y;
}

Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w) {
  constexpr const char* op = "adaptive_avg_pool2d";
  check_pool_input(x, op);
  SEG_CHECK(out_h > 0 && out_w > 0, op, ": output size (", out_h, ",", out_w,
            ") must be positive (input ", shape_str(x.sizes()), ")");
  Pool2dShape s;
  s.n = x.size(0);
  s.c = x.size(1);
  s.h = x.size(2);
  s.w = x.size(3);
  s.p = out_h;
  s.q = out_w;
  const auto& k = kernels_for<OpId::adaptive_avg_pool2d>(x.device());
  Tensor xc = contiguous_data(x);
  Tensor y = empty({s.n, s.c, s.p, s.q}, x.dtype(), x.device());
  k.forward(exec_context(x), s, view_of(xc), view_of(y));
  if (any_requires_grad({x})) {
    record("AdaptiveAvgPool2dBackward", {x}, {&y},
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
