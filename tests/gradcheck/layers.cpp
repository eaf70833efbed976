// Gradient-check cases: matmul, linear, conv2d, conv_transpose2d, aspp_projection.
//
// Shapes are small (f64 central differences run the op three times per checked element) but cover
// every path of the kernels: folded and looped batches, a 2-D operand shared by the batch (its
// gradient summed by the GEMM), transposed views passed as transpose flags, the 1x1 conv that skips
// im2col, strides, padding, dilation, non-square kernels, odd sizes, no bias, and transposed
// convolutions with output_padding (including output_padding >= stride, allowed by dilation).
// aspp_projection: one to five branches of odd widths, with and without the pooled branch, 2-D and
// 4-D weights and pooled inputs, batch 1, 1-pixel-wide maps.
//
// The parity_only cases (CUDA against the CPU only) use sizes that span many GEMM and convolution
// tiles and are no multiple of any tile size (odd channel counts, primes), with stride 2, dilation
// 12 (ASPP's rate at output stride 16), output padding (also >= stride, which the CUDA backend
// computes through a padded copy), 1x1 and 7x7 kernels, transposed views, shared operands whose
// gradient the GEMM sums over the batch (folded and looped), ASPP at DeepLab-like widths, and
// products with k = 0 (the GEMM kernel's own beta * C path, including an empty sum over the batch).
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

// aspp_projection(branches of `widths` over (n, h, w), pooled (n, p) or none when p < 0, weight
// (k, sum + p) or (k, sum + p, 1, 1)). Inputs: the branches, pooled, weight.
GradCase aspp_case(const std::string& name, int64_t n, int64_t h, int64_t w,
                   const std::vector<int64_t>& widths, int64_t p, int64_t k, bool weight4d,
                   bool pooled4d) {
  return GradCase{
      "aspp_projection", name,
      [=](Generator& g) {
        std::vector<Tensor> in;
        int64_t total = 0;
        for (int64_t b : widths) {
          in.push_back(randn64({n, b, h, w}, g));
          total += b;
        }
        if (p >= 0) {
          in.push_back(pooled4d ? randn64({n, p, 1, 1}, g) : randn64({n, p}, g));
          total += p;
        } else {
          in.emplace_back();
        }
        in.push_back(weight4d ? randn64({k, total, 1, 1}, g) : randn64({k, total}, g));
        return in;
      },
      [nb = widths.size()](const std::vector<Tensor>& v) {
        std::vector<Tensor> branches(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(nb));
        return aspp_projection(branches, v[nb], v[nb + 1]);
      }};
}

