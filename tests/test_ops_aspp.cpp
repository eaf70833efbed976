// aspp_projection against its definition, conv2d(cat(branches + pooled expanded over h, w),
// weight), in f64 on the CPU: the output and the gradient of every input (branches, pooled,
// weight), for several branch counts and widths, with and without the pooled branch, 2-D and 4-D
// weights and pooled inputs, odd and degenerate sizes, strided inputs; f32 against the f64
// reference; and bad input, whose errors name the shapes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"

using namespace seg;

namespace {

// f64 against f64 in another summation order (the reference concatenates and runs one conv GEMM
// over all channels; the op sums per-branch GEMMs and a rank-1 bias term): sums of ~100 products
// of O(1) values differ by ~1e-14 relative; 1e-11 is far above that and far below any indexing
// error (O(1)).
constexpr double kF64Tolerance = 1e-11;
// f32 op against the f64 reference: sums of up to ~100 products rounded to f32 (~6e-8 each):
// a few 1e-6 relative; 1e-4 leaves a wide margin and still catches any wrong term.
constexpr double kF32Tolerance = 1e-4;

struct Setup {
  std::string name;
  int64_t n, h, w;
  std::vector<int64_t> widths;
  int64_t p;  // pooled channels; < 0: no pooled branch
  int64_t k;
  bool weight4d = false;
  bool pooled4d = false;
};

struct Inputs {
  std::vector<Tensor> branches;
  Tensor pooled, weight;
};

Inputs make_inputs(const Setup& s, DType dtype, uint64_t seed) {
  Generator gen(seed);
  Inputs in;
  int64_t total = 0;
  for (int64_t b : s.widths) {
    in.branches.push_back(randn({s.n, b, s.h, s.w}, gen, dtype));
    total += b;
  }
  if (s.p >= 0) {
    in.pooled = s.pooled4d ? randn({s.n, s.p, 1, 1}, gen, dtype) : randn({s.n, s.p}, gen, dtype);
    total += s.p;
  }
  in.weight = s.weight4d ? randn({s.k, total, 1, 1}, gen, dtype) : randn({s.k, total}, gen, dtype);
  return in;
}

// Fresh leaves (copies) that require grad.
Inputs leaves(const Inputs& in, DType dtype) {
  auto leaf = [dtype](const Tensor& t) {
    if (!t.defined()) return Tensor();
    Tensor c = t.detach().to(dtype).clone().detach();
    c.set_requires_grad(true);
    return c;
  };
  Inputs out;
  for (const Tensor& b : in.branches) out.branches.push_back(leaf(b));
  out.pooled = leaf(in.pooled);
  out.weight = leaf(in.weight);
  return out;
}

// The definition: conv2d over the materialised concatenation.
Tensor reference(const Inputs& in) {
  const int64_t n = in.branches[0].size(0), h = in.branches[0].size(2), w = in.branches[0].size(3);
  std::vector<Tensor> parts = in.branches;
  if (in.pooled.defined()) {
    const int64_t p = in.pooled.size(1);
    Tensor p4 = in.pooled.dim() == 4 ? in.pooled : in.pooled.view({n, p, 1, 1});
    parts.push_back(p4.expand({n, p, h, w}));
  }
  Tensor w4 = in.weight.dim() == 4 ? in.weight
                                   : in.weight.view({in.weight.size(0), in.weight.size(1), 1, 1});
  return conv2d(cat(parts, 1), w4);
}

Tensor run_op(const Inputs& in) { return aspp_projection(in.branches, in.pooled, in.weight); }

// max |a - b| / max(1, max |b|).
double normalised_diff(const Tensor& a, const Tensor& b) {
  REQUIRE(a.defined());
  REQUIRE(b.defined());
  REQUIRE(a.sizes() == b.sizes());
  std::vector<double> va = to_vector<double>(a), vb = to_vector<double>(b);
  double worst = 0.0, scale = 1.0;
  for (double v : vb) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < va.size(); ++i) worst = std::max(worst, std::abs(va[i] - vb[i]));
  return worst / scale;
}

