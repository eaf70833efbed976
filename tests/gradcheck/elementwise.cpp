// Gradient-check cases: unary, scalar, binary (with broadcasting) and reduction ops.
#include "engine/ops.h"
#include "tests/support/gradcheck.h"

namespace seg::test {

namespace {

GradCase unary_case(const std::string& op, std::function<Tensor(const Tensor&)> f, double low = -2.0,
                    double high = 2.0) {
  return GradCase{op, op + " (3,4,5)",
                  [low, high](Generator& g) { return std::vector<Tensor>{uniform64({3, 4, 5}, g, low, high)}; },
                  [f](const std::vector<Tensor>& x) { return f(x[0]); }};
}

GradCase binary_case(const std::string& op, const Shape& a, const Shape& b,
                     std::function<Tensor(const Tensor&, const Tensor&)> f, bool positive_b = false) {
  return GradCase{op, op + " " + shape_str(a) + " with " + shape_str(b),
                  [a, b, positive_b](Generator& g) {
                    return std::vector<Tensor>{randn64(a, g),
                                               positive_b ? uniform64(b, g, 0.5, 2.0) : randn64(b, g)};
                  },
                  [f](const std::vector<Tensor>& x) { return f(x[0], x[1]); }};
}

}  // namespace

void add_elementwise_grad_cases(std::vector<GradCase>& cases) {
  cases.push_back(unary_case("neg", [](const Tensor& x) { return neg(x); }));
  cases.push_back(unary_case("relu", [](const Tensor& x) { return relu(x); }));
  cases.push_back(unary_case("abs", [](const Tensor& x) { return abs(x); }));
  cases.push_back(unary_case("exp", [](const Tensor& x) { return exp(x); }));
  cases.push_back(unary_case("log", [](const Tensor& x) { return log(x); }, 0.2, 3.0));
  cases.push_back(unary_case("sqrt", [](const Tensor& x) { return sqrt(x); }, 0.2, 3.0));
  cases.push_back(unary_case("tanh", [](const Tensor& x) { return tanh(x); }));
  cases.push_back(unary_case("sigmoid", [](const Tensor& x) { return sigmoid(x); }));
  cases.push_back(unary_case("add_scalar", [](const Tensor& x) { return add_scalar(x, 1.5); }));
  cases.push_back(unary_case("mul_scalar", [](const Tensor& x) { return mul_scalar(x, -0.7); }));
  cases.push_back(unary_case("pow_scalar", [](const Tensor& x) { return pow_scalar(x, 2.5); }, 0.2, 3.0));
  cases.push_back(unary_case("pow_scalar", [](const Tensor& x) { return pow_scalar(x, 3.0); }));
  cases.push_back(unary_case("rsub_scalar", [](const Tensor& x) { return rsub_scalar(2.0, x); }));

  auto add_f = [](const Tensor& a, const Tensor& b) { return add(a, b); };
  auto sub_f = [](const Tensor& a, const Tensor& b) { return sub(a, b); };
  auto mul_f = [](const Tensor& a, const Tensor& b) { return mul(a, b); };
  auto div_f = [](const Tensor& a, const Tensor& b) { return div(a, b); };
  for (auto& [a, b] : std::vector<std::pair<Shape, Shape>>{
           {{2, 3, 4}, {2, 3, 4}}, {{2, 3, 4}, {3, 1}}, {{2, 1, 4}, {1, 3, 1}}, {{4}, {2, 3, 4}}, {{2, 3}, {}}}) {
    cases.push_back(binary_case("add", a, b, add_f));
    cases.push_back(binary_case("sub", a, b, sub_f));
    cases.push_back(binary_case("mul", a, b, mul_f));
    cases.push_back(binary_case("div", a, b, div_f, /*positive_b=*/true));
  }

  cases.push_back(GradCase{"sum", "sum of all (3,4,5)",
                           [](Generator& g) { return std::vector<Tensor>{randn64({3, 4, 5}, g)}; },
                           [](const std::vector<Tensor>& x) { return sum(x[0]); }});
  cases.push_back(GradCase{"sum", "sum over dims {0,2} keepdim",
                           [](Generator& g) { return std::vector<Tensor>{randn64({3, 4, 5}, g)}; },
                           [](const std::vector<Tensor>& x) { return sum(x[0], {0, 2}, true); }});
  cases.push_back(GradCase{"sum", "sum over dim -1",
                           [](Generator& g) { return std::vector<Tensor>{randn64({3, 4, 5}, g)}; },
                           [](const std::vector<Tensor>& x) { return sum(x[0], {-1}); }});
  cases.push_back(GradCase{"mean", "mean of all",
                           [](Generator& g) { return std::vector<Tensor>{randn64({3, 4, 5}, g)}; },
                           [](const std::vector<Tensor>& x) { return mean(x[0]); }});
  cases.push_back(GradCase{"mean", "mean over dim 1",
                           [](Generator& g) { return std::vector<Tensor>{randn64({3, 4, 5}, g)}; },
                           [](const std::vector<Tensor>& x) { return mean(x[0], {1}); }});
}

}  // namespace seg::test
