// matmul, linear, conv2d and conv_transpose2d: forward values against hand computation, the large
// (row-chunked) conv path against a direct loop, conv_transpose2d as the adjoint of conv2d, results
// independent of the OpenMP thread count, PyTorch reference values in f64 and f32
// (tests/reference/ref_conv.py), and bad input.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/ops.h"
#include "tests/support/reference.h"

using namespace seg;
using json = nlohmann::json;

namespace {

// f64 against f64 computed in another summation order (PyTorch, or the direct loops below): sums
// of at most a few thousand products of O(1) values differ by ~1e-13 relative; 1e-10 is far above
// that and far below any indexing or geometry error (O(1) differences).
constexpr double kF64Tolerance = 1e-10;
// f32 against PyTorch's f32 (oneDNN or its own im2col, another summation order): each result is a
// sum of up to ~600 products of O(1) values, so the two roundings differ by about
// sqrt(600) * 6e-8 * |partial sums| ~ 1e-5 relative to the result's scale; 1e-4 of max(1, |value|)
// leaves a margin of 30 (the largest difference measured on these cases is 3e-6; f64: 2e-15).
constexpr double kF32Tolerance = 1e-4;

Tensor t64(const std::vector<double>& v, const Shape& shape) {
  return from_vector(v, shape);
}

std::vector<double> iota_values(int64_t n, double start = 0.0) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) v[static_cast<size_t>(i)] = start + static_cast<double>(i);
  return v;
}

// max over elements of |a - b| / max(1, |b|); sizes must match.
double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, std::abs(a[i] - b[i]) / std::max(1.0, std::abs(b[i])));
  }
  return worst;
}

// Direct-loop convolution in f64 (the definition), with its input and weight gradients.
struct Geometry {
  int64_t n, c, h, w, k, r, s, sh, sw, ph, pw, dh, dw;
  int64_t p() const { return (h + 2 * ph - dh * (r - 1) - 1) / sh + 1; }
  int64_t q() const { return (w + 2 * pw - dw * (s - 1) - 1) / sw + 1; }
};

// Calls f(ni, ki, ci, pi, qi, ri, si, x index, w index, y index) for every valid tap.
template <class F>
void for_each_tap(const Geometry& g, F&& f) {
  const int64_t P = g.p(), Q = g.q();
  for (int64_t ni = 0; ni < g.n; ++ni)
    for (int64_t ki = 0; ki < g.k; ++ki)
      for (int64_t pi = 0; pi < P; ++pi)
        for (int64_t qi = 0; qi < Q; ++qi)
          for (int64_t ci = 0; ci < g.c; ++ci)
            for (int64_t ri = 0; ri < g.r; ++ri)
              for (int64_t si = 0; si < g.s; ++si) {
                const int64_t ih = pi * g.sh - g.ph + ri * g.dh, iw = qi * g.sw - g.pw + si * g.dw;
                if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
                f(((ni * g.c + ci) * g.h + ih) * g.w + iw, ((ki * g.c + ci) * g.r + ri) * g.s + si,
                  ((ni * g.k + ki) * P + pi) * Q + qi);
              }
}

Conv2dOptions options_of(const Geometry& g) {
  return Conv2dOptions{g.sh, g.sw, g.ph, g.pw, g.dh, g.dw};
}

