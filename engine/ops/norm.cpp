// Batch normalisation front-end (PyTorch's F.batch_norm on (n, c) or (n, c, h, w)).
//
// Design notes
// - Running statistics are buffers, not inputs of the autograd node: the kernel updates them in
//   place during a training forward (never recorded), after which their version is bumped so any
//   tensor saved from them earlier is seen as stale.
// - Training saves the batch mean and invstd the kernel computed; evaluation saves copies of the
//   running mean and of 1 / sqrt(running_var + eps) taken at forward time, so later updates of the
//   running statistics cannot change this node's gradient.
// - The node keeps x and the weight (for gx and gweight); bias needs nothing.
#include <cmath>

#include "engine/ops.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

constexpr const char* kOp = "batch_norm2d";

// A per-channel parameter or statistic: undefined, or a 1-D tensor of x's channel count.
void check_channel_vector(const Tensor& x, const Tensor& v, const char* arg) {
  if (!v.defined()) return;
  SEG_CHECK(v.dim() == 1 && v.size(0) == x.size(1), kOp, ": ", arg, " ", shape_str(v.sizes()),
            " does not match the ", x.size(1), " channels of input ", shape_str(x.sizes()),
            " (expected (", x.size(1), "))");
  SEG_CHECK(v.device() == x.device() && v.dtype() == x.dtype(), kOp, ": ", arg, " ", v.str(),
            " must have the dtype and device of input ", x.str());
}

}  // namespace

Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    const Tensor& running_mean, const Tensor& running_var, bool training,
                    double momentum, double eps) {
  check_floating(x, kOp, "input");
  SEG_CHECK(x.dim() == 2 || x.dim() == 4, kOp, ": input must be (n, c) or (n, c, h, w), got ",
            shape_str(x.sizes()));
  check_channel_vector(x, weight, "weight");
  check_channel_vector(x, bias, "bias");
  check_channel_vector(x, running_mean, "running_mean");
  check_channel_vector(x, running_var, "running_var");
  SEG_CHECK(running_mean.defined() == running_var.defined(), kOp,
            ": running_mean and running_var must both be given or both be undefined");
  SEG_CHECK(training || running_mean.defined(), kOp,
            ": evaluation mode needs running_mean and running_var (input ", shape_str(x.sizes()), ")");
  SEG_CHECK(eps >= 0.0 && std::isfinite(eps), kOp, ": eps must be finite and >= 0, got ", eps);
  for (const Tensor* r : {&running_mean, &running_var}) {
    SEG_CHECK(!r->defined() || !r->requires_grad(), kOp,
              ": running statistics are buffers updated in place and must not require grad, got ",
              r->str());
  }

  BatchNormShape shape;
  shape.n = x.size(0);
  shape.c = x.size(1);
  shape.hw = x.dim() == 4 ? x.size(2) * x.size(3) : 1;
  const int64_t per_channel = shape.n * shape.hw;
  SEG_CHECK(!training || per_channel != 1, kOp,
            ": expected more than 1 value per channel when training, got input ", shape_str(x.sizes()));

  const auto& k = kernels_for<OpId::batch_norm2d>(x.device());
  Tensor xc = contiguous_data(x);
  Tensor wc = contiguous_data(weight);
  Tensor bc = contiguous_data(bias);
  Tensor y = empty(x.sizes(), x.dtype(), x.device());
  Tensor mean, invstd;  // (c): what the backward normalised with
  const bool needs_grad = any_requires_grad({x, weight, bias});
  if (training) {
    mean = empty({shape.c}, x.dtype(), x.device());
    invstd = empty({shape.c}, x.dtype(), x.device());
    k.forward_train(exec_context(x), shape, view_of(xc), view_of(wc), view_of(bc), view_of(running_mean),
                    view_of(running_var), momentum, eps, view_of(y), view_of(mean), view_of(invstd));
    if (running_mean.defined() && per_channel > 0) {
      running_mean.bump_version();
      running_var.bump_version();
    }
  } else {
    k.forward_eval(exec_context(x), shape, view_of(xc), view_of(wc), view_of(bc), view_of(running_mean),
                   view_of(running_var), eps, view_of(y));
    if (needs_grad) {
      NoGradGuard no_grad;
      mean = running_mean.detach().clone();
      invstd = pow_scalar(add_scalar(running_var.detach(), eps), -0.5);
    }
  }
  if (needs_grad) {
    SavedTensor saved_x(xc), saved_w(wc), saved_mean(mean), saved_invstd(invstd);
    record("BatchNorm2dBackward", {x, weight, bias}, {&y},
           [shape, training, eps, saved_x, saved_w, saved_mean, saved_invstd, &k](
               const std::vector<Tensor>& g, const std::vector<bool>& needs) {
             Tensor gy = contiguous_data(g[0]);
             Tensor xs = saved_x.get();
             Tensor gx = needs[0] ? empty(xs.sizes(), xs.dtype(), xs.device()) : Tensor();
             Tensor gw = needs[1] ? empty({shape.c}, xs.dtype(), xs.device()) : Tensor();
             Tensor gb = needs[2] ? empty({shape.c}, xs.dtype(), xs.device()) : Tensor();
             k.backward(exec_context(gy), shape, training, view_of(xs), view_of(gy),
                        view_of(saved_w.get()), view_of(saved_mean.get()), view_of(saved_invstd.get()), eps,
                        view_of(gx), view_of(gw), view_of(gb));
             return std::vector<Tensor>{gx, gw, gb};
           });
  }
  return y;
}

}  // namespace seg
