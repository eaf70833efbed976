// Forward values and bad-input errors of softmax, log_softmax, dropout, cross_entropy, l1_loss,
// mse_loss and triplet_margin_loss: hand-computed cases, edge cases (ignore_index, all ignored,
// hinge exactly at 0, zero distances), thread-count independence, and forward + backward against
// PyTorch (tests/reference/ref_loss.py -> loss.json) in f64 and f32.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/support/reference.h"

using namespace seg;

namespace {

// Hand-computed values evaluated in f64 with the same formulas: only rounding differs.
constexpr double kExactTol = 1e-12;
// f64 against PyTorch's f64: both sum at most ~100 terms in f64, so they differ by rounding only
// (measured <= 7e-16); 1e-12 leaves room for other summation orders while any formula error shows
// up at 1e-3 or more.
constexpr double kF64Tol = 1e-12;
// f32 against PyTorch's f64: inputs rounded to f32 (6e-8 relative) and f32 exponentials, amplified
// by the condition of these functions on |logits| <= ~10; sums accumulate in f64 so they add little
// (measured <= 5.2e-7). 5e-6 relative to max(1, |ref|) is 10x that and still far below any error
// of substance.
constexpr double kF32Tol = 5e-6;

Tensor leaf64(const std::vector<double>& v, const Shape& shape) {
  Tensor t = from_vector(v, shape);
  t.set_requires_grad(true);
  return t;
}

// Max over elements of |a - b| / max(1, |b|); +inf on a shape mismatch or a NaN in only one.
double max_rel_err(const Tensor& a, const Tensor& b) {
  if (a.sizes() != b.sizes()) return std::numeric_limits<double>::infinity();
  std::vector<double> va = to_vector<double>(a), vb = to_vector<double>(b);
  double worst = 0.0;
  for (size_t i = 0; i < va.size(); ++i) {
    if (std::isnan(va[i]) || std::isnan(vb[i])) {
      if (std::isnan(va[i]) != std::isnan(vb[i])) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::abs(va[i] - vb[i]) / std::max(1.0, std::abs(vb[i])));
  }
  return worst;
}

void check_close(const Tensor& a, const Tensor& b, double tol, const std::string& what) {
  const double err = max_rel_err(a, b);
  CHECK_MESSAGE(err <= tol, what, ": max relative error ", err, " > ", tol, " (", a.str(), " vs ",
                b.str(), ")");
}

std::vector<double> values(const Tensor& t) {
  return to_vector<double>(t);
}

// ---- reference data ----

using Json = nlohmann::json;

Json load_reference() {
  std::ifstream f(test::reference_path("loss.json"));
  return Json::parse(f);
}

// A reference tensor in `dtype`, a fresh leaf (requires grad when asked).
Tensor ref_tensor(const Json& j, DType dtype, bool requires_grad = false) {
  Shape shape = j["shape"].get<Shape>();
  Tensor t = from_vector(j["data"].get<std::vector<double>>(), shape).to(dtype);
  if (requires_grad) t.set_requires_grad(true);
  return t;
}

Tensor ref_labels(const Json& j) {
  return from_vector(j["data"].get<std::vector<int32_t>>(), j["shape"].get<Shape>());
}

Reduction reduction_of(const std::string& s) {
  return s == "none" ? Reduction::none : (s == "sum" ? Reduction::sum : Reduction::mean);
}

const std::vector<std::pair<DType, double>> kDtypes = {{DType::f64, kF64Tol},
                                                       {DType::f32, kF32Tol}};

}  // namespace

// =============================================================================================
// softmax / log_softmax

TEST_CASE("softmax and log_softmax: hand-computed values") {
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 0, 0, 0}, {2, 3});
  const double s = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  std::vector<double> y = values(softmax(x, 1));
  std::vector<double> expect = {std::exp(1.0) / s, std::exp(2.0) / s, std::exp(3.0) / s,
                                1.0 / 3,           1.0 / 3,           1.0 / 3};
  for (size_t i = 0; i < y.size(); ++i)
    CHECK(y[i] == doctest::Approx(expect[i]).epsilon(kExactTol));
  std::vector<double> ly = values(log_softmax(x, -1));
  for (size_t i = 0; i < ly.size(); ++i) {
    CHECK(ly[i] == doctest::Approx(std::log(expect[i])).epsilon(kExactTol));
  }
  // Along dim 0: columns (1, 0), (2, 0), (3, 0).
  std::vector<double> y0 = values(softmax(x, 0));
  CHECK(y0[2] == doctest::Approx(std::exp(3.0) / (std::exp(3.0) + 1.0)).epsilon(kExactTol));
  CHECK(y0[5] == doctest::Approx(1.0 / (std::exp(3.0) + 1.0)).epsilon(kExactTol));
}