// Runs conv2d forward and backward through the engine and compares with the direct loops.
void check_against_direct(const Geometry& g, uint64_t seed) {
  Generator gen(seed);
  Tensor x = randn({g.n, g.c, g.h, g.w}, gen, DType::f64).set_requires_grad(true);
  Tensor w = randn({g.k, g.c, g.r, g.s}, gen, DType::f64).set_requires_grad(true);
  Tensor b = randn({g.k}, gen, DType::f64).set_requires_grad(true);
  Tensor y = conv2d(x, w, b, options_of(g));
  REQUIRE(y.sizes() == Shape{g.n, g.k, g.p(), g.q()});
  Tensor gy = randn(y.sizes(), gen, DType::f64);
  y.backward(gy);

  std::vector<double> xv = to_vector<double>(x), wv = to_vector<double>(w),
                      bv = to_vector<double>(b);
  std::vector<double> gyv = to_vector<double>(gy);
  std::vector<double> ref_y(static_cast<size_t>(y.numel())), ref_gx(xv.size(), 0.0),
      ref_gw(wv.size(), 0.0), ref_gb(bv.size(), 0.0);
  const int64_t pq = g.p() * g.q();
  for (size_t i = 0; i < ref_y.size(); ++i) {
    ref_y[i] = bv[static_cast<size_t>((static_cast<int64_t>(i) / pq) % g.k)];
    ref_gb[static_cast<size_t>((static_cast<int64_t>(i) / pq) % g.k)] += gyv[i];
  }
  for_each_tap(g, [&](int64_t xi, int64_t wi, int64_t yi) {
    ref_y[yi] += xv[xi] * wv[wi];
    ref_gx[xi] += gyv[yi] * wv[wi];
    ref_gw[wi] += gyv[yi] * xv[xi];
  });
  CHECK(max_rel_diff(to_vector<double>(y), ref_y) < kF64Tolerance);
  CHECK(max_rel_diff(to_vector<double>(x.grad()), ref_gx) < kF64Tolerance);
  CHECK(max_rel_diff(to_vector<double>(w.grad()), ref_gw) < kF64Tolerance);
  CHECK(max_rel_diff(to_vector<double>(b.grad()), ref_gb) < kF64Tolerance);
}

double dot(const Tensor& a, const Tensor& b) {
  std::vector<double> va = to_vector<double>(a), vb = to_vector<double>(b);
  REQUIRE(va.size() == vb.size());
  double acc = 0.0;
  for (size_t i = 0; i < va.size(); ++i) acc += va[i] * vb[i];
  return acc;
}

}  // namespace

TEST_CASE("matmul and linear: hand-computed values") {
  Tensor a = t64({1, 2, 3, 4}, {2, 2});
  Tensor b = t64({5, 6, 7, 8}, {2, 2});
  CHECK(to_vector<double>(matmul(a, b)) == std::vector<double>{19, 22, 43, 50});
  // a transposed view is read in place: [[1,3],[2,4]] @ b
  CHECK(to_vector<double>(matmul(a.transpose(0, 1), b)) == std::vector<double>{26, 30, 38, 44});
  // batched with a shared right operand: (2,1,2) @ (2,2)
  Tensor ab = t64({1, 0, 0, 1}, {2, 1, 2});
  CHECK(to_vector<double>(matmul(ab, b)) == std::vector<double>{5, 6, 7, 8});
  // shared left operand: (1,2) @ (2,2,1)
  Tensor bb = t64({1, 1, 2, -1}, {2, 2, 1});
  Tensor r = matmul(t64({3, 4}, {1, 2}), bb);
  CHECK(r.sizes() == Shape{2, 1, 1});
  CHECK(to_vector<double>(r) == std::vector<double>{7, 2});
  // linear: x (2,3) @ W^T (3,2) + b
  Tensor x = t64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor w = t64({1, 0, -1, 2, 1, 0}, {2, 3});
  Tensor bias = t64({10, 20}, {2});
  CHECK(to_vector<double>(linear(x, w, bias)) == std::vector<double>{8, 24, 8, 33});
  CHECK(linear(t64({1, 2, 3}, {3}), w).sizes() == Shape{2});
  // f32 goes through sgemm
  CHECK(to_vector<float>(matmul(a.to(DType::f32), b.to(DType::f32))) ==
        std::vector<float>{19, 22, 43, 50});
  // empty inner dim: zeros, and the bias alone
  CHECK(to_vector<double>(matmul(zeros({2, 0}, DType::f64), zeros({0, 3}, DType::f64))) ==
        std::vector<double>(6, 0.0));
  CHECK(to_vector<double>(linear(zeros({1, 0}, DType::f64), zeros({2, 0}, DType::f64), bias)) ==
        std::vector<double>{10, 20});
}