// Runs the op in `dtype` and the reference in f64 on the same values with the same upstream
// gradient; compares the outputs and every gradient.
void check_against_reference(const Setup& s, DType dtype, double tolerance) {
  CAPTURE(s.name);
  CAPTURE(dtype_name(dtype));
  const Inputs base = make_inputs(s, DType::f64, 99);
  Inputs ours = leaves(base, dtype), ref = leaves(base, DType::f64);
  Tensor y = run_op(ours);
  Tensor y_ref = reference(ref);
  REQUIRE(y.sizes() == Shape{s.n, s.k, s.h, s.w});
  CHECK(normalised_diff(y.to(DType::f64), y_ref) < tolerance);
  Generator gen(7);
  Tensor gy = randn(y_ref.sizes(), gen, DType::f64);
  y.backward(gy.to(dtype));
  y_ref.backward(gy);
  for (size_t i = 0; i < ours.branches.size(); ++i) {
    CAPTURE(i);
    CHECK(ours.branches[i].grad().sizes() == ours.branches[i].sizes());
    CHECK(normalised_diff(ours.branches[i].grad().to(DType::f64), ref.branches[i].grad()) < tolerance);
  }
  if (ours.pooled.defined()) {
    CHECK(ours.pooled.grad().sizes() == ours.pooled.sizes());
    CHECK(normalised_diff(ours.pooled.grad().to(DType::f64), ref.pooled.grad()) < tolerance);
  }
  CHECK(ours.weight.grad().sizes() == ours.weight.sizes());
  CHECK(normalised_diff(ours.weight.grad().to(DType::f64), ref.weight.grad()) < tolerance);
}

const std::vector<Setup>& setups() {
  static const std::vector<Setup> all = {
      {"DeepLab-like: 4 branches + pooled", 2, 7, 9, {8, 8, 8, 8}, 8, 6},
      {"one branch, no pooled", 2, 5, 3, {7}, -1, 4},
      {"one branch + pooled, weight (k,c,1,1)", 3, 4, 4, {5}, 3, 2, true},
      {"five odd branches + pooled (n,p,1,1)", 2, 3, 5, {3, 1, 5, 2, 7}, 3, 5, true, true},
      {"batch 1, 1x1 maps", 1, 1, 1, {2, 3}, 4, 3},
      {"one-pixel-wide maps, odd widths", 3, 6, 1, {1, 2, 3}, 1, 7},
      {"more outputs than inputs", 2, 4, 3, {2, 1}, 1, 9},
  };
  return all;
}

}  // namespace

TEST_CASE("aspp_projection equals conv2d of the concatenation (f64: values and all gradients)") {
  for (const Setup& s : setups()) check_against_reference(s, DType::f64, kF64Tolerance);
}

TEST_CASE("aspp_projection in f32 matches the f64 definition") {
  for (const Setup& s : setups()) check_against_reference(s, DType::f32, kF32Tolerance);
}

TEST_CASE("aspp_projection: strided and expanded inputs are read correctly") {
  Generator gen(3);
  // Branch 0 is a channel slice of a larger tensor; branch 1 a transposed (h, w) view; pooled a
  // column slice; the weight a transposed (C, k) tensor.
  Tensor big = randn({2, 9, 4, 5}, gen, DType::f64);
  Tensor b0 = big.narrow(1, 2, 4);                                        // (2,4,4,5) strided
  Tensor b1 = randn({2, 3, 5, 4}, gen, DType::f64).transpose(2, 3);      // (2,3,4,5) permuted
  Tensor pooled = randn({2, 6}, gen, DType::f64).narrow(1, 1, 2);        // (2,2) strided
  Tensor weight = randn({9, 5}, gen, DType::f64).transpose(0, 1);        // (5,9) transposed
  Tensor y = aspp_projection({b0, b1}, pooled, weight);
  Tensor y_ref = reference(Inputs{{b0.contiguous(), b1.contiguous()}, pooled.contiguous(),
                                  weight.contiguous()});
  CHECK(normalised_diff(y, y_ref) < kF64Tolerance);
}