TEST_CASE("softmax is max-subtracted: huge logits and -inf entries") {
  for (DType dt : {DType::f32, DType::f64}) {
    Tensor x = from_vector(std::vector<double>{1000, 1001, -1000, 0, -INFINITY, 5}, {2, 3}).to(dt);
    std::vector<double> y = values(softmax(x, 1));
    CHECK(y[0] == doctest::Approx(1.0 / (1.0 + std::exp(1.0))).epsilon(1e-6));
    CHECK(y[1] == doctest::Approx(std::exp(1.0) / (1.0 + std::exp(1.0))).epsilon(1e-6));
    CHECK(y[2] == 0.0);
    CHECK(y[4] == 0.0);
    std::vector<double> ly = values(log_softmax(x, 1));
    CHECK(ly[1] == doctest::Approx(-std::log1p(std::exp(-1.0))).epsilon(1e-6));
    CHECK(std::isinf(ly[4]));
    for (double v : ly) CHECK_FALSE(std::isnan(v));
  }
}

TEST_CASE("softmax over channels of (n, c, h, w) sums to 1, strided input, f32 matches f64") {
  Generator gen(3);
  Tensor x = randn({2, 19, 33, 65}, gen, DType::f64) * 4.0;  // inner 2145: several blocks
  Tensor y = softmax(x, 1);
  std::vector<double> total = values(sum(y, {1}));
  for (double v : total) CHECK(v == doctest::Approx(1.0).epsilon(1e-12));
  check_close(softmax(x.to(DType::f32), 1), y, kF32Tol, "f32 softmax");
  check_close(log_softmax(x.to(DType::f32), 1), log_softmax(x, 1), kF32Tol, "f32 log_softmax");
  // A transposed view gives the softmax of the transposed data.
  Tensor xt = x.transpose(1, 3);  // (2, 65, 33, 19)
  check_close(softmax(xt, 3), y.transpose(1, 3).contiguous(), kExactTol, "transposed softmax");
}

TEST_CASE("f32 softmax rows over a wide range of logits match f64 (the f32 exponential)") {
  // 1000 logits from -80 to 10 per row: exp(x - max) spans [e^-90, 1], underflow included.
  Tensor x = arange(-80.0, 10.0, 0.09, DType::f64).view({1, 1000}).expand({3, 1000}).contiguous();
  check_close(softmax(x.to(DType::f32), 1), softmax(x, 1), kF32Tol, "f32 softmax rows");
  check_close(log_softmax(x.to(DType::f32), 1), log_softmax(x, 1), kF32Tol, "f32 log_softmax rows");
  check_close(log_softmax(x.to(DType::f32), 0), log_softmax(x, 0), kF32Tol,
              "f32 log_softmax dim 0");
}

TEST_CASE("softmax: scalar and empty inputs, dim out of range") {
  Tensor s = scalar_tensor(3.0, DType::f64);
  CHECK(softmax(s, 0).item() == 1.0);
  CHECK(log_softmax(s, -1).item() == 0.0);
  Tensor e = zeros({0, 4}, DType::f64);
  CHECK(softmax(e, 1).sizes() == Shape{0, 4});
  CHECK_THROWS_WITH_AS(softmax(zeros({2, 3}), 2), doctest::Contains("softmax: dim 2 out of range"),
                       Error);
  CHECK_THROWS_WITH_AS(log_softmax(zeros({2}, DType::i32), 0),
                       doctest::Contains("log_softmax: input must be a floating tensor"), Error);
}

TEST_CASE("softmax and log_softmax against PyTorch, forward and backward") {
  if (!test::have_reference("loss.json")) return;
  Json ref = load_reference();
  for (const Json& c : ref["softmax"]) {
    for (auto [dt, tol] : kDtypes) {
      const std::string op = c["op"].get<std::string>();
      const int dim = c["dim"].get<int>();
      CAPTURE(op);
      CAPTURE(dim);
      CAPTURE(dtype_name(dt));
      Tensor x = ref_tensor(c["x"], dt, true);
      Tensor y = op == "softmax" ? softmax(x, dim) : log_softmax(x, dim);
      check_close(y, ref_tensor(c["y"], DType::f64), tol, op + " forward");
      y.backward(ref_tensor(c["gy"], dt));
      check_close(x.grad(), ref_tensor(c["gx"], DType::f64), tol, op + " backward");
    }
  }
}