TEST_CASE("matmul: gradient of a shared operand sums over the batch") {
  Generator gen(7);
  Tensor a = randn({3, 4}, gen, DType::f64).set_requires_grad(true);
  Tensor b = randn({5, 4, 2}, gen, DType::f64).set_requires_grad(true);
  matmul(a, b).backward(ones({5, 3, 2}, DType::f64));
  // d/da sum(a @ b_i) = sum_i ones (3,2) @ b_i^T
  Tensor expected = zeros({3, 4}, DType::f64);
  for (int i = 0; i < 5; ++i)
    expected.add_(matmul(ones({3, 2}, DType::f64), b.detach().select(0, i).transpose(0, 1)));
  CHECK(max_rel_diff(to_vector<double>(a.grad()), to_vector<double>(expected)) < kF64Tolerance);
}

TEST_CASE("conv2d: hand-computed values") {
  // 2x2 kernel [[1,0],[0,-1]] on 1..9: x[i][j] - x[i+1][j+1] = -4 everywhere, plus the bias
  Tensor x = t64(iota_values(9, 1.0), {1, 1, 3, 3});
  Tensor w = t64({1, 0, 0, -1}, {1, 1, 2, 2});
  CHECK(to_vector<double>(conv2d(x, w)) == std::vector<double>(4, -4.0));
  CHECK(to_vector<double>(conv2d(x, w, t64({0.5}, {1}))) == std::vector<double>(4, -3.5));
  // identity 3x3 kernel with padding 1 gives the input back
  Tensor id = zeros({1, 1, 3, 3}, DType::f64);
  id.data<double>()[4] = 1.0;
  Tensor x5 = t64(iota_values(35), {1, 1, 5, 7});
  CHECK(to_vector<double>(conv2d(x5, id, Tensor(), Conv2dOptions::make(1, 1))) ==
        to_vector<double>(x5));
  // 3x3 ones, stride 2, padding 1 on 0..15 (4x4): sums of the windows centred at (0,0), (0,2),
  // (2,0), (2,2)
  Tensor x4 = t64(iota_values(16), {1, 1, 4, 4});
  Tensor ones3 = ones({1, 1, 3, 3}, DType::f64);
  CHECK(to_vector<double>(conv2d(x4, ones3, Tensor(), Conv2dOptions::make(2, 1))) ==
        std::vector<double>{10, 24, 51, 90});
  // 2x2 ones with dilation 2 on x[i][j] = 5i + j (5x5): x[i][j] + x[i][j+2] + x[i+2][j] +
  // x[i+2][j+2] = 20i + 4j + 24
  Tensor xd = t64(iota_values(25), {1, 1, 5, 5});
  std::vector<double> expected;
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) expected.push_back(20.0 * i + 4.0 * j + 24.0);
  CHECK(to_vector<double>(conv2d(xd, ones({1, 1, 2, 2}, DType::f64), Tensor(),
                                 Conv2dOptions::make(1, 0, 2))) == expected);
  // 1x1 conv mixes channels per pixel: out0 = in0 + 2 in1, out1 = -in1; bias (1, 2)
  Tensor xc = t64({1, 2, 3, 4}, {1, 2, 1, 2});  // in0 = (1,2), in1 = (3,4)
  Tensor wc = t64({1, 2, 0, -1}, {2, 2, 1, 1});
  CHECK(to_vector<double>(conv2d(xc, wc, t64({1, 2}, {2}))) == std::vector<double>{8, 11, -1, -2});
  // a non-square kernel with stride (1,2): rows of 1x3 ones over x[i][j] = 5i + j
  Tensor r = conv2d(xd, ones({1, 1, 1, 3}, DType::f64), Tensor(), Conv2dOptions{1, 2, 0, 0, 1, 1});
  CHECK(r.sizes() == Shape{1, 1, 5, 2});
  CHECK(to_vector<double>(r) == std::vector<double>{3, 9, 18, 24, 33, 39, 48, 54, 63, 69});
}

