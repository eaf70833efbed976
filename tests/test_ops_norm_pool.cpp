// Forward and backward values of batch_norm2d, max_pool2d, adaptive_avg_pool2d and
// upsample_bilinear2d: hand-computed cases, PyTorch references (tests/reference/ref_norm_pool.py),
// running statistics, determinism across thread counts, and bad-input errors.
//
// Gradient checks (finite differences) of the same ops are in tests/gradcheck/norm_pool.cpp.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <fstream>
#include <functional>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops.h"
#include "tests/support/reference.h"

using namespace seg;
using json = nlohmann::json;

namespace {

// Hand-computed values are evaluated in f64 by the engine; the expected values are exact decimal
// arithmetic, so the only error is a few f64 roundings of O(1) numbers.
constexpr double kExactTol = 1e-12;
// Our f64 results against PyTorch's f64: the same formulas with a different summation order
// (f64 lanes vs PyTorch's loops) over at most a few hundred O(1) terms: ~1e-14; 1e-11 leaves margin
// while any formula error would be >= 1e-6.
constexpr double kF64RefTol = 1e-11;
// Our f32 results against PyTorch's f64 results on the same (f32-representable) inputs: a handful
// of f32 roundings (eps 6e-8) of O(1) values, and f32 sums of up to ~20 terms in backward passes;
// 2e-6 relative to max(1, |ref|) is about 30 ulps.
constexpr double kF32RefTol = 2e-6;
// Bilinear weights computed in f32 (as PyTorch does for f32) are off by ~6e-8 * the source
// coordinate (up to 16 here), and multiply neighbour differences of up to ~6: 6e-8 * 16 * 6 = 6e-6.
constexpr double kF32UpsampleTol = 1e-5;
// The batch-norm case with values 1000 + 0.01 * noise is ill-conditioned by |mean| / std = 1e5:
// PyTorch's f64 y = x * scale + (bias - mean * scale) carries errors of ~1e-16 * 1e5 = 1e-11, so our
// f64 results (computed as (x - mean) * scale + bias) are compared with 100 times that.
constexpr double kF64OffsetRefTol = 1e-9;

std::vector<double> vec(const Tensor& t) { return to_vector<double>(t); }

// |got - want| <= tol * max(1, |want|) elementwise (NaN only matches NaN); reports the worst element.
void check_close(const std::vector<double>& got, const std::vector<double>& want, double tol,
                 const std::string& what) {
  REQUIRE_MESSAGE(got.size() == want.size(), what, ": ", got.size(), " values, expected ", want.size());
  double worst = 0.0;
  size_t worst_i = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(want[i]) || std::isnan(got[i])) {
      CHECK_MESSAGE(std::isnan(want[i]) == std::isnan(got[i]), what, " element ", i, ": got ", got[i],
                    ", expected ", want[i]);
      continue;
    }
    const double err = std::abs(got[i] - want[i]) / std::max(1.0, std::abs(want[i]));
    if (err > worst) {
      worst = err;
      worst_i = i;
    }
  }
  CHECK_MESSAGE(worst <= tol, what, ": element ", worst_i, " got ", got.empty() ? 0.0 : got[worst_i],
                " expected ", want.empty() ? 0.0 : want[worst_i], " (relative error ", worst, " > ", tol, ")");
}

Tensor f64(const std::vector<double>& v, const Shape& s) { return from_vector(v, s); }

// Runs the max-pool kernel directly: the op does not return its indices.
std::pair<Tensor, Tensor> max_pool_with_indices(const Tensor& x, const MaxPool2dOptions& o) {
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
  Tensor xc = x.contiguous();
  Tensor y = empty({s.n, s.c, s.p, s.q}, x.dtype());
  Tensor idx = empty({s.n, s.c, s.p, s.q}, DType::i32);
  kernels_for<OpId::max_pool2d>(Device::cpu()).forward(exec_context(xc), s, view_of(xc), view_of(y), view_of(idx));
  return {y, idx};
}

// Sets the OpenMP thread count for a scope.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(omp_get_max_threads()) { omp_set_num_threads(n); }
  ~ThreadCount() { omp_set_num_threads(saved_); }
  ThreadCount(const ThreadCount&) = delete;
  ThreadCount& operator=(const ThreadCount&) = delete;

 private:
  int saved_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// batch_norm2d