// =============================================================================================
// cross entropy

TEST_CASE("cross_entropy: hand-computed (n, c) with weights, ignore_index and every reduction") {
  Tensor x = from_vector(std::vector<double>{1, 2, 3, 1, 1, 1, 0, 5, -1}, {3, 3});
  Tensor labels = from_vector(std::vector<int32_t>{2, 0, -100}, {3});
  const double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
  const double l1 = std::log(3.0);
  CrossEntropyOptions o;
  o.reduction = Reduction::none;
  std::vector<double> none = values(cross_entropy(x, labels, o));
  CHECK(none[0] == doctest::Approx(l0).epsilon(kExactTol));
  CHECK(none[1] == doctest::Approx(l1).epsilon(kExactTol));
  CHECK(none[2] == 0.0);
  o.reduction = Reduction::sum;
  CHECK(cross_entropy(x, labels, o).item() == doctest::Approx(l0 + l1).epsilon(kExactTol));
  o.reduction = Reduction::mean;
  CHECK(cross_entropy(x, labels, o).item() == doctest::Approx((l0 + l1) / 2).epsilon(kExactTol));
  // Weights: mean divides by the summed weights of the non-ignored positions.
  o.weight = from_vector(std::vector<double>{1.0, 2.0, 0.5}, {3});
  CHECK(cross_entropy(x, labels, o).item() ==
        doctest::Approx((0.5 * l0 + 1.0 * l1) / 1.5).epsilon(kExactTol));
  o.reduction = Reduction::sum;
  CHECK(cross_entropy(x, labels, o).item() == doctest::Approx(0.5 * l0 + l1).epsilon(kExactTol));
  // i64 labels give the same values.
  o.reduction = Reduction::none;
  check_close(cross_entropy(x, labels.to(DType::i64), o), cross_entropy(x, labels, o), 0.0,
              "i64 labels");
}

TEST_CASE("cross_entropy: gradient is w * scale * (softmax - onehot), zero at ignored positions") {
  Tensor x = leaf64({1, 2, 3, 1, 1, 1, 0, 5, -1}, {3, 3});
  Tensor labels = from_vector(std::vector<int32_t>{2, 0, 7}, {3});
  CrossEntropyOptions o;
  o.ignore_index = 7;
  o.weight = from_vector(std::vector<double>{1.0, 2.0, 0.5}, {3});
  Tensor loss = cross_entropy(x, labels, o);  // mean over weights 0.5 + 1.0
  loss.backward();
  std::vector<double> g = values(x.grad());
  std::vector<double> p0 = values(softmax(x.detach(), 1));
  for (int j = 0; j < 3; ++j) {
    CHECK(g[j] == doctest::Approx(0.5 * (p0[j] - (j == 2)) / 1.5).epsilon(kExactTol));
    CHECK(g[3 + j] == doctest::Approx(1.0 * (p0[3 + j] - (j == 0)) / 1.5).epsilon(kExactTol));
    CHECK(g[6 + j] == 0.0);
  }
}