TEST_CASE("conv_transpose2d: hand-computed values") {
  // kernel 2, stride 2: each input pixel stamps x * w into its own 2x2 block
  Tensor x = t64({1, 2, 3, 4}, {1, 1, 2, 2});
  Tensor w = t64({1, 10, 100, 1000}, {1, 1, 2, 2});
  Tensor y = conv_transpose2d(x, w, Tensor(), ConvTranspose2dOptions::make(2, 0));
  CHECK(y.sizes() == Shape{1, 1, 4, 4});
  CHECK(to_vector<double>(y) == std::vector<double>{1, 10, 2, 20,          //
                                                    100, 1000, 200, 2000,  //
                                                    3, 30, 4, 40,          //
                                                    300, 3000, 400, 4000});
  // kernel 2 of ones, stride 1: overlapping stamps add up; bias 0.5
  Tensor y1 = conv_transpose2d(x, ones({1, 1, 2, 2}, DType::f64), t64({0.5}, {1}));
  CHECK(to_vector<double>(y1) == std::vector<double>{1.5, 3.5, 2.5, 4.5, 10.5, 6.5, 3.5, 7.5, 4.5});
  // two input channels into one output: weight (c_in 2, c_out 1, 1, 1) = (2, -1)
  Tensor x2 = t64({1, 2, 3, 4}, {1, 2, 1, 2});
  CHECK(to_vector<double>(conv_transpose2d(x2, t64({2, -1}, {2, 1, 1, 1}))) ==
        std::vector<double>{-1, 0});
  // output_padding adds a row and a column that only the bias reaches
  Tensor yp = conv_transpose2d(t64({1}, {1, 1, 1, 1}), ones({1, 1, 1, 1}, DType::f64),
                               t64({7}, {1}), ConvTranspose2dOptions::make(2, 0, 1));
  CHECK(yp.sizes() == Shape{1, 1, 2, 2});
  CHECK(to_vector<double>(yp) == std::vector<double>{8, 7, 7, 7});
}

TEST_CASE("conv_transpose2d is the adjoint of conv2d") {
  // <conv2d(x, w), y> == <x, conv_transpose2d(y, w)> for the same geometry.
  struct G {
    Shape x, w;
    int64_t stride, pad, dil;
  };
  for (const G& g :
       {G{{2, 3, 9, 8}, {4, 3, 3, 3}, 2, 1, 1}, G{{1, 2, 7, 7}, {3, 2, 2, 2}, 2, 0, 1},
        G{{1, 3, 10, 9}, {2, 3, 3, 3}, 1, 2, 2}, G{{2, 4, 5, 6}, {3, 4, 1, 1}, 1, 0, 1},
        // wide enough for several row chunks; output_padding 1 leaves the last row
        // to the last chunk
        G{{1, 8, 62, 4097}, {3, 8, 3, 3}, 2, 1, 1}}) {
    CAPTURE(shape_str(g.x));
    Generator gen(11);
    Tensor x = randn(g.x, gen, DType::f64), w = randn(g.w, gen, DType::f64);
    Tensor cy = conv2d(x, w, Tensor(), Conv2dOptions::make(g.stride, g.pad, g.dil));
    Tensor y = randn(cy.sizes(), gen, DType::f64);
    // the output padding that gives back x's size, per axis
    auto out_pad = [&](int axis) {
      return g.x[axis] - ((cy.size(axis) - 1) * g.stride - 2 * g.pad + g.dil * (g.w[axis] - 1) + 1);
    };
    Tensor ty = conv_transpose2d(y, w, Tensor(),
                                 ConvTranspose2dOptions{g.stride, g.stride, g.pad, g.pad,
                                                        out_pad(2), out_pad(3), g.dil, g.dil});
    REQUIRE(ty.sizes() == x.sizes());
    const double lhs = dot(cy, y), rhs = dot(x, ty);
    CHECK(std::abs(lhs - rhs) < kF64Tolerance * std::max(1.0, std::abs(lhs)));
  }
}

