// Gradient-check cases: matmul, linear, conv2d, conv_transpose2d.
//
// Shapes are small (f64 central differences run the op three times per checked element) but cover
// every path of the kernels: folded and looped batches, a 2-D operand shared by the batch (its
// gradient summed by the GEMM), transposed views passed as transpose flags, the 1x1 conv that skips
// im2col, strides, padding, dilation, non-square kernels, odd sizes, no bias, and transposed
// convolutions with output_padding (including output_padding >= stride, allowed by dilation).
#include "engine/ops.h"
#include "tests/support/gradcheck.h"

namespace seg::test {

namespace {

GradCase matmul_case(const std::string& name, const Shape& a, const Shape& b,
                     std::function<Tensor(const Tensor&, const Tensor&)> f) {
  return GradCase{"matmul", name,
                  [a, b](Generator& g) {
                    return std::vector<Tensor>{randn64(a, g), randn64(b, g)};
                  },
                  [f](const std::vector<Tensor>& x) { return f(x[0], x[1]); }};
}

GradCase linear_case(const std::string& name, const Shape& x, int64_t in, int64_t out, bool bias,
                     std::function<Tensor(const Tensor&)> prep = nullptr) {
  return GradCase{"linear", name,
                  [x, in, out, bias](Generator& g) {
                    return std::vector<Tensor>{randn64(x, g), randn64({out, in}, g),
                                               bias ? randn64({out}, g) : Tensor()};
                  },
                  [prep](const std::vector<Tensor>& v) {
                    return linear(prep ? prep(v[0]) : v[0], v[1], v[2]);
                  }};
}

GradCase conv_case(const std::string& name, const Shape& x, const Shape& w, bool bias,
                   Conv2dOptions o) {
  return GradCase{"conv2d", name,
                  [x, w, bias](Generator& g) {
                    return std::vector<Tensor>{randn64(x, g), randn64(w, g),
                                               bias ? randn64({w[0]}, g) : Tensor()};
                  },
                  [o](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], o); }};
}

GradCase conv_t_case(const std::string& name, const Shape& x, const Shape& w, bool bias,
                     ConvTranspose2dOptions o) {
  return GradCase{
      "conv_transpose2d", name,
      [x, w, bias](Generator& g) {
        return std::vector<Tensor>{randn64(x, g), randn64(w, g),
                                   bias ? randn64({w[1]}, g) : Tensor()};
      },
      [o](const std::vector<Tensor>& v) { return conv_transpose2d(v[0], v[1], v[2], o); }};
}

}  // namespace