TEST_CASE("cross_entropy: all positions ignored gives NaN for mean (as PyTorch), 0 for sum") {
  Tensor x = leaf64({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor labels = from_vector(std::vector<int32_t>{-100, -100}, {2});
  CrossEntropyOptions o;
  Tensor mean_loss = cross_entropy(x, labels, o);
  CHECK(std::isnan(mean_loss.item()));
  mean_loss.backward();
  for (double v : values(x.grad())) CHECK(v == 0.0);  // ignored positions: exactly 0
  o.reduction = Reduction::sum;
  CHECK(cross_entropy(x, labels, o).item() == 0.0);
}

TEST_CASE("cross_entropy: backward takes a strided upstream gradient (reduction none)") {
  Generator gen(5);
  Tensor x = randn({2, 4, 3, 5}, gen, DType::f64);
  x.set_requires_grad(true);
  Tensor labels = from_vector(std::vector<int32_t>(30, 1), {2, 3, 5});
  CrossEntropyOptions o;
  o.reduction = Reduction::none;
  Tensor y = cross_entropy(x, labels, o);
  y.backward(full({1, 1, 5}, 2.0, DType::f64).expand({2, 3, 5}));  // stride-0 gradient
  Tensor expected = x.grad().detach().clone();
  x.zero_grad();
  sum(cross_entropy(x, labels, o) * 2.0).backward();
  check_close(expected, x.grad(), kExactTol, "expanded vs contiguous upstream");
}

TEST_CASE("cross_entropy: bad labels are an error naming the value and the position") {
  Tensor x = zeros({2, 3, 2, 2}, DType::f32);
  std::vector<int32_t> v(8, 0);
  v[6] = 5;   // position (1, 1, 0)
  v[7] = -2;  // also bad
  Tensor labels = from_vector(v, {2, 2, 2});
  CHECK_THROWS_WITH_AS(cross_entropy(x, labels),
                       "cross_entropy: label 5 at position (1,1,0) of labels (2,2,2) is outside "
                       "[0, 3) for logits (2,3,2,2) and is not ignore_index -100 (2 such labels)",
                       Error);
  // A negative label that is not ignore_index, with i64 labels.
  Tensor l64 = from_vector(std::vector<int32_t>{0, -100, 1, -1}, {4}).to(DType::i64);
  CrossEntropyOptions o;
  o.ignore_index = -100;
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({4, 2}), l64, o),
                       doctest::Contains("label -1 at position (3) of labels (4)"), Error);
  // i64 labels beyond the i32 range would wrap to a valid class (2^32 + 1 -> 1): still an error.
  Tensor wrap = zeros({3}, DType::i64);
  wrap.data<int64_t>()[1] = (int64_t{1} << 32) + 1;
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({3, 2}), wrap, o),
                       doctest::Contains("label 4294967297 at position (1) of labels (3) is outside [0, 2)"),
                       Error);
  // The ignore_index itself is fine even though it is outside [0, c).
  CHECK_NOTHROW(
      cross_entropy(zeros({4, 2}), from_vector(std::vector<int32_t>{0, -100, 1, 1}, {4})));
}

TEST_CASE("cross_entropy: shape, dtype and weight errors name both shapes") {
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 3, 4, 5}), zeros({2, 4}, DType::i32)),
                       "cross_entropy: labels (2,4) do not match logits (2,3,4,5) (expected labels "
                       "(2,4,5))",
                       Error);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 3}), zeros({3}, DType::i32)),
                       doctest::Contains("labels (3) do not match logits (2,3)"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 3}), zeros({2})),
                       doctest::Contains("labels must be i32 or i64"), Error);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({3}), zeros({}, DType::i32)),
                       doctest::Contains("logits must be (n, c)"), Error);
  CrossEntropyOptions o;
  o.weight = ones({4});
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 3}), zeros({2}, DType::i32), o),
                       "cross_entropy: weight (4) must be (3) for logits (2,3) with 3 classes",
                       Error);
  o.weight = ones({3}, DType::f64);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 3}), zeros({2}, DType::i32), o),
                       doctest::Contains("different dtypes"), Error);
  o.weight = ones({3});
  o.weight.set_requires_grad(true);
  CHECK_THROWS_WITH_AS(cross_entropy(zeros({2, 3}), zeros({2}, DType::i32), o),
                       doctest::Contains("no gradient for the class weights"), Error);
}

TEST_CASE("cross_entropy: results do not depend on the thread count") {
  Generator gen(11);
  Tensor x = randn({3, 19, 41, 67}, gen) * 3.0;  // f32, several blocks per image
  std::vector<int32_t> lv;
  for (double u : values(rand({3, 41, 67}, gen)))
    lv.push_back(u < 0.1 ? 255 : static_cast<int32_t>(u * 19) % 19);
  Tensor labels = from_vector(lv, {3, 41, 67});
  CrossEntropyOptions o;
  o.ignore_index = 255;
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor xl = x.detach().clone();
    xl.set_requires_grad(true);
    Tensor loss = cross_entropy(xl, labels, o);
    loss.backward();
    omp_set_num_threads(saved);
    return std::make_pair(loss.item(), values(xl.grad()));
  };
  auto [l1, g1] = run(1);
  auto [l4, g4] = run(4);
  CHECK(l1 == l4);
  CHECK(g1 == g4);
}

