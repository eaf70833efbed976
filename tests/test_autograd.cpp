// Autograd engine: accumulation, joins, retain_graph, no_grad, detach, in-place detection, graph
// release, and that the gradient checker catches a wrong backward.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <memory>
#include <set>
#include <string>

#include "engine/autograd.h"
#include "engine/nn/init.h"
#include "engine/nn/layers.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "tests/support/gradcheck.h"

using namespace seg;

namespace {
bool contains_text(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

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

  // A kink is skipped, not failed: relu exactly at 0 in one element of twenty.
  auto relu_with_zeros = [](int zeros_count) {
    return test::GradCase{"relu", "relu with " + std::to_string(zeros_count) + " zeros",
                          [zeros_count](Generator& g) {
                            Tensor t = test::uniform64({20}, g, 0.5, 1.5, false);
                            t.narrow(0, 0, zeros_count).fill_(0.0);
                            t.set_requires_grad(true);
                            return std::vector<Tensor>{t};
                          },
                          [](const std::vector<Tensor>& in) { return relu(in[0]); }};
  };
  test::GradCheckResult one = test::check_gradients(relu_with_zeros(1));
  CHECK_MESSAGE(one.ok, one.message);
  CHECK(one.skipped_kinks == 1);
  CHECK(one.checked == 19);
  // More kinks than the bound (3 of 20 > 10%): the case checks too little to pass.
  test::GradCheckResult three = test::check_gradients(relu_with_zeros(3));
  CHECK_FALSE(three.ok);
  CHECK(three.message ==
        "relu [relu with 3 zeros]: 3 of 20 sampled elements were skipped as kinks, "
        "more than the bound of 10%");
  // An input of which no element could be checked fails the case, whatever the other inputs do.
  test::GradCase unchecked{
      "add", "an input that is all kinks",
      [](Generator& g) {
        Tensor z = zeros({2}, DType::f64);
        z.set_requires_grad(true);
        return std::vector<Tensor>{test::randn64({40}, g), z};
      },
      [](const std::vector<Tensor>& in) { return add(in[0], sum(relu(in[1]))); }};
  test::GradCheckResult u = test::check_gradients(unchecked);
  CHECK_FALSE(u.ok);
  CHECK(u.checked_per_input == std::vector<int>{40, 0});
  CHECK(contains_text(u.message,
                      "input 1 f64 (2) cpu requires grad but no element of it was checked"));
}

TEST_CASE("the gradient checker samples distinct elements and sees the graph's nodes") {
  // 100 elements, 40 checked: the function notes which element each finite difference moved.
  auto moved = std::make_shared<std::set<int64_t>>();
  auto original = std::make_shared<std::vector<double>>();
  test::GradCase c{"mul_scalar", "a large input",
                   [original](Generator& g) {
                     Tensor t = test::randn64({100}, g);
                     *original = to_vector<double>(t);
                     return std::vector<Tensor>{t};
                   },
                   [moved, original](const std::vector<Tensor>& in) {
                     const std::vector<double> now = to_vector<double>(in[0]);
                     for (size_t i = 0; i < now.size(); ++i) {
                       if (now[i] != (*original)[i]) moved->insert(static_cast<int64_t>(i));
                     }
                     return mul_scalar(in[0], 3.0);
                   }};
  test::GradCheckResult r = test::check_gradients(c);
  CHECK(r.ok);
  CHECK(r.checked == test::kMaxCheckedElements);
  CHECK(moved->size() == static_cast<size_t>(test::kMaxCheckedElements));
  CHECK(r.nodes == std::set<std::string>{"MulScalarBackward", "AccumulateGrad"});
  CHECK(backward_node_name("conv_transpose2d") == "ConvTranspose2dBackward");
  CHECK(backward_node_name("l1_loss") == "L1LossBackward");
}

// ---------------------------------------------------------------------------------------------
// In-place updates under autograd: recorded like PyTorch's (the new value's gradient flows to the
// old value and to the other operands; an update through a view rewrites its base's history), or
// refused with an error where no correct record exists (a leaf that requires grad, or a view of
// one, changed while grad mode is on).

namespace {
Tensor values(std::vector<double> v, const Shape& shape) {
  return from_vector(v, shape);
}
}  // namespace

TEST_CASE("copy_ into a view of a fresh buffer carries the source's gradient") {
  Tensor y = leaf({1, 2, 3}, {3});
  Tensor buf = zeros({2, 3}, DType::f64);
  buf.narrow(0, 1, 1).copy_(y);  // broadcasts (3) into (1,3)
  CHECK(buf.requires_grad());
  REQUIRE(buf.grad_fn() != nullptr);
  CHECK(buf.grad_fn()->name() == "CopySlices");
  sum(buf * values({1, 2, 3, 4, 5, 6}, {2, 3})).backward();
  CHECK(to_vector<double>(y.grad()) == std::vector<double>{4, 5, 6});
}

TEST_CASE("copy_ with broadcasting and a dtype conversion sums and converts the gradient back") {
  Tensor y = from_vector(std::vector<float>{1, 2, 3}, {3});
  y.set_requires_grad(true);
  Tensor buf = empty({2, 3}, DType::f64);
  buf.copy_(y);
  CHECK(buf.grad_fn()->name() == "InplaceCopyBackward");
  sum(buf * values({1, 2, 3, 4, 5, 6}, {2, 3})).backward();
  CHECK(y.grad().dtype() == DType::f32);
  CHECK(to_vector<float>(y.grad()) == std::vector<float>{5, 7, 9});
}

TEST_CASE("add_ and mul_ on an activation pass gradients to the old value and the operand") {
  Tensor a = leaf({1, 2}, {2});
  Tensor z = leaf({10, 20}, {2});
  Tensor h = a * 2.0;
  h.add_(z, 0.5);  // h = 2a + z / 2
  h.mul_(3.0);     // h = 6a + 3z / 2
  CHECK(to_vector<double>(h) == std::vector<double>{21, 42});
  CHECK(h.grad_fn()->name() == "InplaceMulBackward");
  sum(h * values({1, -1}, {2})).backward();
  CHECK(to_vector<double>(a.grad()) == std::vector<double>{6, -6});
  CHECK(to_vector<double>(z.grad()) == std::vector<double>{1.5, -1.5});
}

TEST_CASE("add_ of a tensor into itself and copy_ between views of one tensor") {
  Tensor a = leaf({1, 2, 3, 4}, {4});
  Tensor h = a * 1.0;
  h.add_(h, 2.0);  // 3a
  sum(h).backward();
  CHECK(to_vector<double>(a.grad()) == std::vector<double>{3, 3, 3, 3});

  Tensor b = leaf({1, 2, 3, 4}, {4});
  Tensor k = b * 1.0;
  k.narrow(0, 0, 2).copy_(k.narrow(0, 2, 2));  // k = [b2, b3, b2, b3]
  CHECK(to_vector<double>(k) == std::vector<double>{3, 4, 3, 4});
  sum(k * values({1, 10, 100, 1000}, {4})).backward();
  CHECK(to_vector<double>(b.grad()) == std::vector<double>{0, 0, 101, 1010});
}

TEST_CASE("fill_ and the random fills cut the gradient of what they overwrite") {
  Tensor a = leaf({1, 2, 3}, {3});
  Tensor h = a * 2.0;
  h.narrow(0, 1, 1).fill_(7.0);
  Generator gen(5);
  Tensor k = a * 3.0;
  k.narrow(0, 0, 1).uniform_(gen);
  sum(h + k).backward();
  CHECK(to_vector<double>(a.grad()) == std::vector<double>{2, 3 + 0, 2 + 3});
  CHECK(to_vector<double>(h)[1] == 7.0);
}

TEST_CASE("views made before an in-place update see the new history") {
  Tensor y = leaf({5, 6}, {2});
  Tensor buf = zeros({4}, DType::f64);
  Tensor early = buf.narrow(0, 1, 2);  // made before the copy, overlaps it in one element
  CHECK_FALSE(early.requires_grad());
  buf.narrow(0, 2, 2).copy_(y);
  CHECK(early.requires_grad());
  CHECK(to_vector<double>(early) == std::vector<double>{0, 5});
  sum(early * values({10, 100}, {2})).backward();
  CHECK(to_vector<double>(y.grad()) == std::vector<double>{100, 0});
}

TEST_CASE("in-place updates are checked numerically (gradient check)") {
  test::GradCase c{"copy", "copy_, add_, mul_ and fill_ through views",
                   [](Generator& g) {
                     return std::vector<Tensor>{test::randn64({2, 3}, g), test::randn64({3}, g),
                                                test::randn64({2, 1}, g)};
                   },
                   [](const std::vector<Tensor>& x) {
                     Tensor h = exp(x[0]);                  // saves its output: h is cloned below
                     Tensor buf = h.clone();                // (2,3)
                     buf.narrow(1, 0, 2).add_(x[2], -1.5);  // broadcast (2,1) into (2,2)
                     buf.select(0, 1).copy_(x[1]);
                     buf.transpose(0, 1).narrow(0, 2, 1).mul_(0.25);
                     buf.narrow(1, 1, 1).narrow(0, 0, 1).fill_(0.5);
                     Tensor out = zeros({3, 3}, DType::f64);
                     out.narrow(0, 0, 2).copy_(buf);
                     out.select(0, 2).copy_(x[1]);
                     return out * out;
                   }};
  test::GradCheckResult r = test::check_gradients(c);
  CHECK_MESSAGE(r.ok, r.message);
  CHECK(r.checked == 6 + 3 + 2);
}

TEST_CASE("an in-place update of a tensor saved for backward makes backward refuse") {
  Tensor a = leaf({1, 2}, {2});
  Tensor z = leaf({1, 1}, {2});
  Tensor h = exp(a);  // saves h for its gradient
  h.add_(z);
  CHECK_THROWS_WITH_AS(sum(h).backward(), doctest::Contains("modified in place"), Error);
  // The same through a view of the saved tensor.
  Tensor k = exp(a);
  k.narrow(0, 0, 1).mul_(2.0);
  CHECK_THROWS_WITH_AS(sum(k).backward(), doctest::Contains("modified in place"), Error);
}

TEST_CASE("in-place updates of leaves that require grad, and of their views, are refused") {
  Tensor w = leaf({1, 2, 3}, {3});
  Tensor y = leaf({4}, {1});
  const uint64_t v0 = w.storage()->version();
  CHECK_THROWS_WITH_AS(w.fill_(0.0),
                       doctest::Contains("fill_: f64 (3) cpu is a leaf that requires grad"), Error);
  CHECK_THROWS_WITH_AS(w.add_(y),
                       doctest::Contains("add_: f64 (3) cpu is a leaf that requires grad"), Error);
  CHECK_THROWS_WITH_AS(
      w.narrow(0, 1, 1).copy_(y),
      doctest::Contains("copy_: f64 (1) cpu is a view of a leaf that requires grad"), Error);
  CHECK_THROWS_WITH_AS(w.select(0, 2).mul_(2.0),
                       doctest::Contains("view of a leaf that requires grad"), Error);
  Generator gen(1);
  CHECK_THROWS_AS(w.normal_(gen), Error);
  {  // A view made under no_grad is still a view of the leaf.
    Tensor v;
    {
      NoGradGuard no_grad;
      v = w.narrow(0, 0, 2);
    }
    CHECK_THROWS_WITH_AS(v.zero_(), doctest::Contains("view of a leaf that requires grad"), Error);
  }
  CHECK(w.storage()->version() == v0);  // nothing was written
  CHECK(to_vector<double>(w) == std::vector<double>{1, 2, 3});

  // Under no_grad (optimisers, initialisers, loading) the same updates are allowed.
  {
    NoGradGuard no_grad;
    w.narrow(0, 1, 1).copy_(y);
    w.mul_(2.0);
  }
  CHECK(to_vector<double>(w) == std::vector<double>{2, 8, 6});
  CHECK(w.is_leaf());
  CHECK(w.grad_fn() == nullptr);
  // A leaf that does not require grad takes a gradient-carrying value (it then has a history).
  Tensor plain = zeros({1}, DType::f64);
  plain.copy_(y);
  CHECK_FALSE(plain.is_leaf());
}

TEST_CASE("in-place updates that cannot carry a gradient are refused") {
  Tensor y = leaf({1.5, 2.5}, {2});
  Tensor labels = zeros({2}, DType::i32);
  CHECK_THROWS_WITH_AS(labels.copy_(y), doctest::Contains("copy_: cannot record"), Error);
  Tensor h = leaf({1}, {1}) * 1.0;
  Tensor wide = h.expand({3});
  CHECK_THROWS_WITH_AS(wide.add_(y.narrow(0, 0, 1).expand({3})),
                       doctest::Contains("more than one element"), Error);
  {  // Without grad mode the same copy converts and records nothing.
    NoGradGuard no_grad;
    labels.copy_(y);
  }
  CHECK(to_vector<int32_t>(labels) == std::vector<int32_t>{1, 2});
}

TEST_CASE("the engine's own in-place updates work on tensors that require grad") {
  // nn init draws into parameters, load_state_dict copies into them, batch norm updates its
  // running statistics and an optimiser steps: all with grad mode on around them.
  Generator gen(3);
  nn::Conv2d conv(2, 3, 3, gen, Conv2dOptions::make(1, 1));
  nn::BatchNorm2d bn(3);
  CHECK(conv.weight.requires_grad());
  nn::init::kaiming_normal_(conv.weight, gen);
  nn::init::zeros_(conv.bias);
  nn::init::uniform_(bn.weight, gen, 0.5, 1.5);
  nn::StateDict sd = conv.state_dict();
  {
    NoGradGuard no_grad;
    sd[0].second = sd[0].second.detach().clone() * 0.5;  // a different weight to load
  }
  conv.load_state_dict(sd);
  CHECK(conv.weight.is_leaf());
  SGDOptions sgd;
  sgd.lr = 0.1;
  sgd.momentum = 0.9;
  SGD opt(conv.parameters(), sgd);
  Tensor x = randn({2, 2, 5, 5}, gen);
  for (int step = 0; step < 2; ++step) {
    opt.zero_grad();
    Tensor loss = mean(bn.forward(conv.forward(x)));
    loss.backward();
    opt.step();
  }
  CHECK(conv.weight.is_leaf());
  CHECK(conv.weight.grad().defined());
  CHECK(bn.num_batches_tracked.item<int64_t>() == 2);
  CHECK(to_vector<float>(bn.running_mean) != std::vector<float>(3, 0.0f));
}

// PyTorch's relu lets NaN through (clamp_min), and its backward (threshold_backward on the
// output) passes the gradient where the output is NaN: a diverging run then shows NaN in the loss
// instead of being hidden by a ReLU that maps NaN to 0.
TEST_CASE("relu propagates NaN forward and passes the gradient there, as PyTorch") {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  for (DType dt : {DType::f32, DType::f64}) {
    CAPTURE(std::string(dtype_name(dt)));
    Tensor x = from_vector(std::vector<double>{-1.0, 0.0, nan, 2.0}, {4}).to(dt).set_requires_grad(true);
    Tensor y = relu(x);
    const std::vector<double> v = to_vector<double>(y);
    CHECK(v[0] == 0.0);
    CHECK(v[1] == 0.0);
    CHECK(std::isnan(v[2]));
    CHECK(v[3] == 2.0);
    sum(mul(y, from_vector(std::vector<double>{1.0, 2.0, 3.0, 4.0}, {4}).to(dt))).backward();
    CHECK(to_vector<double>(x.grad()) == std::vector<double>{0.0, 0.0, 3.0, 4.0});
  }
}