TEST_CASE("batch_norm2d training: batch statistics, running statistics, versions") {
  // One channel, values 1 2 3 6: mean 3, biased variance 14/4, unbiased 14/3.
  Tensor x = f64({1, 2, 3, 6}, {2, 1, 1, 2});
  Tensor w = f64({2}, {1}), b = f64({0.5}, {1});
  Tensor rm = f64({0}, {1}), rv = f64({1}, {1});
  const uint64_t v_rm = rm.storage()->version(), v_rv = rv.storage()->version();
  Tensor y = batch_norm2d(x, w, b, rm, rv, /*training=*/true, 0.1, 1e-5);
  const double invstd = 1.0 / std::sqrt(3.5 + 1e-5);
  check_close(vec(y), {0.5 - 4 * invstd, 0.5 - 2 * invstd, 0.5, 0.5 + 6 * invstd}, kExactTol, "y");
  check_close(vec(rm), {0.1 * 3}, kExactTol, "running_mean");
  check_close(vec(rv), {0.9 + 0.1 * 14.0 / 3.0}, kExactTol, "running_var");
  CHECK(rm.storage()->version() > v_rm);
  CHECK(rv.storage()->version() > v_rv);

  // A second step moves the running statistics again, from where they are.
  Tensor x2 = f64({0, 0, 2, 2}, {2, 1, 1, 2});  // mean 1, unbiased variance 4/3
  batch_norm2d(x2, w, b, rm, rv, true, 0.1, 1e-5);
  check_close(vec(rm), {0.9 * 0.3 + 0.1 * 1}, kExactTol, "running_mean after two steps");
  check_close(vec(rv), {0.9 * (0.9 + 0.1 * 14.0 / 3.0) + 0.1 * 4.0 / 3.0}, kExactTol,
              "running_var after two steps");

  // Without running statistics nothing is updated and the output is the same.
  Tensor y_none = batch_norm2d(x, w, b, Tensor(), Tensor(), true, 0.1, 1e-5);
  check_close(vec(y_none), vec(y), 0.0, "y without running stats");

  // Without affine parameters: plain normalisation.
  Tensor y_plain = batch_norm2d(x, Tensor(), Tensor(), Tensor(), Tensor(), true, 0.1, 1e-5);
  check_close(vec(y_plain), {-2 * invstd, -invstd, 0, 3 * invstd}, kExactTol, "y without affine");
}

TEST_CASE("batch_norm2d: running statistics are strided views updated in place, never recorded") {
  // running stats as every other element of a buffer (stride 2)
  Tensor buf_m = f64({10, -1, 20, -1}, {2, 2}), buf_v = f64({1, -1, 2, -1}, {2, 2});
  Tensor rm = buf_m.select(1, 0), rv = buf_v.select(1, 0);
  REQUIRE(rm.strides() == Shape{2});
  Tensor x = f64({1, 2, 3, 4, 5, 6, 7, 8}, {2, 2, 2}).view({2, 2, 2, 1});  // (n, c, h, w) = (2,2,2,1)
  x.set_requires_grad(true);
  Tensor y = batch_norm2d(x, Tensor(), Tensor(), rm, rv, true, 0.5, 0.0);
  // channel 0: 1 2 5 6 (mean 3.5, unbiased var 17/3); channel 1: 3 4 7 8 (mean 5.5, same var)
  check_close(vec(buf_m), {0.5 * 10 + 0.5 * 3.5, -1, 0.5 * 20 + 0.5 * 5.5, -1}, kExactTol, "running mean");
  check_close(vec(buf_v), {0.5 * 1 + 0.5 * 17.0 / 3.0, -1, 0.5 * 2 + 0.5 * 17.0 / 3.0, -1}, kExactTol,
              "running var");
  CHECK(y.requires_grad());
  CHECK_FALSE(rm.requires_grad());
  CHECK_FALSE(rv.requires_grad());
  CHECK(rm.grad_fn() == nullptr);
  CHECK(buf_m.grad_fn() == nullptr);
}

TEST_CASE("batch_norm2d evaluation: running statistics; backward uses those of the forward") {
  Tensor x = f64({1, 2, 3, 4, 5, 6}, {3, 2});
  x.set_requires_grad(true);
  Tensor w = f64({2, -1}, {2}), b = f64({0.5, 1}, {2});
  w.set_requires_grad(true);
  b.set_requires_grad(true);
  Tensor rm = f64({1, 2}, {2}), rv = f64({4, 0.25}, {2});
  const double eps = 1e-3;
  Tensor y = batch_norm2d(x, w, b, rm, rv, /*training=*/false, 0.1, eps);
  const double i0 = 1 / std::sqrt(4 + eps), i1 = 1 / std::sqrt(0.25 + eps);
  check_close(vec(y),
              {0.5 + 2 * 0 * i0, 1 - (2 - 2) * i1, 0.5 + 2 * 2 * i0, 1 - 2 * i1, 0.5 + 2 * 4 * i0,
               1 - 4 * i1},
              kExactTol, "y");
  check_close(vec(rm), {1, 2}, 0.0, "running mean untouched in evaluation");
  // A training step changes the running statistics before this node's backward runs.
  batch_norm2d(f64({0, 0, 10, 10}, {2, 2}), Tensor(), Tensor(), rm, rv, true, 0.5, eps);
  Tensor gy = f64({1, 1, 1, 2, -1, 0}, {3, 2});
  y.backward(gy);
  check_close(vec(x.grad()), {2 * i0, -1 * i1, 2 * i0, -2 * i1, -2 * i0, 0}, kExactTol, "gx");
  // gweight = sum((x - rm) * invstd * gy), gbias = sum(gy)
  check_close(vec(w.grad()), {(0 * 1 + 2 * 1 + 4 * -1) * i0, (0 * 1 + 2 * 2 + 4 * 0) * i1}, kExactTol, "gweight");
  check_close(vec(b.grad()), {1, 3}, kExactTol, "gbias");
}