TEST_CASE("cross_entropy against PyTorch: (n, c, h, w) with ignore and weights, every reduction") {
  if (!test::have_reference("loss.json")) return;
  Json ref = load_reference();
  for (const Json& c : ref["cross_entropy"]) {
    for (auto [dt, tol] : kDtypes) {
      CAPTURE(c["x"]["shape"].dump());
      CAPTURE(c["reduction"].get<std::string>());
      CAPTURE(dtype_name(dt));
      CrossEntropyOptions o;
      o.ignore_index = c["ignore_index"].get<int64_t>();
      o.reduction = reduction_of(c["reduction"].get<std::string>());
      if (c.contains("weight")) o.weight = ref_tensor(c["weight"], dt);
      Tensor x = ref_tensor(c["x"], dt, true);
      Tensor y = cross_entropy(x, ref_labels(c["labels"]), o);
      check_close(y, ref_tensor(c["y"], DType::f64), tol, "cross_entropy forward");
      y.backward(ref_tensor(c["gy"], dt));
      check_close(x.grad(), ref_tensor(c["gx"], DType::f64), tol, "cross_entropy backward");
    }
  }
}

// =============================================================================================
// l1 / mse

TEST_CASE("l1_loss and mse_loss: hand-computed values and shape errors") {
  Tensor a = from_vector(std::vector<double>{1, -2, 3, 0.5}, {2, 2});
  Tensor b = from_vector(std::vector<double>{0, 1, 3, -0.5}, {2, 2});
  CHECK(values(l1_loss(a, b, Reduction::none)) == std::vector<double>{1, 3, 0, 1});
  CHECK(l1_loss(a, b).item() == doctest::Approx(5.0 / 4).epsilon(kExactTol));
  CHECK(l1_loss(a, b, Reduction::sum).item() == doctest::Approx(5.0).epsilon(kExactTol));
  CHECK(values(mse_loss(a, b, Reduction::none)) == std::vector<double>{1, 9, 0, 1});
  CHECK(mse_loss(a, b).item() == doctest::Approx(11.0 / 4).epsilon(kExactTol));
  CHECK(mse_loss(a, b, Reduction::sum).item() == doctest::Approx(11.0).epsilon(kExactTol));
  CHECK_THROWS_WITH_AS(l1_loss(zeros({2, 3}), zeros({3})),
                       "l1_loss: input (2,3) and target (3) must have the same shape", Error);
  CHECK_THROWS_WITH_AS(mse_loss(zeros({2, 3}), zeros({3, 2})),
                       "mse_loss: input (2,3) and target (3,2) must have the same shape", Error);
  CHECK_THROWS_WITH_AS(mse_loss(zeros({2}), zeros({2}, DType::f64)),
                       doctest::Contains("different dtypes"), Error);
}

TEST_CASE("l1_loss and mse_loss against PyTorch, forward and backward") {
  if (!test::have_reference("loss.json")) return;
  Json ref = load_reference();
  for (const Json& c : ref["pointwise"]) {
    for (auto [dt, tol] : kDtypes) {
      const std::string op = c["op"].get<std::string>();
      CAPTURE(op);
      CAPTURE(c["reduction"].get<std::string>());
      CAPTURE(dtype_name(dt));
      Tensor x = ref_tensor(c["x"], dt, true);
      Tensor t = ref_tensor(c["t"], dt, true);
      Reduction r = reduction_of(c["reduction"].get<std::string>());
      Tensor y = op == "l1_loss" ? l1_loss(x, t, r) : mse_loss(x, t, r);
      check_close(y, ref_tensor(c["y"], DType::f64), tol, op + " forward");
      y.backward(ref_tensor(c["gy"], dt));
      check_close(x.grad(), ref_tensor(c["gx"], DType::f64), tol, op + " input gradient");
      check_close(t.grad(), ref_tensor(c["gt"], DType::f64), tol, op + " target gradient");
    }
  }
}

// =============================================================================================
// triplet margin loss