TEST_CASE("conv2d: large images take the row-chunked path and match the direct loops") {
  // f64, 8 channels, 3x3: one output row of the column buffer is 8*9*q*8 bytes, so q = 4096 gives
  // 7 rows per 16 MiB chunk and p = 20 rows need 3 chunks; chunk borders cross the kernel's halo.
  check_against_direct(Geometry{1, 8, 20, 4096, 2, 3, 3, 1, 1, 1, 1, 1, 1}, 1);
  // stride 2 and dilation 2 across chunk borders, two images
  check_against_direct(Geometry{2, 8, 40, 4100, 2, 3, 3, 2, 2, 2, 2, 2, 2}, 2);
  // small shapes: odd sizes, non-square kernels, asymmetric strides and dilations
  check_against_direct(Geometry{2, 3, 7, 5, 2, 2, 3, 2, 1, 1, 0, 1, 2}, 3);
  check_against_direct(Geometry{1, 2, 5, 9, 3, 5, 1, 1, 3, 2, 0, 1, 1}, 4);
}

TEST_CASE("conv2d: kernels with taps that only read padding (dropped) match the direct loops") {
  // ASPP at a small map: rate 6 on 4x6, every tap but the centre dead in both dims.
  check_against_direct(Geometry{2, 3, 4, 6, 2, 3, 3, 1, 1, 6, 6, 6, 6}, 11);
  // Dead rows, live columns (rate 7 on 5x16).
  check_against_direct(Geometry{1, 2, 5, 16, 3, 3, 3, 1, 1, 7, 7, 7, 7}, 12);
  // Stride 2: the outer taps' rows skip past the image.
  check_against_direct(Geometry{1, 2, 3, 9, 2, 3, 3, 2, 2, 4, 4, 4, 4}, 13);
  // 5x5, dilation 3: one dead tap at each end, the next ones live at the border only.
  check_against_direct(Geometry{1, 2, 4, 4, 2, 5, 5, 1, 1, 6, 6, 3, 3}, 14);
  // Both outer rows dead, but dropping them would take the padding below zero: all kept.
  check_against_direct(Geometry{1, 2, 6, 6, 2, 3, 3, 1, 1, 4, 0, 5, 1}, 15);
}

TEST_CASE("conv2d: results do not depend on the OpenMP thread count") {
  // f32: our loops (padding, im2col, col2im, bias) partition work so that every value is computed
  // in a fixed order, and so does our GEMM (kernels/cpu/sgemm.h): results must be identical bit
  // for bit. Stride 2 takes the column-matrix path, stride 1 the padded-image path.
  for (int64_t stride : {2, 1}) {
    CAPTURE(stride);
    Generator gen(5);
    Tensor x = randn({2, 8, 64, 64}, gen);
    Tensor w = randn({16, 8, 3, 3}, gen);
    Tensor b = randn({16}, gen);
    Tensor gy = randn({2, 16, 64 / stride, 64 / stride}, gen);
    auto run = [&](int threads) {
      const int saved = omp_get_max_threads();
      omp_set_num_threads(threads);
      Tensor xr = x.detach().set_requires_grad(true), wr = w.detach().set_requires_grad(true),
             br = b.detach().set_requires_grad(true);
      Tensor y = conv2d(xr, wr, br, Conv2dOptions::make(stride, 1));
      y.backward(gy);
      omp_set_num_threads(saved);
      return std::vector<Tensor>{y, xr.grad(), wr.grad(), br.grad()};
    };
    const std::vector<Tensor> one = run(1), two = run(2), three = run(3);
    for (size_t i = 0; i < one.size(); ++i) {
      CAPTURE(i);
      CHECK(to_vector<float>(one[i]) == to_vector<float>(two[i]));
      CHECK(to_vector<float>(one[i]) == to_vector<float>(three[i]));
    }
  }
}

