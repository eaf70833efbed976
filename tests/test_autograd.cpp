// Autograd engine: accumulation, joins, retain_graph, no_grad, detach, in-place detection, graph
// release, and that the gradient checker catches a wrong backward.
#include <doctest/doctest.h>

#include <cmath>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/support/gradcheck.h"

using namespace seg;

namespace {
Tensor leaf(std::vector<double> v, const Shape& shape) {
  Tensor t = from_vector(v, shape);
  t.set_requires_grad(true);
  return t;
}
}  // namespace

TEST_CASE("chain rule through a small graph with a join") {
  Tensor x = leaf({1, 2, 3}, {3});
  Tensor w = leaf({0.5, -1, 2}, {3});
  // L = sum(x * w + x * x): x is used twice, so its gradient sums two paths.
  Tensor y = x * w + x * x;
  Tensor l = sum(y);
  l.backward();
  CHECK(to_vector<double>(x.grad()) == std::vector<double>{0.5 + 2, -1 + 4, 2 + 6});
  CHECK(to_vector<double>(w.grad()) == std::vector<double>{1, 2, 3});
  CHECK(y.grad_fn() != nullptr);
  CHECK(x.is_leaf());
  CHECK_FALSE(y.is_leaf());
}

TEST_CASE("leaf gradients accumulate across backward calls until zero_grad") {
  Tensor x = leaf({1, 2}, {2});
  sum(x * 3.0).backward();
  sum(x * 3.0).backward();
  CHECK(to_vector<double>(x.grad()) == std::vector<double>{6, 6});
  x.zero_grad();
  CHECK_FALSE(x.grad().defined());
  sum(x).backward();
  CHECK(to_vector<double>(x.grad()) == std::vector<double>{1, 1});
}

TEST_CASE("the graph is freed after backward unless retained") {
  Tensor x = leaf({1, 2}, {2});
  Tensor l = sum(exp(x));
  l.backward(Tensor(), /*retain_graph=*/true);
  l.backward();
  std::vector<double> g = to_vector<double>(x.grad());
  CHECK(g[0] == doctest::Approx(2 * std::exp(1.0)));
  CHECK_THROWS_WITH_AS(l.backward(), doctest::Contains("a second time"), Error);

  // The graph's nodes die with the output.
  std::weak_ptr<Node> node;
  {
    Tensor y = sum(x * x);
    node = y.grad_fn();
    CHECK_FALSE(node.expired());
  }
  CHECK(node.expired());
}

TEST_CASE("no_grad and detach stop recording") {
  Tensor x = leaf({1, 2}, {2});
  {
    NoGradGuard guard;
    Tensor y = x * 2.0;
    CHECK_FALSE(y.requires_grad());
    CHECK(y.grad_fn() == nullptr);
  }
  CHECK(GradMode::enabled());
  Tensor d = x.detach();
  CHECK_FALSE(d.requires_grad());
  CHECK(d.storage() == x.storage());
  Tensor y = x * d;  // gradient flows only through the first factor
  sum(y).backward();
  CHECK(to_vector<double>(x.grad()) == std::vector<double>{1, 2});
}

TEST_CASE("backward needs a gradient for non-scalars and a graph to run") {
  Tensor x = leaf({1, 2}, {2});
  Tensor y = x * 2.0;
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("a gradient is needed for the non-scalar tensor"), Error);
  y.backward(from_vector(std::vector<double>{1, -1}, {2}));
  CHECK(to_vector<double>(x.grad()) == std::vector<double>{2, -2});
  Tensor z = zeros({2});
  CHECK_THROWS_WITH_AS(sum(z).backward(), doctest::Contains("does not require grad"), Error);
  CHECK_THROWS_AS(y.backward(zeros({3}, DType::f64)), Error);
  CHECK_THROWS_WITH_AS(zeros({2}, DType::i32).set_requires_grad(true),
                       "set_requires_grad: i32 tensors cannot require gradients", Error);
}

TEST_CASE("modifying a saved tensor in place is detected at backward") {
  Tensor x = leaf({1, 2}, {2});
  Tensor w = from_vector(std::vector<double>{3, 4}, {2});
  Tensor y = sum(x * w);
  w.fill_(0.0);  // w was saved for the gradient of x
  CHECK_THROWS_WITH_AS(y.backward(), doctest::Contains("modified in place"), Error);
}

TEST_CASE("gradients through views reach the base") {
  Tensor x = leaf({1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor y = x.transpose(0, 1).narrow(0, 1, 2).reshape({4});
  Tensor w = from_vector(std::vector<double>{1, 10, 100, 1000}, {4});
  sum(y * w).backward();
  // y = [x01, x11, x02, x12]
  CHECK(to_vector<double>(x.grad()) == std::vector<double>{0, 1, 100, 0, 10, 1000});
}

TEST_CASE("the gradient checker catches a wrong backward") {
  // x -> 3x with a backward that claims 2: the checker must report it.
  test::GradCase wrong{"mul_scalar", "deliberately wrong",
                       [](Generator& g) { return std::vector<Tensor>{test::randn64({4}, g)}; },
                       [](const std::vector<Tensor>& in) {
                         Tensor out = in[0].detach() * 3.0;
                         record("WrongBackward", {in[0]}, {&out},
                                [](const std::vector<Tensor>& g, const std::vector<bool>&) {
                                  return std::vector<Tensor>{g[0] * 2.0};
                                });
                         return out;
                       }};
  test::GradCheckResult r = test::check_gradients(wrong);
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("analytic") != std::string::npos);

  // A kink is skipped, not failed: relu exactly at 0.
  test::GradCase kink{"relu", "relu at 0",
                      [](Generator&) {
                        Tensor t = zeros({3}, DType::f64);
                        t.set_requires_grad(true);
                        return std::vector<Tensor>{t};
                      },
                      [](const std::vector<Tensor>& in) { return relu(in[0]); }};
  test::GradCheckResult k = test::check_gradients(kink);
  CHECK(k.ok);
  CHECK(k.skipped_kinks == 3);
}