void add_layer_grad_cases(std::vector<GradCase>& cases) {
  auto mm = [](const Tensor& a, const Tensor& b) { return matmul(a, b); };
  cases.push_back(matmul_case("matmul (3,4) @ (4,5)", {3, 4}, {4, 5}, mm));
  cases.push_back(matmul_case("matmul (1,7) @ (7,1)", {1, 7}, {7, 1}, mm));
  cases.push_back(matmul_case("matmul batched (2,3,4) @ (2,4,5)", {2, 3, 4}, {2, 4, 5}, mm));
  cases.push_back(
      matmul_case("matmul (3,3,4) @ shared (4,2) (folded batch)", {3, 3, 4}, {4, 2}, mm));
  cases.push_back(matmul_case("matmul shared (3,4) @ (2,4,5)", {3, 4}, {2, 4, 5}, mm));
  cases.push_back(matmul_case("matmul transposed views (4,3)^T @ (5,4)^T", {4, 3}, {5, 4},
                              [](const Tensor& a, const Tensor& b) {
                                return matmul(a.transpose(0, 1), b.transpose(0, 1));
                              }));
  cases.push_back(matmul_case(
      "matmul batched transposed (2,4,3)^T @ shared (4,5) (looped batch)", {2, 4, 3}, {4, 5},
      [](const Tensor& a, const Tensor& b) { return matmul(a.transpose(1, 2), b); }));
  cases.push_back(matmul_case("matmul expanded batch (1,3,4) -> (2,3,4) @ (2,4,2)", {1, 3, 4},
                              {2, 4, 2}, [](const Tensor& a, const Tensor& b) {
                                return matmul(a.expand({2, 3, 4}), b);
                              }));

  cases.push_back(linear_case("linear (5,3) -> 4 with bias", {5, 3}, 3, 4, true));
  cases.push_back(linear_case("linear (2,3,3) -> 2 no bias", {2, 3, 3}, 3, 2, false));
  cases.push_back(linear_case("linear 1-D (3) -> 4", {3}, 3, 4, true));
  cases.push_back(linear_case("linear transposed input (3,5)^T -> 2", {3, 5}, 3, 2, true,
                              [](const Tensor& x) { return x.transpose(0, 1); }));

  using CO = Conv2dOptions;
  cases.push_back(conv_case("conv2d 3x3 pad 1 (2,3,5,5) -> 4", {2, 3, 5, 5}, {4, 3, 3, 3}, true,
                            CO::make(1, 1)));
  cases.push_back(conv_case("conv2d 3x3 stride 2 pad 1, odd (1,2,7,6) -> 3", {1, 2, 7, 6},
                            {3, 2, 3, 3}, true, CO::make(2, 1)));
  cases.push_back(conv_case("conv2d 3x3 dilation 2 pad 2 (1,2,7,7) -> 2", {1, 2, 7, 7},
                            {2, 2, 3, 3}, true, CO::make(1, 2, 2)));
  cases.push_back(conv_case("conv2d 2x3 stride (2,1) pad (1,0), no bias (2,2,6,5) -> 3",
                            {2, 2, 6, 5}, {3, 2, 2, 3}, false, CO{2, 1, 1, 0, 1, 1}));
  cases.push_back(conv_case("conv2d 3x2 dilation (1,2) stride (1,2) pad (0,1) (1,3,5,8) -> 2",
                            {1, 3, 5, 8}, {2, 3, 3, 2}, true, CO{1, 2, 0, 1, 1, 2}));
  cases.push_back(conv_case("conv2d 1x1 (pointwise, no im2col) (2,4,3,5) -> 3", {2, 4, 3, 5},
                            {3, 4, 1, 1}, true, CO::make(1, 0)));
  cases.push_back(conv_case("conv2d 1x1 stride 2 (2,4,5,5) -> 3, no bias", {2, 4, 5, 5},
                            {3, 4, 1, 1}, false, CO::make(2, 0)));
  cases.push_back(conv_case("conv2d 7x7 stride 2 pad 3 stem (1,3,9,11) -> 2", {1, 3, 9, 11},
                            {2, 3, 7, 7}, true, CO::make(2, 3)));
  cases.push_back(conv_case("conv2d padding larger than the input (1,1,2,3) 3x3 pad 2",
                            {1, 1, 2, 3}, {2, 1, 3, 3}, true, CO::make(1, 2)));

  using TO = ConvTranspose2dOptions;
  cases.push_back(conv_t_case("conv_transpose2d 2x2 stride 2 (UNet up) (2,3,3,4) -> 2",
                              {2, 3, 3, 4}, {3, 2, 2, 2}, true, TO::make(2, 0)));
  cases.push_back(conv_t_case("conv_transpose2d 3x3 stride 2 pad 1 output_pad 1 (1,2,3,3) -> 3",
                              {1, 2, 3, 3}, {2, 3, 3, 3}, true, TO::make(2, 1, 1)));
  cases.push_back(conv_t_case("conv_transpose2d 3x3 dilation 2 pad 1 (1,2,4,3) -> 2", {1, 2, 4, 3},
                              {2, 2, 3, 3}, true, TO::make(1, 1, 0, 2)));
  cases.push_back(conv_t_case("conv_transpose2d 2x3 stride (2,1) output_pad (1,0), no bias",
                              {2, 3, 3, 4}, {3, 2, 2, 3}, false, TO{2, 1, 0, 1, 1, 0, 1, 1}));
  cases.push_back(conv_t_case("conv_transpose2d 3x3 stride 1 dilation 2 output_pad 1 (> stride)",
                              {1, 2, 3, 4}, {2, 3, 3, 3}, true, TO::make(1, 0, 1, 2)));
  cases.push_back(conv_t_case("conv_transpose2d 1x1 (pointwise) (2,3,3,2) -> 4", {2, 3, 3, 2},
                              {3, 4, 1, 1}, true, TO::make(1, 0)));
}

}  // namespace seg::test
