// Differentiable ops on tensors (the front-end). Each checks its arguments and throws a seg::Error
// naming the op and the shapes involved, dispatches to the kernels of the inputs' device and records
// an autograd node when an input requires grad. Inputs must share one device and (for floating ops)
// one dtype; there is no implicit type promotion.
//
// One family per source file: engine/ops/<family>.cpp.
#pragma once

#include <optional>
#include <vector>

#include "engine/random.h"
#include "engine/tensor.h"

namespace seg {

// ---- elementwise (engine/ops/elementwise.cpp) ----
Tensor neg(const Tensor& x);
Tensor relu(const Tensor& x);
Tensor abs(const Tensor& x);
Tensor exp(const Tensor& x);
Tensor log(const Tensor& x);
Tensor sqrt(const Tensor& x);
Tensor tanh(const Tensor& x);
Tensor sigmoid(const Tensor& x);
Tensor add_scalar(const Tensor& x, double s);
Tensor mul_scalar(const Tensor& x, double s);
Tensor pow_scalar(const Tensor& x, double exponent);
Tensor rsub_scalar(double s, const Tensor& x);  // s - x
// Broadcasting binary ops (NumPy rules).
Tensor add(const Tensor& a, const Tensor& b);
Tensor sub(const Tensor& a, const Tensor& b);
Tensor mul(const Tensor& a, const Tensor& b);
Tensor div(const Tensor& a, const Tensor& b);
// The broadcast shape of a and b; throws naming both shapes and `op` when they do not broadcast.
Shape broadcast_shapes(const Shape& a, const Shape& b, const char* op);
// Sums `g` down to `shape` (the adjoint of broadcasting `shape` to g's shape).
Tensor sum_to(const Tensor& g, const Shape& shape);

inline Tensor operator-(const Tensor& x) { return neg(x); }
inline Tensor operator+(const Tensor& a, const Tensor& b) { return add(a, b); }
inline Tensor operator-(const Tensor& a, const Tensor& b) { return sub(a, b); }
inline Tensor operator*(const Tensor& a, const Tensor& b) { return mul(a, b); }
inline Tensor operator/(const Tensor& a, const Tensor& b) { return div(a, b); }
inline Tensor operator+(const Tensor& a, double s) { return add_scalar(a, s); }
inline Tensor operator+(double s, const Tensor& a) { return add_scalar(a, s); }
inline Tensor operator-(const Tensor& a, double s) { return add_scalar(a, -s); }
inline Tensor operator-(double s, const Tensor& a) { return rsub_scalar(s, a); }
inline Tensor operator*(const Tensor& a, double s) { return mul_scalar(a, s); }
inline Tensor operator*(double s, const Tensor& a) { return mul_scalar(a, s); }
inline Tensor operator/(const Tensor& a, double s) { return mul_scalar(a, 1.0 / s); }

// ---- reductions (engine/ops/reduce.cpp) ----
Tensor sum(const Tensor& x);  // all elements -> scalar
Tensor sum(const Tensor& x, const std::vector<int>& dims, bool keepdim = false);
Tensor mean(const Tensor& x);
Tensor mean(const Tensor& x, const std::vector<int>& dims, bool keepdim = false);
// Index of the largest value along `dim` (i32, dim removed unless keepdim). Not differentiable.
Tensor argmax(const Tensor& x, int dim, bool keepdim = false);

// ---- shape ops (engine/ops/shape.cpp; views are methods of Tensor) ----
// Constant padding of the last two dims: pads = {left, right, top, bottom}; negative values crop.
Tensor pad2d(const Tensor& x, const std::vector<int64_t>& pads, double value = 0.0);
// Concatenation along `dim`; all other sizes must match.
Tensor cat(const std::vector<Tensor>& xs, int dim);

// ---- matrix products (engine/ops/linear.cpp) ----
// (m, k) @ (k, n), or batched (b, m, k) @ (b, k, n) with a 2-D operand broadcast over the batch.
Tensor matmul(const Tensor& a, const Tensor& b);
// x (..., in) @ weight (out, in)^T + bias (out).
Tensor linear(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor());

// ASPP's 1x1 projection of the concatenation [branches..., pooled broadcast over h, w] without
// materialising it (engine/ops/aspp.cpp): branches (n, b_i, h, w), pooled (n, p) or (n, p, 1, 1)
// (the image-pooling branch, spatially constant; may be undefined: no pooled branch), weight
// (k, sum b_i + p) or (k, sum b_i + p, 1, 1). The pooled branch's share of the projection is a
// per-(image, channel) bias. Returns (n, k, h, w), equal to conv2d(cat({branches..., pooled
// expanded}, 1), weight) with no bias.
Tensor aspp_projection(const std::vector<Tensor>& branches, const Tensor& pooled, const Tensor& weight);

// ---- convolution (engine/ops/conv.cpp) ----
struct Conv2dOptions {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t dil_h = 1, dil_w = 1;
  static Conv2dOptions make(int64_t stride, int64_t pad, int64_t dilation = 1) {
    return Conv2dOptions{stride, stride, pad, pad, dilation, dilation};
  }
};
// x (n, c, h, w), weight (k, c, r, s), bias (k) or undefined.
Tensor conv2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
              const Conv2dOptions& options = Conv2dOptions());