TEST_CASE("batch_norm2d: a weight changed in place after the forward is refused by backward") {
  Tensor x = f64({1, 2, 3, 4}, {2, 2});
  x.set_requires_grad(true);
  Tensor w = f64({1, 1}, {2});
  w.set_requires_grad(true);
  Tensor y = batch_norm2d(x, w, Tensor(), Tensor(), Tensor(), true);
  {
    NoGradGuard no_grad;
    w.mul_(2.0);
  }
  CHECK_THROWS_AS(y.backward(ones_like(y)), Error);
}

TEST_CASE("batch_norm2d f32: stable statistics with a large offset (two-pass in f64)") {
  // Values 1e4 + 0.01 * noise: a one-pass f32 variance (E[x^2] - E[x]^2) would be pure rounding
  // noise (ulp(1e8) = 8 >> 1e-4). Compare the f32 op with the f64 op on identical inputs.
  Generator gen(7);
  Tensor noise = randn({4, 3, 6, 5}, gen, DType::f64);
  Tensor x32 = (noise * 0.01 + 1e4).to(DType::f32);
  Tensor x64 = x32.to(DType::f64);
  x32.set_requires_grad(true);
  x64.set_requires_grad(true);
  Tensor rm32 = zeros({3}), rv32 = ones({3});
  Tensor rm64 = zeros({3}, DType::f64), rv64 = ones({3}, DType::f64);
  Tensor w64 = f64({1.5, 0.5, -1}, {3}), b64 = f64({0, 1, 2}, {3});
  Tensor w32 = w64.to(DType::f32), b32 = b64.to(DType::f32);
  Tensor y32 = batch_norm2d(x32, w32, b32, rm32, rv32, true, 0.1, 1e-5);
  Tensor y64 = batch_norm2d(x64, w64, b64, rm64, rv64, true, 0.1, 1e-5);
  // y is O(1): the f32 result holds it to a few ulps (the mean enters as hi + lo parts).
  check_close(vec(y32), vec(y64), kF32RefTol, "y f32 vs f64");
  check_close(vec(rm32), vec(rm64), kF32RefTol, "running mean f32 vs f64");
  // running var = 0.9 + 0.1 * ~1e-4: compare the batch part, 0.1 * unbiased variance.
  std::vector<double> v32 = vec(rv32), v64 = vec(rv64);
  for (size_t c = 0; c < 3; ++c) {
    const double batch32 = (v32[c] - 0.9) / 0.1, batch64 = (v64[c] - 0.9) / 0.1;
    // f32 rounding of 0.9 + ~1e-5 (ulp 6e-8) is ~1e-2 of the batch part: all it can hold.
    CHECK(std::abs(batch32 - batch64) <= 2e-2 * batch64);
  }
  Generator gen2(8);
  Tensor gy64 = randn({4, 3, 6, 5}, gen2, DType::f64);
  y32.backward(gy64.to(DType::f32));
  y64.backward(gy64);
  // gx is O(100) here (invstd ~ 100): compare relative to its scale.
  std::vector<double> g32 = vec(x32.grad()), g64 = vec(x64.grad());
  double scale = 0.0, err = 0.0;
  for (size_t i = 0; i < g64.size(); ++i) {
    scale = std::max(scale, std::abs(g64[i]));
    err = std::max(err, std::abs(g32[i] - g64[i]));
  }
  // kF32RefTol relative to the largest gradient, times 10 for the f32 sum of 5 terms per element
  CHECK(err <= 10 * kF32RefTol * scale);
}

