// Convolutions: conv2d and conv_transpose2d (groups 1, NCHW), both on the Conv2dKernels table.
//
// Design notes
// - conv_transpose2d(x, W) is the adjoint of conv2d with the same weight: with the conv geometry
//   "input (n, c_out, H, W_out), weight (c_in, c_out, r, s), output (n, c_in, h, w)", its forward
//   is the conv's backward_input (which also adds the bias), its input gradient is the conv's
//   forward and its weight gradient is the conv's backward_weight with x and gy exchanged.
//   PyTorch's weight layout (c_in, c_out, r, s) is exactly the conv's (k, c, r, s) there: no weight
//   is ever copied.
// - output_padding only enlarges the conv's "input" (H, W_out); the shape passed to the kernels
//   carries p = h, q = w explicitly, so the extra rows and columns get the bias and no gradient.
// - Saved for backward: the contiguous input (for the weight gradient) only when the weight needs a
//   gradient, the weight only when the input needs one.
// - Dead taps: a kernel row (column) whose input rows (columns) lie in the padding for every
//   output position adds exact zeros, and its weights get exact zero gradients. conv2d drops the
//   same number of such rows (columns) from both ends of the kernel, with the padding reduced by
//   as many dilations, which leaves the output size and every output value's terms unchanged
//   (only the order of a sum changes) and the dropped weights' gradient zero through narrow. It
//   matters for ASPP at small inputs: rate 36 on a 16x32 map leaves 1 of 9 taps alive.
#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

std::string pair_str(int64_t a, int64_t b) {
  return detail::concat("(", a, ",", b, ")");
}

void check_common(const char* op, const Tensor& x, const Tensor& weight, const Tensor& bias) {
  check_floating(x, op, "input");
  check_floating(weight, op, "weight");
  check_same_device_dtype(op, x, {weight, bias});
  SEG_CHECK(!x.device().is_cpu() || x.dtype() == DType::f32 || x.dtype() == DType::f64, op,
            ": input ", x.str(), ": the CPU computes convolutions in f32 and f64 only");
  SEG_CHECK(x.dim() == 4, op, ": input ", shape_str(x.sizes()), " must be 4-D (n, c, h, w)");
  SEG_CHECK(weight.dim() == 4, op, ": weight ", shape_str(weight.sizes()), " must be 4-D");
  for (int d = 0; d < 4; ++d) {
    SEG_CHECK(weight.size(d) >= 1, op, ": weight ", shape_str(weight.sizes()), " has an empty dim");
  }
}

void check_geometry(const char* op, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                    int64_t pad_w, int64_t dil_h, int64_t dil_w) {
  SEG_CHECK(stride_h >= 1 && stride_w >= 1, op, ": stride ", pair_str(stride_h, stride_w),
            " must be >= 1");
  SEG_CHECK(pad_h >= 0 && pad_w >= 0, op, ": padding ", pair_str(pad_h, pad_w), " must be >= 0");
  SEG_CHECK(dil_h >= 1 && dil_w >= 1, op, ": dilation ", pair_str(dil_h, dil_w), " must be >= 1");
}

void check_bias(const char* op, const Tensor& bias, int64_t channels, const Tensor& weight) {
  if (!bias.defined()) return;
  SEG_CHECK(bias.dim() == 1 && bias.size(0) == channels, op, ": bias ", shape_str(bias.sizes()),
            " does not match weight ", shape_str(weight.sizes()), ": expected (", channels, ")");
}

// Stride, padding and dilation of conv2d's or conv_transpose2d's options into the kernel shape.
template <class Options>
void copy_geometry(const Options& o, Conv2dShape& s) {
  s.stride_h = o.stride_h;
  s.stride_w = o.stride_w;
  s.pad_h = o.pad_h;
  s.pad_w = o.pad_w;
  s.dil_h = o.dil_h;
  s.dil_w = o.dil_w;
}