struct ConvTranspose2dOptions {
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  int64_t output_pad_h = 0, output_pad_w = 0;
  int64_t dil_h = 1, dil_w = 1;
  static ConvTranspose2dOptions make(int64_t stride, int64_t pad, int64_t output_pad = 0,
                                     int64_t dilation = 1) {
    return ConvTranspose2dOptions{stride, stride, pad, pad, output_pad, output_pad, dilation, dilation};
  }
};
// x (n, c_in, h, w), weight (c_in, c_out, r, s) as PyTorch's ConvTranspose2d, bias (c_out).
// Output size (h - 1) * stride - 2 * pad + dil * (r - 1) + output_pad + 1.
Tensor conv_transpose2d(const Tensor& x, const Tensor& weight, const Tensor& bias = Tensor(),
                        const ConvTranspose2dOptions& options = ConvTranspose2dOptions());

// ---- normalisation (engine/ops/norm.cpp) ----
// x (n, c, h, w) or (n, c). Training uses batch statistics and, when running_mean/var are
// defined, updates them in place (momentum as in PyTorch: new = (1 - m) * old + m * batch, unbiased
// variance). Evaluation uses the running statistics. weight/bias may be undefined (no affine).
Tensor batch_norm2d(const Tensor& x, const Tensor& weight, const Tensor& bias,
                    const Tensor& running_mean, const Tensor& running_var, bool training,
                    double momentum = 0.1, double eps = 1e-5);

// ---- pooling and resizing (engine/ops/pool.cpp, engine/ops/upsample.cpp) ----
struct MaxPool2dOptions {
  int64_t kernel_h = 2, kernel_w = 2;
  int64_t stride_h = 2, stride_w = 2;
  int64_t pad_h = 0, pad_w = 0;
  bool ceil_mode = false;
  static MaxPool2dOptions make(int64_t kernel, int64_t stride, int64_t pad = 0, bool ceil = false) {
    return MaxPool2dOptions{kernel, kernel, stride, stride, pad, pad, ceil};
  }
};
Tensor max_pool2d(const Tensor& x, const MaxPool2dOptions& options = MaxPool2dOptions());
// Output (n, c, out_h, out_w); (1, 1) is global average pooling.
Tensor adaptive_avg_pool2d(const Tensor& x, int64_t out_h, int64_t out_w);
// Bilinear resize of (n, c, h, w) to (n, c, out_h, out_w), PyTorch's align_corners semantics.
Tensor upsample_bilinear2d(const Tensor& x, int64_t out_h, int64_t out_w, bool align_corners);

// ---- softmax, dropout (engine/ops/softmax.cpp, engine/ops/dropout.cpp) ----
Tensor softmax(const Tensor& x, int dim);
Tensor log_softmax(const Tensor& x, int dim);
// Training: zeroes each element with probability p and scales the rest by 1 / (1 - p), drawing
// from `gen`; evaluation (or p == 0): returns x.
Tensor dropout(const Tensor& x, double p, bool training, Generator& gen);

// ---- losses (engine/ops/loss.cpp) ----
enum class Reduction { none, mean, sum };

struct CrossEntropyOptions {
  int64_t ignore_index = -100;
  Tensor weight;  // (c) class weights, or undefined
  Reduction reduction = Reduction::mean;
};
// logits (n, c) or (n, c, h, w) (any trailing dims), labels (n) or (n, h, w) i32. 'mean' divides
// by the summed weights of the non-ignored positions (PyTorch); an all-ignored batch gives NaN for
// 'mean' as in PyTorch. Labels outside [0, c) other than ignore_index are an error.
Tensor cross_entropy(const Tensor& logits, const Tensor& labels,
                     const CrossEntropyOptions& options = CrossEntropyOptions());
Tensor l1_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
Tensor mse_loss(const Tensor& input, const Tensor& target, Reduction reduction = Reduction::mean);
// anchor, positive, negative (n, d); p = 1 (L1) or 2 (L2); PyTorch's eps = 1e-6 inside the norm.
Tensor triplet_margin_loss(const Tensor& anchor, const Tensor& positive, const Tensor& negative,
                           double margin = 1.0, int p = 2, double eps = 1e-6,
                           Reduction reduction = Reduction::mean);

// ---- metrics (engine/ops/metrics.cpp) ----
// Adds to `confusion` ((c, c) i64, row = ground truth, column = prediction, on logits' device) the
// pixels of one batch: prediction = argmax over classes of logits (n, c, h, w), bilinearly
// upsampled on the fly to the labels' size (n, label_h, label_w) when it differs. ignore_index pixels
// are skipped; other labels outside [0, c) are an error naming the value. Not differentiable.
void accumulate_confusion(Tensor& confusion, const Tensor& logits, const Tensor& labels,
                          int64_t ignore_index = 255, bool align_corners = false);
// A fresh (c, c) i64 confusion matrix of one batch.
Tensor confusion_matrix(const Tensor& logits, const Tensor& labels, int64_t ignore_index = 255,
                        bool align_corners = false);

}  // namespace seg