TEST_CASE("conv2d, conv_transpose2d, linear, matmul: PyTorch reference (f64 and f32)") {
  if (!seg::test::have_reference("conv.json")) return;
  std::ifstream in(seg::test::reference_path("conv.json"));
  const json cases = json::parse(in);
  REQUIRE(cases.size() >= 10);
  auto make = [](const json& j, DType dt, bool grad) {
    Tensor t = from_vector(j["data"].get<std::vector<double>>(), j["shape"].get<Shape>()).to(dt);
    if (grad) t.set_requires_grad(true);
    return t;
  };
  auto pair = [](const json& c, const char* key) { return c[key].get<std::vector<int64_t>>(); };
  for (const json& c : cases) {
    for (DType dt : {DType::f64, DType::f32}) {
      const std::string op = c["op"];
      const std::string tag = dt == DType::f64 ? "f64" : "f32";
      CAPTURE(op);
      CAPTURE(c["name"].get<std::string>());
      CAPTURE(tag);
      const double tol = dt == DType::f64 ? kF64Tolerance : kF32Tolerance;
      Tensor x = make(c["x"], dt, true), w = make(c["w"], dt, true);
      Tensor b = c.contains("b") ? make(c["b"], dt, true) : Tensor();
      Tensor y;
      if (op == "conv2d") {
        auto s = pair(c, "stride"), p = pair(c, "padding"), d = pair(c, "dilation");
        y = conv2d(x, w, b, Conv2dOptions{s[0], s[1], p[0], p[1], d[0], d[1]});
      } else if (op == "conv_transpose2d") {
        auto s = pair(c, "stride"), p = pair(c, "padding"), o = pair(c, "output_padding"),
             d = pair(c, "dilation");
        y = conv_transpose2d(
            x, w, b, ConvTranspose2dOptions{s[0], s[1], p[0], p[1], o[0], o[1], d[0], d[1]});
      } else if (op == "linear") {
        y = linear(x, w, b);
      } else {
        y = matmul(x, w);
      }
      y.backward(make(c["gy"], dt, false));
      const json& want = c[tag];
      auto check = [&](const char* name, const Tensor& got) {
        CAPTURE(name);
        REQUIRE(got.defined());
        CHECK(got.sizes() == want[name]["shape"].get<Shape>());
        const double diff =
            max_rel_diff(to_vector<double>(got), want[name]["data"].get<std::vector<double>>());
        CHECK_MESSAGE(diff < tol, name, " differs by ", diff);
      };
      check("y", y);
      check("gx", x.grad());
      check("gw", w.grad());
      if (b.defined()) check("gb", b.grad());
    }
  }
}