GradCase parity_only(GradCase c) {
  c.parity_only = true;
  c.name = "parity: " + c.name;
  return c;
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

  cases.push_back(aspp_case("aspp 2 branches (2,{3,2},4,5) + pooled (2,3) -> 4", 2, 4, 5, {3, 2},
                            3, 4, false, false));
  cases.push_back(aspp_case("aspp 1 branch, no pooled, weight (3,5,1,1)", 2, 3, 3, {5}, -1, 3, true,
                            false));
  cases.push_back(aspp_case("aspp 4 branches {1,3,2,4} (3,*,3,1) + pooled (3,2,1,1) -> 5", 3, 3, 1,
                            {1, 3, 2, 4}, 2, 5, true, true));
  cases.push_back(aspp_case("aspp 5 branches {2,1,3,1,2} batch 1 (1,*,2,3) + pooled (1,4) -> 3", 1,
                            2, 3, {2, 1, 3, 1, 2}, 4, 3, false, false));
  cases.push_back(aspp_case("aspp 3 branches 1x1 maps (2,{2,3,1},1,1) + pooled (2,1) -> 2", 2, 1, 1,
                            {2, 3, 1}, 1, 2, false, false));

  // ---- CUDA parity only: sizes spanning many tiles, no multiple of any tile size ----
  cases.push_back(parity_only(
      matmul_case("matmul batched (3,131,67) @ (3,67,129)", {3, 131, 67}, {3, 67, 129}, mm)));
  cases.push_back(parity_only(matmul_case("matmul (5,70,33) @ shared (33,97) (folded batch)",
                                          {5, 70, 33}, {33, 97}, mm)));
  cases.push_back(parity_only(matmul_case("matmul shared (65,77) @ (4,77,130)", {65, 77},
                                          {4, 77, 130}, mm)));
  cases.push_back(parity_only(matmul_case(
      "matmul transposed views (67,131)^T @ (129,67)^T", {67, 131}, {129, 67},
      [](const Tensor& a, const Tensor& b) { return matmul(a.transpose(0, 1), b.transpose(0, 1)); })));
  cases.push_back(parity_only(matmul_case(
      "matmul batched transposed (3,67,45)^T @ shared (67,50) (looped sum)", {3, 67, 45}, {67, 50},
      [](const Tensor& a, const Tensor& b) { return matmul(a.transpose(1, 2), b); })));
  // k = 0: the GEMM kernel writes beta * C itself (exact zeros for beta 0, nothing for the bias's
  // beta 1), per batch entry or once for a sum over the batch (an empty sum: zero gradient).
  cases.push_back(parity_only(matmul_case("matmul (3,0) @ (0,4): k = 0", {3, 0}, {0, 4}, mm)));
  cases.push_back(parity_only(
      matmul_case("matmul batched (2,3,0) @ (2,0,4): k = 0 per batch entry", {2, 3, 0}, {2, 0, 4}, mm)));
  cases.push_back(parity_only(matmul_case("matmul (2,0,3) @ shared (3,4): empty sum for the shared gradient",
                                          {2, 0, 3}, {3, 4}, mm)));
  cases.push_back(parity_only(linear_case("linear (5,0) -> 3 with bias: k = 0", {5, 0}, 0, 3, true)));
  cases.push_back(parity_only(linear_case("linear (517,97) -> 130 with bias", {517, 97}, 97, 130, true)));
  cases.push_back(parity_only(linear_case("linear (3,37,61) -> 45 no bias", {3, 37, 61}, 61, 45, false)));
  cases.push_back(parity_only(linear_case("linear transposed input (97,301)^T -> 33", {97, 301}, 97,
                                          33, true, [](const Tensor& x) { return x.transpose(0, 1); })));

  cases.push_back(parity_only(conv_case("conv2d 3x3 pad 1 (3,37,61,53) -> 29", {3, 37, 61, 53},
                                        {29, 37, 3, 3}, true, CO::make(1, 1))));
  cases.push_back(parity_only(conv_case("conv2d 3x3 stride 2 pad 1 (2,19,45,47) -> 23", {2, 19, 45, 47},
                                        {23, 19, 3, 3}, true, CO::make(2, 1))));
  cases.push_back(parity_only(conv_case("conv2d 3x3 dilation 12 pad 12 (2,13,37,41) -> 17",
                                        {2, 13, 37, 41}, {17, 13, 3, 3}, true, CO::make(1, 12, 12))));
  cases.push_back(parity_only(conv_case("conv2d 1x1 (3,67,33,29) -> 45, no bias", {3, 67, 33, 29},
                                        {45, 67, 1, 1}, false, CO::make(1, 0))));
  cases.push_back(parity_only(conv_case("conv2d 7x7 stride 2 pad 3 stem (2,3,67,71) -> 16",
                                        {2, 3, 67, 71}, {16, 3, 7, 7}, true, CO::make(2, 3))));
  cases.push_back(parity_only(conv_case("conv2d 3x5 stride (2,1) pad (1,2) dilation (1,3) (2,11,29,37) -> 7",
                                        {2, 11, 29, 37}, {7, 11, 3, 5}, true, CO{2, 1, 1, 2, 1, 3})));

  cases.push_back(parity_only(conv_t_case("conv_transpose2d 2x2 stride 2 (UNet up) (2,37,23,19) -> 29",
                                          {2, 37, 23, 19}, {37, 29, 2, 2}, true, TO::make(2, 0))));
  cases.push_back(parity_only(conv_t_case(
      "conv_transpose2d 3x3 stride 2 pad 1 output_pad 1 (2,21,17,19) -> 13", {2, 21, 17, 19},
      {21, 13, 3, 3}, true, TO::make(2, 1, 1))));
  cases.push_back(parity_only(conv_t_case(
      "conv_transpose2d 3x3 stride 1 dilation 2 output_pad 1 (> stride) (2,9,19,21) -> 11",
      {2, 9, 19, 21}, {9, 11, 3, 3}, true, TO::make(1, 0, 1, 2))));
  cases.push_back(parity_only(conv_t_case(
      "conv_transpose2d 3x2 stride (1,2) pad (1,0) output_pad (0,1) dilation (3,1), no bias",
      {3, 7, 13, 11}, {7, 5, 3, 2}, false, TO{1, 2, 1, 0, 0, 1, 3, 1})));

  cases.push_back(parity_only(aspp_case("aspp 4 branches {37,41,29,33} (3,*,29,31) + pooled (3,23) -> 45",
                                        3, 29, 31, {37, 41, 29, 33}, 23, 45, false, false)));
  cases.push_back(parity_only(aspp_case("aspp 5 branches {64,17,64,3,64} (2,*,17,19) + pooled (2,65,1,1) -> 67",
                                        2, 17, 19, {64, 17, 64, 3, 64}, 65, 67, true, true)));
  cases.push_back(parity_only(aspp_case("aspp 2 branches {31,33} (1,*,41,43), no pooled -> 129", 1,
                                        41, 43, {31, 33}, -1, 129, false, false)));
}

}  // namespace seg::test