TEST_CASE("triplet_margin_loss: hand-computed values, p = 1 and 2, eps inside the norm") {
  const double eps = 1e-6;
  // Sample 0 active, sample 1 inactive (negative far away).
  Tensor a = from_vector(std::vector<double>{0, 0, 1, 1}, {2, 2});
  Tensor p = from_vector(std::vector<double>{3, 4, 1, 2}, {2, 2});
  Tensor n = from_vector(std::vector<double>{1, 0, 10, 10}, {2, 2});
  const double dap0 = std::hypot(-3 + eps, -4 + eps), dan0 = std::hypot(-1 + eps, eps);
  std::vector<double> l2 = values(triplet_margin_loss(a, p, n, 1.0, 2, eps, Reduction::none));
  CHECK(l2[0] == doctest::Approx(dap0 - dan0 + 1.0).epsilon(kExactTol));
  CHECK(l2[1] == 0.0);
  const double l1ap = std::abs(-3 + eps) + std::abs(-4 + eps), l1an = std::abs(-1 + eps) + eps;
  std::vector<double> l1 = values(triplet_margin_loss(a, p, n, 1.0, 1, eps, Reduction::none));
  CHECK(l1[0] == doctest::Approx(l1ap - l1an + 1.0).epsilon(kExactTol));
  CHECK(l1[1] == 0.0);
  CHECK(triplet_margin_loss(a, p, n, 1.0, 2, eps, Reduction::mean).item() ==
        doctest::Approx((dap0 - dan0 + 1.0) / 2).epsilon(kExactTol));
  CHECK(triplet_margin_loss(a, p, n, 1.0, 1, eps, Reduction::sum).item() ==
        doctest::Approx(l1ap - l1an + 1.0).epsilon(kExactTol));
}

TEST_CASE("triplet_margin_loss: inactive samples get zero gradients, hinge at exactly 0 passes") {
  // eps = 0 makes the distances exact: d(a, p) = 1, d(a, n) = 3 (p = 1), margin 2: hinge = 0.
  Tensor a = leaf64({0, 0}, {2, 1});
  Tensor p = leaf64({-1, -1}, {2, 1});
  Tensor n = leaf64({-3, -30}, {2, 1});
  Tensor loss = triplet_margin_loss(a, p, n, 2.0, 1, 0.0, Reduction::sum);
  CHECK(loss.item() == 0.0);
  loss.backward();
  // Sample 0: hinge exactly 0, the gradient passes (clamp_min): dp = -sign(1), dn = sign(3).
  // Sample 1: hinge 1 - 30 + 2 < 0: all zero.
  CHECK(values(p.grad()) == std::vector<double>{-1, 0});
  CHECK(values(n.grad()) == std::vector<double>{1, 0});
  CHECK(values(a.grad()) == std::vector<double>{0, 0});
}

TEST_CASE(
    "triplet_margin_loss: zero distance has a zero norm gradient (p = 2), sign(0) = 0 (p = 1)") {
  for (int p_norm : {1, 2}) {
    CAPTURE(p_norm);
    // a - p + eps = 0 exactly in every component.
    Tensor a = leaf64({0, 0, 0}, {1, 3});
    Tensor p = leaf64({1e-6, 1e-6, 1e-6}, {1, 3});
    Tensor n = leaf64({3, 0, 4}, {1, 3});
    Tensor loss = triplet_margin_loss(a, p, n, 10.0, p_norm, 1e-6, Reduction::mean);
    loss.backward();
    for (double v : values(p.grad())) CHECK(v == 0.0);
    std::vector<double> gn = values(n.grad());
    for (double v : gn) CHECK(std::isfinite(v));
    // d(a, n) gradient wrt n is -(a - n + eps) / d for p = 2, -sign(.) for p = 1: gn = +that.
    if (p_norm == 2) {
      const double d = std::sqrt((-3 + 1e-6) * (-3 + 1e-6) + 1e-12 + (-4 + 1e-6) * (-4 + 1e-6));
      CHECK(gn[0] == doctest::Approx((-3 + 1e-6) / d).epsilon(kExactTol));
    } else {
      CHECK(gn[0] == -1.0);
      CHECK(gn[1] == 1.0);  // a - n + eps = +1e-6
    }
  }
}

TEST_CASE("triplet_margin_loss: argument errors") {
  CHECK_THROWS_WITH_AS(triplet_margin_loss(zeros({4, 3}), zeros({4, 3}), zeros({4, 2})),
                       "triplet_margin_loss: anchor (4,3), positive (4,3) and negative (4,2) must "
                       "have the same shape",
                       Error);
  CHECK_THROWS_WITH_AS(triplet_margin_loss(zeros({4, 3}), zeros({4, 3}), zeros({4, 3}), 1.0, 3),
                       doctest::Contains("p = 3 is not supported"), Error);
  CHECK_THROWS_WITH_AS(triplet_margin_loss(zeros({3}), zeros({3}), zeros({3})),
                       doctest::Contains("anchor must be (n, d)"), Error);
}