TEST_CASE("bad input: clear errors naming the op and the shapes") {
  Tensor x = zeros({1, 3, 8, 8});
  Tensor w = zeros({4, 2, 3, 3});
  CHECK_THROWS_WITH_AS(
      conv2d(x, w), "conv2d: input (1,3,8,8) has 3 channels but weight (4,2,3,3) expects 2", Error);
  CHECK_THROWS_WITH_AS(conv2d(zeros({3, 8, 8}), w),
                       "conv2d: input (3,8,8) must be 4-D (n, c, h, w)", Error);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros({4, 3, 3})), "conv2d: weight (4,3,3) must be 4-D", Error);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros({4, 3, 3, 3}), zeros({3})),
                       "conv2d: bias (3) does not match weight (4,3,3,3): expected (4)", Error);
  CHECK_THROWS_WITH_AS(
      conv2d(zeros({1, 3, 2, 2}), zeros({4, 3, 3, 3})),
      "conv2d: input (1,3,2,2) with padding (0,0) is smaller than the kernel of weight "
      "(4,3,3,3) (extent (3,3) with dilation (1,1)): the output would be empty",
      Error);
  CHECK_THROWS_WITH_AS(
      conv2d(zeros({1, 3, 4, 4}), zeros({4, 3, 3, 3}), Tensor(), Conv2dOptions::make(1, 0, 2)),
      "conv2d: input (1,3,4,4) with padding (0,0) is smaller than the kernel of weight "
      "(4,3,3,3) (extent (5,5) with dilation (2,2)): the output would be empty",
      Error);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros({4, 3, 3, 3}), Tensor(), Conv2dOptions::make(0, 1)),
                       "conv2d: stride (0,0) must be >= 1", Error);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros({4, 3, 3, 3}), Tensor(), Conv2dOptions::make(1, -1)),
                       "conv2d: padding (-1,-1) must be >= 0", Error);
  CHECK_THROWS_WITH_AS(conv2d(x, zeros({4, 3, 3, 3}), Tensor(), Conv2dOptions::make(1, 1, 0)),
                       "conv2d: dilation (0,0) must be >= 1", Error);
  CHECK_THROWS_WITH_AS(
      conv2d(x, zeros({4, 3, 3, 3}, DType::f64)),
      "conv2d: tensors of different dtypes: f32 (1,3,8,8) cpu and f64 (4,3,3,3) cpu", Error);
  CHECK_THROWS_WITH_AS(conv2d(zeros({1, 3, 8, 8}, DType::i32), zeros({4, 3, 3, 3})),
                       "conv2d: input must be a floating tensor, got i32 (1,3,8,8) cpu", Error);
  CHECK_THROWS_WITH_AS(
      conv2d(zeros({1, 3, 8, 8}, DType::bf16), zeros({4, 3, 3, 3}, DType::bf16)),
      "conv2d: input bf16 (1,3,8,8) cpu: the CPU computes convolutions in f32 and f64 only", Error);
  CHECK_THROWS_WITH_AS(conv2d(x, Tensor()), "conv2d: weight is undefined", Error);

  Tensor wt = zeros({3, 2, 2, 2});  // (c_in, c_out, r, s)
  CHECK_THROWS_WITH_AS(conv_transpose2d(zeros({1, 2, 4, 4}), wt),
                       "conv_transpose2d: input (1,2,4,4) has 2 channels but weight (3,2,2,2) "
                       "(c_in, c_out, r, s) expects 3",
                       Error);
  CHECK_THROWS_WITH_AS(conv_transpose2d(zeros({1, 3, 4, 4}), wt, zeros({3})),
                       "conv_transpose2d: bias (3) does not match weight (3,2,2,2): expected (2)",
                       Error);
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(zeros({1, 3, 4, 4}), wt, Tensor(), ConvTranspose2dOptions::make(2, 0, 2)),
      "conv_transpose2d: output padding (2,2) must be >= 0 and smaller than either the "
      "stride (2,2) or the dilation (1,1)",
      Error);
  CHECK_THROWS_WITH_AS(
      conv_transpose2d(zeros({1, 3, 1, 1}), wt, Tensor(), ConvTranspose2dOptions::make(1, 1)),
      "conv_transpose2d: input (1,3,1,1) with weight (3,2,2,2), stride (1,1), padding (1,1) "
      "gives output size (0,0): it must be positive",
      Error);

  CHECK_THROWS_WITH_AS(matmul(zeros({2, 3}), zeros({4, 5})),
                       "matmul: a (2,3) and b (4,5) do not match: a has 3 columns, b has 4 rows",
                       Error);
  CHECK_THROWS_WITH_AS(matmul(zeros({2, 2, 3}), zeros({3, 3, 5})),
                       "matmul: a (2,2,3) and b (3,3,5) have different batch sizes", Error);
  CHECK_THROWS_WITH_AS(matmul(zeros({3}), zeros({3, 5})),
                       "matmul: a (3) must be (m, k) or (batch, m, k)", Error);
  CHECK_THROWS_WITH_AS(matmul(zeros({2, 3}), zeros({3})),
                       "matmul: b (3) must be (k, n) or (batch, k, n)", Error);
  CHECK_THROWS_WITH_AS(linear(zeros({2, 3}), zeros({4, 5})),
                       "linear: input (2,3) has 3 features but weight (4,5) expects 5", Error);
  CHECK_THROWS_WITH_AS(linear(zeros({2, 5}), zeros({4, 5}), zeros({5})),
                       "linear: bias (5) does not match weight (4,5): expected (4)", Error);
  CHECK_THROWS_WITH_AS(linear(zeros({2, 5}), zeros({5})), "linear: weight (5) must be (out, in)",
                       Error);
  CHECK_THROWS_WITH_AS(linear(zeros({2, 5}), zeros({4, 5}, DType::f64)),
                       "linear: tensors of different dtypes: f32 (2,5) cpu and f64 (4,5) cpu",
                       Error);
}