TEST_CASE("aspp_projection: empty batch and no-grad evaluation") {
  Generator gen(5);
  Tensor b = randn({0, 3, 4, 4}, gen, DType::f64).set_requires_grad(true);
  Tensor p = randn({0, 2}, gen, DType::f64).set_requires_grad(true);
  Tensor w = randn({4, 5}, gen, DType::f64).set_requires_grad(true);
  Tensor y = aspp_projection({b}, p, w);
  CHECK(y.sizes() == Shape{0, 4, 4, 4});
  sum(y).backward();
  REQUIRE(w.grad().defined());
  for (double v : to_vector<double>(w.grad())) CHECK(v == 0.0);  // an empty sum
  {
    NoGradGuard no_grad;
    Tensor x = randn({1, 3, 2, 2}, gen, DType::f64).set_requires_grad(true);
    Tensor out = aspp_projection({x}, Tensor(), randn({2, 3}, gen, DType::f64));
    CHECK_FALSE(out.requires_grad());
  }
}

TEST_CASE("aspp_projection: bad input names the shapes") {
  const Tensor b0 = zeros({2, 3, 4, 5}), b1 = zeros({2, 2, 4, 5}), pooled = zeros({2, 2});
  const Tensor w = zeros({4, 7});
  CHECK_THROWS_WITH_AS(aspp_projection({}, pooled, w),
                       "aspp_projection: needs at least one spatial branch (got none; pooled (2,2), "
                       "weight (4,7))",
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({zeros({2, 3, 4})}, Tensor(), zeros({4, 3})),
                       "aspp_projection: branch 0 (2,3,4) must be 4-D (n, c, h, w); branches (2,3,4)",
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, zeros({2, 2, 4, 6})}, pooled, w),
                       "aspp_projection: branch 1 (2,2,4,6) does not match branch 0 (2,3,4,5) in "
                       "batch or spatial size; branches (2,3,4,5), (2,2,4,6)",
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, zeros({3, 2, 4, 5})}, pooled, w),
                       "aspp_projection: branch 1 (3,2,4,5) does not match branch 0 (2,3,4,5) in "
                       "batch or spatial size; branches (2,3,4,5), (3,2,4,5)",
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, b1}, zeros({3, 2}), w),
                       "aspp_projection: pooled (3,2) has batch 3 but the branches (2,3,4,5), "
                       "(2,2,4,5) have batch 2",
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, b1}, zeros({2, 2, 2, 2}), w),
                       "aspp_projection: pooled (2,2,2,2) must be (n, p) or (n, p, 1, 1)", Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, b1}, pooled, zeros({4, 6})),
                       "aspp_projection: weight (4,6) has 6 input channels but the branches "
                       "(2,3,4,5), (2,2,4,5) and pooled (2,2) have 7",
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, b1}, Tensor(), zeros({4, 7})),
                       "aspp_projection: weight (4,7) has 7 input channels but the branches "
                       "(2,3,4,5), (2,2,4,5) have 5",
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, b1}, pooled, zeros({4, 7, 3, 3})),
                       "aspp_projection: weight (4,7,3,3) must be (k, c) or (k, c, 1, 1)", Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, b1}, pooled, zeros({4})),
                       "aspp_projection: weight (4) must be (k, c) or (k, c, 1, 1)", Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, zeros({2, 2, 4, 5}, DType::f64)}, pooled, w),
                       doctest::Contains("aspp_projection: tensors of different dtypes"), Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, zeros({2, 2, 4, 5}, DType::i32)}, pooled, w),
                       doctest::Contains("aspp_projection: branch 1 must be a floating tensor"),
                       Error);
  CHECK_THROWS_WITH_AS(aspp_projection({b0, b1}, pooled, Tensor()),
                       "aspp_projection: weight is undefined", Error);
}