TEST_CASE("batch_norm2d against PyTorch: two training steps, evaluation, gradients") {
  if (!test::have_reference("norm_pool.json")) return;
  json ref = json::parse(std::ifstream(test::reference_path("norm_pool.json")));
  auto tensor_of = [](const json& e, DType dt) {
    return from_vector(e["data"].get<std::vector<double>>(), e["shape"].get<Shape>()).to(dt);
  };
  for (const json& c : ref["batch_norm"]) {
    for (DType dt : {DType::f64, DType::f32}) {
      const std::string name = c["name"].get<std::string>() + " " + dtype_name(dt);
      CAPTURE(name);
      const bool offset = c["name"].get<std::string>().find("offset") != std::string::npos;
      const double tol = dt == DType::f32 ? kF32RefTol : offset ? kF64OffsetRefTol : kF64RefTol;
      const bool affine = c["affine"].get<bool>();
      Tensor rm = tensor_of(c["running_mean0"], dt), rv = tensor_of(c["running_var0"], dt);
      const json& steps = c["f64"]["steps"];  // compared against the f64 results for both dtypes
      for (size_t s = 0; s < steps.size(); ++s) {
        const json& want = steps[s];
        const std::string what = name + " step " + std::to_string(s);
        Tensor x = tensor_of(c["x"][s], dt);
        x.set_requires_grad(true);
        Tensor w, b;
        if (affine) {
          w = tensor_of(c["weight"], dt);
          b = tensor_of(c["bias"], dt);
          w.set_requires_grad(true);
          b.set_requires_grad(true);
        }
        Tensor y = batch_norm2d(x, w, b, rm, rv, want["training"].get<bool>(), c["momentum"].get<double>(),
                                c["eps"].get<double>());
        y.backward(tensor_of(c["gy"][s], dt));
        check_close(vec(y), want["y"].get<std::vector<double>>(), tol, what + " y");
        check_close(vec(rm), want["running_mean"].get<std::vector<double>>(), tol, what + " running_mean");
        check_close(vec(rv), want["running_var"].get<std::vector<double>>(), tol, what + " running_var");
        check_close(vec(x.grad()), want["gx"].get<std::vector<double>>(), tol, what + " gx");
        if (affine) {
          check_close(vec(w.grad()), want["gweight"].get<std::vector<double>>(), tol, what + " gweight");
          check_close(vec(b.grad()), want["gbias"].get<std::vector<double>>(), tol, what + " gbias");
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// max_pool2d

TEST_CASE("max_pool2d by hand: 2x2/2, padding never wins, ties, NaN, overlapping backward") {
  Tensor x = arange(16, DType::f64).view({1, 1, 4, 4});
  check_close(vec(max_pool2d(x)), {5, 7, 13, 15}, 0.0, "2x2/2");
  auto [y, idx] = max_pool_with_indices(x, MaxPool2dOptions());
  CHECK(to_vector<int32_t>(idx) == std::vector<int32_t>{5, 7, 13, 15});

  // All negative: the zero padding must never be the maximum.
  Tensor neg = mul_scalar(add_scalar(arange(9, DType::f64), 1.0), -1.0).view({1, 1, 3, 3});
  check_close(vec(max_pool2d(neg, MaxPool2dOptions::make(3, 2, 1))), {-1, -2, -4, -5}, 0.0, "padding");

  // Ties: the first maximum of each window (row-major) wins.
  auto [yt, it] = max_pool_with_indices(ones({1, 1, 4, 4}), MaxPool2dOptions());
  CHECK(to_vector<int32_t>(it) == std::vector<int32_t>{0, 2, 8, 10});
  auto [yt3, it3] = max_pool_with_indices(ones({1, 1, 5, 5}), MaxPool2dOptions::make(3, 2, 1));
  CHECK(to_vector<int32_t>(it3) == std::vector<int32_t>{0, 1, 3, 5, 6, 8, 15, 16, 18});

  // NaN propagates (PyTorch: the last NaN of a window is its winner); other windows are unaffected.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor xn = f64({1, nan, 3, nan, 5, 6, 7, 8}, {1, 1, 2, 4});
  Tensor xn1 = xn.view({1, 1, 1, 8});
  auto [yn, in] = max_pool_with_indices(xn1, MaxPool2dOptions{1, 4, 1, 4, 0, 0, false});
  check_close(vec(yn), {nan, 8}, 0.0, "NaN window");
  CHECK(to_vector<int32_t>(in) == std::vector<int32_t>{3, 7});

  // 3x3 stride 1 pad 1 over 0..8: every window's winner is its bottom-right cell; gx sums overlaps.
  Tensor xo = arange(9, DType::f64).view({1, 1, 3, 3});
  xo.set_requires_grad(true);
  Tensor yo = max_pool2d(xo, MaxPool2dOptions::make(3, 1, 1));
  check_close(vec(yo), {4, 5, 5, 7, 8, 8, 7, 8, 8}, 0.0, "overlapping windows");
  yo.backward(ones_like(yo));
  check_close(vec(xo.grad()), {0, 0, 0, 0, 1, 2, 0, 2, 4}, 0.0, "overlapping backward");
}

TEST_CASE("max_pool2d output sizes: floor and ceil mode (PyTorch's rule)") {
  struct Case {
    int64_t in, kernel, stride, pad;
    bool ceil;
    int64_t out;
  };
  for (const Case& c : std::vector<Case>{{5, 2, 2, 0, false, 2},
                                         {5, 2, 2, 0, true, 3},
                                         {5, 2, 2, 1, true, 3},   // a last window in the padding is dropped
                                         {6, 3, 2, 1, true, 4},
                                         {7, 3, 2, 1, true, 4},
                                         {8, 3, 2, 1, true, 5},
                                         {2, 3, 2, 0, true, 1},
                                         {2, 3, 2, 0, false, 0},  // floor division of a negative size
                                         {1, 3, 2, 0, false, 0},
                                         {112, 3, 2, 1, false, 56}}) {
    CAPTURE(c.in);
    CAPTURE(c.kernel);
    CAPTURE(c.stride);
    CAPTURE(c.pad);
    CAPTURE(c.ceil);
    CHECK(pool_out_size(c.in, c.kernel, c.stride, c.pad, c.ceil) == c.out);
    if (c.out > 0) {
      Tensor y = max_pool2d(zeros({1, 1, c.in, c.in}), MaxPool2dOptions::make(c.kernel, c.stride, c.pad, c.ceil));
      CHECK(y.sizes() == Shape{1, 1, c.out, c.out});
    }
  }
  // ceil mode on 5x5 2x2/2: the last window covers one row/column only
  Tensor x = arange(25, DType::f64).view({1, 1, 5, 5});
  check_close(vec(max_pool2d(x, MaxPool2dOptions::make(2, 2, 0, true))), {6, 8, 9, 16, 18, 19, 21, 23, 24},
              0.0, "ceil mode 5x5");
}

// ---------------------------------------------------------------------------------------------
// adaptive_avg_pool2d

TEST_CASE("adaptive_avg_pool2d by hand: overlapping bins, global average, backward") {
  Tensor x = arange(9, DType::f64).view({1, 1, 3, 3});
  x.set_requires_grad(true);
  // 3 -> 2 bins: [0, 2) and [1, 3)
  Tensor y = adaptive_avg_pool2d(x, 2, 2);
  check_close(vec(y), {2, 3, 5, 6}, kExactTol, "(2,2)");
  y.backward(ones_like(y));
  check_close(vec(x.grad()), {0.25, 0.5, 0.25, 0.5, 1, 0.5, 0.25, 0.5, 0.25}, kExactTol, "(2,2) backward");
  check_close(vec(adaptive_avg_pool2d(x, 1, 1)), {4}, kExactTol, "(1,1)");
  // 2 -> 3 bins: [0, 1), [0, 2), [1, 2)
  Tensor x2 = f64({0, 2, 4, 6}, {1, 1, 2, 2});
  check_close(vec(adaptive_avg_pool2d(x2, 3, 1)), {1, 3, 5}, kExactTol, "output larger than input");
  // 5 -> 3: bins [0,2) [1,4) [3,5)
  Tensor x5 = f64({1, 2, 3, 4, 5}, {1, 1, 1, 5});
  check_close(vec(adaptive_avg_pool2d(x5, 1, 3)), {1.5, 3, 4.5}, kExactTol, "5 -> 3");
}

// ---------------------------------------------------------------------------------------------
// upsample_bilinear2d

TEST_CASE("upsample_bilinear2d by hand: both align_corners modes, up and down, backward") {
  Tensor x = f64({0, 1, 2, 3}, {1, 1, 2, 2});
  x.set_requires_grad(true);
  Tensor y = upsample_bilinear2d(x, 3, 3, /*align_corners=*/true);
  check_close(vec(y), {0, 0.5, 1, 1, 1.5, 2, 2, 2.5, 3}, kExactTol, "align_corners 2 -> 3");
  y.backward(ones_like(y));
  // per axis each input gathers 1 + 0.5: 1.5 * 1.5
  check_close(vec(x.grad()), {2.25, 2.25, 2.25, 2.25}, kExactTol, "align_corners backward");

  // align_corners=false, 2 -> 4: source coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (last row)
  const std::vector<double> c = {0, 0.25, 0.75, 1};
  std::vector<double> want;
  for (double r : c) {
    for (double s : c) want.push_back(2 * r + s);
  }
  check_close(vec(upsample_bilinear2d(x, 4, 4, false)), want, kExactTol, "half-pixel 2 -> 4");
  check_close(vec(upsample_bilinear2d(x, 1, 1, false)), {1.5}, kExactTol, "half-pixel to (1,1)");
  check_close(vec(upsample_bilinear2d(x, 1, 1, true)), {0}, kExactTol, "align_corners to (1,1)");
  check_close(vec(upsample_bilinear2d(x, 2, 2, false)), {0, 1, 2, 3}, 0.0, "same size");

  // Downsampling 4 -> 2 without antialiasing: source coordinates 0.5 and 2.5
  Tensor x4 = arange(16, DType::f64).view({1, 1, 4, 4});
  check_close(vec(upsample_bilinear2d(x4, 2, 2, false)), {2.5, 4.5, 10.5, 12.5}, kExactTol, "4 -> 2");
  check_close(vec(upsample_bilinear2d(x4, 2, 2, true)), {0, 3, 12, 15}, kExactTol, "4 -> 2 corners");
}

// ---------------------------------------------------------------------------------------------
// PyTorch references of the pooling and resizing ops

TEST_CASE("max_pool2d, adaptive_avg_pool2d, upsample_bilinear2d against PyTorch") {
  if (!test::have_reference("norm_pool.json")) return;
  json ref = json::parse(std::ifstream(test::reference_path("norm_pool.json")));
  auto tensor_of = [](const json& e, DType dt) {
    return from_vector(e["data"].get<std::vector<double>>(), e["shape"].get<Shape>()).to(dt);
  };
  // Runs `op` on the case's x in both dtypes and compares y and gx (for the stored gy) with
  // PyTorch's f64 results, with tolerance f64_tol or f32_tol (exact_y: y must match exactly).
  auto run = [&](const json& c, const std::function<Tensor(const Tensor&)>& op, bool exact_y,
                 double f32_tol) {
    for (DType dt : {DType::f64, DType::f32}) {
      const std::string name = c["name"].get<std::string>() + " " + dtype_name(dt);
      CAPTURE(name);
      const json& want = c["f64"];
      Tensor x = tensor_of(c["x"], dt);
      x.set_requires_grad(true);
      Tensor y = op(x);
      CHECK(y.sizes() == want["y"]["shape"].get<Shape>());
      Tensor gy = from_vector(want["gy"].get<std::vector<double>>(), y.sizes()).to(dt);
      y.backward(gy);
      const double tol = dt == DType::f64 ? kF64RefTol : f32_tol;
      check_close(vec(y), want["y"]["data"].get<std::vector<double>>(), exact_y ? 0.0 : tol, name + " y");
      check_close(vec(x.grad()), want["gx"].get<std::vector<double>>(), tol, name + " gx");
    }
  };
  for (const json& c : ref["max_pool2d"]) {
    auto k = c["kernel"].get<std::vector<int64_t>>(), s = c["stride"].get<std::vector<int64_t>>(),
         p = c["pad"].get<std::vector<int64_t>>();
    MaxPool2dOptions o{k[0], k[1], s[0], s[1], p[0], p[1], c["ceil_mode"].get<bool>()};
    // the maximum is one of the inputs: exact in both dtypes
    run(c, [o](const Tensor& x) { return max_pool2d(x, o); }, /*exact_y=*/true, kF32RefTol);
    for (DType dt : {DType::f64, DType::f32}) {
      auto [y, idx] = max_pool_with_indices(tensor_of(c["x"], dt), o);
      std::vector<int32_t> got = to_vector<int32_t>(idx);
      std::vector<int32_t> want = c[dt == DType::f64 ? "f64" : "f32"]["indices"].get<std::vector<int32_t>>();
      CHECK_MESSAGE(got == want, c["name"].get<std::string>(), " ", dtype_name(dt), ": indices differ");
    }
  }
  for (const json& c : ref["adaptive_avg_pool2d"]) {
    auto out = c["out"].get<std::vector<int64_t>>();
    run(c, [out](const Tensor& x) { return adaptive_avg_pool2d(x, out[0], out[1]); }, false, kF32RefTol);
  }
  for (const json& c : ref["upsample_bilinear2d"]) {
    auto out = c["out"].get<std::vector<int64_t>>();
    const bool align = c["align_corners"].get<bool>();
    run(c, [out, align](const Tensor& x) { return upsample_bilinear2d(x, out[0], out[1], align); },
        false, kF32UpsampleTol);
    // f32 forward against PyTorch's f32 forward as well.
    Tensor x = tensor_of(c["x"], DType::f32);
    check_close(vec(upsample_bilinear2d(x, out[0], out[1], align)),
                c["f32"]["y"]["data"].get<std::vector<double>>(), kF32UpsampleTol,
                c["name"].get<std::string>() + " f32 vs PyTorch f32");
  }
}

// ---------------------------------------------------------------------------------------------
// Layouts and edge cases

TEST_CASE("non-contiguous inputs and gradients give the contiguous results") {
  Generator gen(5);
  // x as a permuted view (n, c, h, w) of a (n, h, w, c) buffer; the loss sum() sends an expanded
  // (stride 0) gradient into every backward.
  Tensor base = randn({2, 5, 6, 3}, gen, DType::f64);
  Tensor xt = base.permute({0, 3, 1, 2});
  REQUIRE_FALSE(xt.is_contiguous());
  Tensor xc = xt.contiguous();
  std::vector<std::function<Tensor(const Tensor&)>> ops = {
      [](const Tensor& x) { return batch_norm2d(x, Tensor(), Tensor(), Tensor(), Tensor(), true); },
      [](const Tensor& x) { return max_pool2d(x, MaxPool2dOptions::make(3, 2, 1, true)); },
      [](const Tensor& x) { return adaptive_avg_pool2d(x, 2, 4); },
      [](const Tensor& x) { return upsample_bilinear2d(x, 7, 4, false); },
  };
  for (size_t i = 0; i < ops.size(); ++i) {
    CAPTURE(i);
    Tensor a = xt.detach(), b = xc.detach().clone();
    a.set_requires_grad(true);
    b.set_requires_grad(true);
    Tensor ya = ops[i](a), yb = ops[i](b);
    check_close(vec(ya), vec(yb), 0.0, "y");
    // weight the outputs so batch norm's gradient is not identically zero
    Tensor r = randn(ya.sizes(), gen, DType::f64);
    sum(mul(ya, r.expand(ya.sizes()))).backward();
    sum(mul(yb, r)).backward();
    check_close(vec(a.grad()), vec(b.grad()), 0.0, "gx");
  }
}

TEST_CASE("empty batches: empty outputs, running statistics untouched") {
  Tensor rm = zeros({3}), rv = ones({3});
  Tensor x = zeros({0, 3, 4, 4});
  x.set_requires_grad(true);
  Tensor y = batch_norm2d(x, ones({3}), zeros({3}), rm, rv, true);
  CHECK(y.sizes() == Shape{0, 3, 4, 4});
  CHECK(to_vector<float>(rm) == std::vector<float>{0, 0, 0});
  CHECK(to_vector<float>(rv) == std::vector<float>{1, 1, 1});
  CHECK(max_pool2d(zeros({0, 3, 4, 4})).sizes() == Shape{0, 3, 2, 2});
  CHECK(adaptive_avg_pool2d(zeros({0, 3, 4, 4}), 1, 1).sizes() == Shape{0, 3, 1, 1});
  CHECK(upsample_bilinear2d(zeros({0, 3, 4, 4}), 8, 8, true).sizes() == Shape{0, 3, 8, 8});
}

// ---------------------------------------------------------------------------------------------
// Determinism and errors

TEST_CASE("results do not depend on the number of threads") {
  Generator gen(11);
  // Large enough for every kernel to split its work (kParallelGrain = 32768 elements).
  Tensor x = randn({4, 8, 64, 96}, gen);
  Tensor w = rand({8}, gen), b = randn({8}, gen);
  Tensor gy_same = randn({4, 8, 64, 96}, gen);
  auto run_all = [&]() {
    std::vector<std::vector<float>> out;
    Tensor xr = x.detach().clone();
    xr.set_requires_grad(true);
    Tensor wr = w.detach().clone(), br = b.detach().clone();
    wr.set_requires_grad(true);
    br.set_requires_grad(true);
    Tensor rm = zeros({8}), rv = ones({8});
    Tensor y = batch_norm2d(xr, wr, br, rm, rv, true);
    y.backward(gy_same);
    for (const Tensor& t : {y, xr.grad(), wr.grad(), br.grad(), rm, rv}) out.push_back(to_vector<float>(t));
    for (bool align : {false, true}) {
      Tensor xu = x.detach().clone();
      xu.set_requires_grad(true);
      Tensor yu = upsample_bilinear2d(xu, 150, 97, align);
      yu.backward(ones_like(yu));
      out.push_back(to_vector<float>(yu));
      out.push_back(to_vector<float>(xu.grad()));
    }
    Tensor xp = x.detach().clone();
    xp.set_requires_grad(true);
    Tensor yp = max_pool2d(xp, MaxPool2dOptions::make(3, 2, 1));
    yp.backward(ones_like(yp));
    out.push_back(to_vector<float>(xp.grad()));
    Tensor xa = x.detach().clone();
    xa.set_requires_grad(true);
    Tensor ya = adaptive_avg_pool2d(xa, 5, 7);
    ya.backward(ones_like(ya));
    out.push_back(to_vector<float>(ya));
    out.push_back(to_vector<float>(xa.grad()));
    return out;
  };
  std::vector<std::vector<float>> one, many;
  {
    ThreadCount t(1);
    one = run_all();
  }
  {
    ThreadCount t(4);
    many = run_all();
  }
  REQUIRE(one.size() == many.size());
  for (size_t i = 0; i < one.size(); ++i) {
    CAPTURE(i);
    CHECK(one[i] == many[i]);  // bitwise
  }
}

TEST_CASE("bad inputs: clear errors naming the op and the shapes") {
  Tensor x = zeros({2, 3, 4, 4});
  Tensor c3 = zeros({3}), c4 = zeros({4});
  CHECK_THROWS_WITH_AS(batch_norm2d(zeros({2, 3, 4}), c3, c3, c3, c3, true),
                       "batch_norm2d: input must be (n, c) or (n, c, h, w), got (2,3,4)", Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, c4, c3, c3, c3, true),
                       "batch_norm2d: weight (4) does not match the 3 channels of input (2,3,4,4) (expected (3))",
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, c3, zeros({3, 1}), c3, c3, true),
                       "batch_norm2d: bias (3,1) does not match the 3 channels of input (2,3,4,4) (expected (3))",
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, c3, c3, c4, c3, true),
                       "batch_norm2d: running_mean (4) does not match the 3 channels of input (2,3,4,4) (expected (3))",
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, c3, c3, c3, c4, false),
                       "batch_norm2d: running_var (4) does not match the 3 channels of input (2,3,4,4) (expected (3))",
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, c3, c3, c3, Tensor(), true),
                       "batch_norm2d: running_mean and running_var must both be given or both be undefined", Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, c3, c3, Tensor(), Tensor(), false),
                       "batch_norm2d: evaluation mode needs running_mean and running_var (input (2,3,4,4))", Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(zeros({1, 3, 1, 1}), c3, c3, c3, c3, true),
                       "batch_norm2d: expected more than 1 value per channel when training, got input (1,3,1,1)",
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(x, zeros({3}, DType::f64), c3, c3, c3, true),
                       "batch_norm2d: weight f64 (3) cpu must have the dtype and device of input f32 (2,3,4,4) cpu",
                       Error);
  CHECK_THROWS_WITH_AS(batch_norm2d(zeros({2, 3}, DType::i32), Tensor(), Tensor(), Tensor(), Tensor(), true),
                       "batch_norm2d: input must be a floating tensor, got i32 (2,3) cpu", Error);
  Tensor rm_grad = zeros({3});
  rm_grad.set_requires_grad(true);
  CHECK_THROWS_AS(batch_norm2d(x, c3, c3, rm_grad, c3, true), Error);
  // batch of one with space is fine in training
  CHECK_NOTHROW(batch_norm2d(zeros({1, 3, 2, 1}), c3, c3, c3, c3, true));

  CHECK_THROWS_WITH_AS(max_pool2d(zeros({3, 4, 4})),
                       "max_pool2d: input must be (n, c, h, w), got (3,4,4)", Error);
  CHECK_THROWS_WITH_AS(max_pool2d(x, MaxPool2dOptions::make(3, 2, 2)),
                       "max_pool2d: padding (2,2) must be >= 0 and at most half of kernel (3,3)", Error);
  CHECK_THROWS_WITH_AS(max_pool2d(x, MaxPool2dOptions::make(0, 2)),
                       "max_pool2d: kernel size must be positive, got (0,0)", Error);
  CHECK_THROWS_WITH_AS(max_pool2d(x, MaxPool2dOptions::make(2, 0)),
                       "max_pool2d: stride must be positive, got (0,0)", Error);
  CHECK_THROWS_WITH_AS(max_pool2d(zeros({1, 1, 2, 2}), MaxPool2dOptions::make(3, 2)),
                       "max_pool2d: input (1,1,2,2) is too small for kernel (3,3) stride (2,2) padding (0,0): "
                       "output size (0,0)",
                       Error);

  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(x, 0, 2),
                       "adaptive_avg_pool2d: output size (0,2) must be positive (input (2,3,4,4))", Error);
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(zeros({4, 4}), 1, 1),
                       "adaptive_avg_pool2d: input must be (n, c, h, w), got (4,4)", Error);
  CHECK_THROWS_WITH_AS(adaptive_avg_pool2d(zeros({1, 2, 0, 3}), 1, 1),
                       "adaptive_avg_pool2d: input (1,2,0,3) has an empty channel or spatial dim", Error);

  CHECK_THROWS_WITH_AS(upsample_bilinear2d(x, 8, -1, false),
                       "upsample_bilinear2d: output size (8,-1) must be positive (input (2,3,4,4))", Error);
  CHECK_THROWS_WITH_AS(upsample_bilinear2d(zeros({3, 4, 4}), 8, 8, true),
                       "upsample_bilinear2d: input must be (n, c, h, w), got (3,4,4)", Error);
}