TEST_CASE("triplet_margin_loss against PyTorch: p = 1 and 2, every reduction") {
  if (!test::have_reference("loss.json")) return;
  Json ref = load_reference();
  for (const Json& c : ref["triplet"]) {
    for (auto [dt, tol] : kDtypes) {
      const int p_norm = c["p"].get<int>();
      CAPTURE(p_norm);
      CAPTURE(c["reduction"].get<std::string>());
      CAPTURE(dtype_name(dt));
      Tensor a = ref_tensor(c["anchor"], dt, true);
      Tensor p = ref_tensor(c["positive"], dt, true);
      Tensor n = ref_tensor(c["negative"], dt, true);
      Tensor y = triplet_margin_loss(a, p, n, c["margin"].get<double>(), p_norm, 1e-6,
                                     reduction_of(c["reduction"].get<std::string>()));
      check_close(y, ref_tensor(c["y"], DType::f64), tol, "triplet forward");
      y.backward(ref_tensor(c["gy"], dt));
      check_close(a.grad(), ref_tensor(c["ga"], DType::f64), tol, "triplet anchor gradient");
      check_close(p.grad(), ref_tensor(c["gp"], DType::f64), tol, "triplet positive gradient");
      check_close(n.grad(), ref_tensor(c["gn"], DType::f64), tol, "triplet negative gradient");
    }
  }
}

// =============================================================================================
// dropout

TEST_CASE("dropout: keeps about 1 - p, scales by 1 / (1 - p), backward uses the same mask") {
  const double p = 0.3;
  Generator gen(123);
  Tensor x = rand({200000}, gen, DType::f64) + 1.0;  // never 0, so zeros mark dropped elements
  x.set_requires_grad(true);
  Generator g1(7);
  Tensor y = dropout(x, p, true, g1);
  sum(y).backward();
  std::vector<double> xv = values(x), yv = values(y), gv = values(x.grad());
  int64_t kept = 0;
  bool consistent = true;
  for (size_t i = 0; i < yv.size(); ++i) {
    if (yv[i] != 0.0) {
      ++kept;
      consistent = consistent && std::abs(yv[i] - xv[i] / (1 - p)) <= 1e-15 * yv[i] &&
                   gv[i] == doctest::Approx(1 / (1 - p)).epsilon(1e-15);
    } else {
      consistent = consistent && gv[i] == 0.0;
    }
  }
  CHECK(consistent);
  // Binomial(200000, 0.7): standard deviation ~205; 5 sigma is ~0.5% of the count.
  CHECK(std::abs(static_cast<double>(kept) / 200000.0 - (1 - p)) < 0.005);
}

TEST_CASE("dropout: deterministic from the generator, consumes one call per op") {
  Tensor x = ones({1000});
  Generator g1(99), g2(99);
  Tensor a = dropout(x, 0.5, true, g1);
  Tensor b = dropout(x, 0.5, true, g2);
  CHECK(values(a) == values(b));
  CHECK(g1.calls() == 1);
  Tensor c = dropout(x, 0.5, true, g1);  // next call: a different mask
  CHECK(values(a) != values(c));
}

TEST_CASE("dropout: eval and p = 0 return x, p = 1 gives zeros, p outside [0, 1] is an error") {
  Generator gen(1);
  Tensor x = leaf64({1, 2, 3}, {3});
  CHECK(dropout(x, 0.5, /*training=*/false, gen).same(x));
  CHECK(dropout(x, 0.0, true, gen).same(x));
  CHECK(gen.calls() == 0);
  Tensor y = dropout(x, 1.0, true, gen);
  CHECK(values(y) == std::vector<double>{0, 0, 0});
  sum(y).backward();
  CHECK(values(x.grad()) == std::vector<double>{0, 0, 0});
  CHECK_THROWS_WITH_AS(dropout(x, 1.5, true, gen),
                       doctest::Contains("dropout: probability p = 1.5 is outside [0, 1]"), Error);
  CHECK_THROWS_WITH_AS(dropout(x, -0.1, false, gen), doctest::Contains("outside [0, 1]"), Error);
  CHECK_THROWS_WITH_AS(dropout(zeros({2}, DType::i32), 0.5, true, gen),
                       doctest::Contains("dropout: input must be a floating tensor"), Error);
  // f32 works too.
  Tensor yf = dropout(ones({64}), 0.25, true, gen);
  for (double v : values(yf)) CHECK((v == 0.0 || std::abs(v - 1.0 / 0.75) < 1e-6));
}