// How many taps at each end of a kernel dimension only ever read padding, for the symmetric crop
// described atop this file: taps 0..d-1 and size-d..size-1 are dead and pad - d * dil >= 0.
int64_t dead_taps(int64_t in, int64_t out, int64_t taps, int64_t stride, int64_t pad,
                  int64_t dil) {
  // Whether tap t reads a real row for some output position o (rows o * stride - pad + t * dil).
  auto live = [&](int64_t t) {
    const int64_t first = t * dil - pad;  // the row of output 0
    const int64_t o = first >= 0 ? 0 : (-first + stride - 1) / stride;  // first o with row >= 0
    return o < out && first + o * stride < in;
  };
  int64_t d = 0;
  while (2 * (d + 1) < taps && !live(d) && !live(taps - 1 - d) && pad - (d + 1) * dil >= 0) {
    ++d;
  }
  return d;
}

}  // namespace

Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias, const Conv2dOptions& o) {
  const char* op = "conv2d";
  check_common(op, x, weight, bias);
  SEG_CHECK(x.size(1) == weight.size(1), "conv2d: input ", shape_str(x.sizes()), " has ", x.size(1),
            " channels but weight ", shape_str(weight.sizes()), " expects ", weight.size(1));
  check_bias(op, bias, weight.size(0), weight);
  check_geometry(op, o.stride_h, o.stride_w, o.pad_h, o.pad_w, o.dil_h, o.dil_w);
  Conv2dShape s;
  s.n = x.size(0);
  s.c = x.size(1);
  s.h = x.size(2);
  s.w = x.size(3);
  s.k = weight.size(0);
  s.r = weight.size(2);
  s.s = weight.size(3);
  copy_geometry(o, s);
  const int64_t extent_h = s.dil_h * (s.r - 1) + 1, extent_w = s.dil_w * (s.s - 1) + 1;
  SEG_CHECK(s.h + 2 * s.pad_h >= extent_h && s.w + 2 * s.pad_w >= extent_w, "conv2d: input ",
            shape_str(x.sizes()), " with padding ", pair_str(s.pad_h, s.pad_w),
            " is smaller than the kernel of weight ", shape_str(weight.sizes()), " (extent ",
            pair_str(extent_h, extent_w), " with dilation ", pair_str(s.dil_h, s.dil_w),
            "): the output would be empty");
  s.p = conv_out_size(s.h, s.r, s.stride_h, s.pad_h, s.dil_h);
  s.q = conv_out_size(s.w, s.s, s.stride_w, s.pad_w, s.dil_w);

  const int64_t dead_h = dead_taps(s.h, s.p, s.r, s.stride_h, s.pad_h, s.dil_h);
  const int64_t dead_w = dead_taps(s.w, s.q, s.s, s.stride_w, s.pad_w, s.dil_w);
  if (dead_h > 0 || dead_w > 0) {
    Conv2dOptions live = o;
    live.pad_h -= dead_h * o.dil_h;
    live.pad_w -= dead_w * o.dil_w;
    const Tensor w = weight.narrow(2, dead_h, s.r - 2 * dead_h).narrow(3, dead_w, s.s - 2 * dead_w);
    return conv2d(x, w, bias, live);
  }

  const auto& kern = kernels_for<OpId::conv2d>(x.device());
  Tensor xc = contiguous_data(x), wc = contiguous_data(weight), bc = contiguous_data(bias);
  Tensor y = empty({s.n, s.k, s.p, s.q}, x.dtype(), x.device());
  kern.forward(exec_context(y), s, view_of(xc), view_of(wc), view_of(bc), view_of(y));
  if (any_requires_grad({x, weight, bias})) {
    SavedTensor saved_x(weight.requires_grad() ? xc : Tensor());
    SavedTensor saved_w(x.requires_grad() ? wc : Tensor());
    Shape x_shape = x.sizes(), w_shape = weight.sizes();
    record("Conv2dBackward", {x, weight, bias}, {&y},
           [&kern, s, saved_x, saved_w, x_shape, w_shape](const std::vector<Tensor>& g,
                                                          const std::vector<bool>& needs) {
             Tensor gy = contiguous_data(g[0]);  // (n, k, p, q)
             const ExecContext ctx = exec_context(gy);
             Tensor gx, gw, gb;
             if (needs[0]) {
               gx = empty(x_shape, gy.dtype(), gy.device());
               kern.backward_input(ctx, s, view_of(gy), view_of(saved_w.get()), View{},
                                   view_of(gx));
             }
             if (needs[1]) {
               gw = empty(w_shape, gy.dtype(), gy.device());
               kern.backward_weight(ctx, s, view_of(saved_x.get()), view_of(gy), view_of(gw));
             }
             if (needs[2]) {
               gb = empty({s.k}, gy.dtype(), gy.device());
               kern.backward_bias(ctx, s, view_of(gy), view_of(gb));
             }
             return std::vector<Tensor>{gx, gw, gb};
           });
  }
  return y;
}

Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                        const ConvTranspose2dOptions& o) {
  const char* op = "conv_transpose2d";
  check_common(op, x, weight, bias);
  SEG_CHECK(x.size(1) == weight.size(0), "conv_transpose2d: input ", shape_str(x.sizes()), " has ",
            x.size(1), " channels but weight ", shape_str(weight.sizes()),
            " (c_in, c_out, r, s) expects ", weight.size(0));
  check_bias(op, bias, weight.size(1), weight);
  check_geometry(op, o.stride_h, o.stride_w, o.pad_h, o.pad_w, o.dil_h, o.dil_w);
  SEG_CHECK(o.output_pad_h >= 0 && o.output_pad_w >= 0 &&
                (o.output_pad_h < o.stride_h || o.output_pad_h < o.dil_h) &&
                (o.output_pad_w < o.stride_w || o.output_pad_w < o.dil_w),
            "conv_transpose2d: output padding ", pair_str(o.output_pad_h, o.output_pad_w),
            " must be >= 0 and smaller than either the stride ", pair_str(o.stride_h, o.stride_w),
            " or the dilation ", pair_str(o.dil_h, o.dil_w));
  // The conv whose backward_input this is: input = our output, output = our input.
  Conv2dShape s;
  s.n = x.size(0);
  s.k = x.size(1);
  s.p = x.size(2);
  s.q = x.size(3);
  s.c = weight.size(1);
  s.r = weight.size(2);
  s.s = weight.size(3);
  copy_geometry(o, s);
  s.h = (s.p - 1) * s.stride_h - 2 * s.pad_h + s.dil_h * (s.r - 1) + o.output_pad_h + 1;
  s.w = (s.q - 1) * s.stride_w - 2 * s.pad_w + s.dil_w * (s.s - 1) + o.output_pad_w + 1;
  SEG_CHECK(s.p >= 1 && s.q >= 1 && s.h >= 1 && s.w >= 1, "conv_transpose2d: input ",
            shape_str(x.sizes()), " with weight ", shape_str(weight.sizes()), ", stride ",
            pair_str(s.stride_h, s.stride_w), ", padding ", pair_str(s.pad_h, s.pad_w),
            " gives output size ", pair_str(s.h, s.w), ": it must be positive");

  const auto& kern = kernels_for<OpId::conv_transpose2d>(x.device());
  Tensor xc = contiguous_data(x), wc = contiguous_data(weight), bc = contiguous_data(bias);
  Tensor y = empty({s.n, s.c, s.h, s.w}, x.dtype(), x.device());
  kern.backward_input(exec_context(y), s, view_of(xc), view_of(wc), view_of(bc), view_of(y));
  if (any_requires_grad({x, weight, bias})) {
    SavedTensor saved_x(weight.requires_grad() ? xc : Tensor());
    SavedTensor saved_w(x.requires_grad() ? wc : Tensor());
    Shape x_shape = x.sizes(), w_shape = weight.sizes();
    record("ConvTranspose2dBackward", {x, weight, bias}, {&y},
           [&kern, s, saved_x, saved_w, x_shape, w_shape](const std::vector<Tensor>& g,
                                                          const std::vector<bool>& needs) {
             Tensor gy = contiguous_data(g[0]);  // (n, c_out, h_out, w_out): the conv's input
             const ExecContext ctx = exec_context(gy);
             Tensor gx, gw, gb;
             if (needs[0]) {  // the conv's forward, without bias
               gx = empty(x_shape, gy.dtype(), gy.device());
               kern.forward(ctx, s, view_of(gy), view_of(saved_w.get()), View{}, view_of(gx));
             }
             if (needs[1]) {  // the conv's weight gradient, with x and gy exchanged
               gw = empty(w_shape, gy.dtype(), gy.device());
               kern.backward_weight(ctx, s, view_of(gy), view_of(saved_x.get()), view_of(gw));
             }
             if (needs[2]) {  // sum of gy over (n, h_out, w_out) per output channel
               Conv2dShape bs;
               bs.n = s.n;
               bs.k = s.c;
               bs.p = s.h;
               bs.q = s.w;
               gb = empty({s.c}, gy.dtype(), gy.device());
               kern.backward_bias(ctx, bs, view_of(gy), view_of(gb));
             }
             return std::vector<Tensor>{gx, gw, gb};
           });
  }
  return y;
}

}  // namespace seg
