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

// Parity-only cases (CUDA vs CPU, never finite differences): shapes that span many thread blocks
// and are not multiples of block or vector sizes, broadcasts of every kind, strided inputs, and
// reductions of each layout the CUDA sum kernel distinguishes (inner / outer, warp / block teams,
// split reductions).
GradCase parity_case(const std::string& op, const std::string& name, std::function<std::vector<Tensor>(Generator&)> in,
                     std::function<Tensor(const std::vector<Tensor>&)> fn) {
  GradCase c{op, name + " [parity]", std::move(in), std::move(fn)};
  c.parity_only = true;
  return c;
}

const Shape kOdd = {3, 37, 61, 53};  // 358,653 elements: 1401 blocks of 256, rows of 53 and 3233

void add_elementwise_parity_cases(std::vector<GradCase>& cases) {
  struct Unary {
    std::string op;
    std::function<Tensor(const Tensor&)> f;
    double low, high;
  };
  const std::vector<Unary> unaries = {
      {"neg", [](const Tensor& x) { return neg(x); }, -2.0, 2.0},
      {"relu", [](const Tensor& x) { return relu(x); }, -2.0, 2.0},
      {"abs", [](const Tensor& x) { return abs(x); }, -2.0, 2.0},
      {"exp", [](const Tensor& x) { return exp(x); }, -2.0, 2.0},
      {"log", [](const Tensor& x) { return log(x); }, 0.2, 3.0},
      {"sqrt", [](const Tensor& x) { return sqrt(x); }, 0.2, 3.0},
      {"tanh", [](const Tensor& x) { return tanh(x); }, -2.0, 2.0},
      {"sigmoid", [](const Tensor& x) { return sigmoid(x); }, -4.0, 4.0},
      {"add_scalar", [](const Tensor& x) { return add_scalar(x, 1.5); }, -2.0, 2.0},
      {"mul_scalar", [](const Tensor& x) { return mul_scalar(x, -0.7); }, -2.0, 2.0},
      {"pow_scalar", [](const Tensor& x) { return pow_scalar(x, 2.5); }, 0.2, 3.0},
      {"rsub_scalar", [](const Tensor& x) { return rsub_scalar(2.0, x); }, -2.0, 2.0},
  };
  for (const Unary& u : unaries) {
    const double low = u.low, high = u.high;
    cases.push_back(parity_case(
        u.op, u.op + " " + shape_str(kOdd),
        [low, high](Generator& g) { return std::vector<Tensor>{uniform64(kOdd, g, low, high)}; },
        [f = u.f](const std::vector<Tensor>& x) { return f(x[0]); }));
  }
  // A strided input (the front-end makes it contiguous), and an odd length below the vector width.
  cases.push_back(parity_case(
      "relu", "relu of a transposed (3,53,61,37) view",
      [](Generator& g) { return std::vector<Tensor>{randn64({3, 53, 61, 37}, g)}; },
      [](const std::vector<Tensor>& x) { return relu(x[0].transpose(1, 3)); }));
  cases.push_back(parity_case(
      "sigmoid", "sigmoid (7)", [](Generator& g) { return std::vector<Tensor>{randn64({7}, g)}; },
      [](const std::vector<Tensor>& x) { return sigmoid(x[0]); }));
  // Misaligned inputs: a contiguous view one element into its storage is not 16-byte aligned, so
  // the unary kernels take their scalar path, forward and (for the ops whose backward reads the
  // saved x, which is that view) backward.
  for (const Unary& u : unaries) {
    if (u.op != "relu" && u.op != "log" && u.op != "pow_scalar" && u.op != "exp") continue;
    const double low = u.low, high = u.high;
    cases.push_back(parity_case(
        u.op, u.op + " of a misaligned contiguous view of " + shape_str(kOdd),
        [low, high](Generator& g) { return std::vector<Tensor>{uniform64(kOdd, g, low, high)}; },
        [f = u.f](const std::vector<Tensor>& x) {
          const Tensor flat = x[0].flatten();
          return f(flat.narrow(0, 1, flat.numel() - 2));
        }));
  }

  struct Binary {
    std::string op;
    std::function<Tensor(const Tensor&, const Tensor&)> f;
    bool positive_b;
  };
  const std::vector<Binary> binaries = {
      {"add", [](const Tensor& a, const Tensor& b) { return add(a, b); }, false},
      {"sub", [](const Tensor& a, const Tensor& b) { return sub(a, b); }, false},
      {"mul", [](const Tensor& a, const Tensor& b) { return mul(a, b); }, false},
      {"div", [](const Tensor& a, const Tensor& b) { return div(a, b); }, true},
  };
  const std::vector<std::pair<Shape, Shape>> shapes = {
      {kOdd, kOdd},                    // contiguous, odd length
      {kOdd, {1, 37, 1, 1}},           // per-channel bias: broadcast rows of 3233
      {{3, 37, 61, 52}, {52}},         // broadcast inner rows, vector path
      {{37, 1, 53}, {3, 1, 61, 1}},    // both operands broadcast
      {kOdd, {}},                      // a scalar
      {{1, 37, 61, 1}, {3, 37, 61, 53}},
  };
  for (const Binary& op : binaries) {
    for (const auto& [a, b] : shapes) {
      const bool positive_b = op.positive_b;
      cases.push_back(parity_case(
          op.op, op.op + " " + shape_str(a) + " with " + shape_str(b),
          [a = a, b = b, positive_b](Generator& g) {
            return std::vector<Tensor>{randn64(a, g), positive_b ? uniform64(b, g, 0.5, 2.0) : randn64(b, g)};
          },
          [f = op.f](const std::vector<Tensor>& x) { return f(x[0], x[1]); }));
    }
  }
  // A transposed operand: the general strided path.
  cases.push_back(parity_case(
      "mul", "mul of a transposed (3,37,53,61) view with (3,37,61,53)",
      [](Generator& g) { return std::vector<Tensor>{randn64({3, 37, 53, 61}, g), randn64(kOdd, g)}; },
      [](const std::vector<Tensor>& x) { return mul(x[0].transpose(2, 3), x[1]); }));
  // Rows a multiple of the vector width that are still not vector-aligned: a narrowed operand
  // (outer strides of 53, storage offset 1), and a misaligned contiguous one (a single row).
  cases.push_back(parity_case(
      "add", "add of a narrowed (3,37,61,53)->(3,37,61,52) view with (3,37,61,52)",
      [](Generator& g) {
        return std::vector<Tensor>{randn64(kOdd, g), randn64({3, 37, 61, 52}, g)};
      },
      [](const std::vector<Tensor>& x) { return add(x[0].narrow(3, 1, 52), x[1]); }));
  cases.push_back(parity_case(
      "sub", "sub of a misaligned contiguous view with a (358652) tensor",
      [](Generator& g) { return std::vector<Tensor>{randn64(kOdd, g), randn64({358652}, g)}; },
      [](const std::vector<Tensor>& x) { return sub(x[0].flatten().narrow(0, 1, 358652), x[1]); }));

  struct Reduction {
    Shape shape;
    std::vector<int> dims;
    bool keepdim;
  };
  const std::vector<Reduction> reductions = {
      {kOdd, {0, 2, 3}, true},   // bias gradient: inner layout, block teams, split
      {kOdd, {0}, false},        // outer layout, wide rows
      {kOdd, {3}, true},         // inner layout, a warp per output
      {kOdd, {1, 3}, false},     // interleaved kept and reduced dims
      {kOdd, {}, false},         // everything: one output, split
      {{5003, 37}, {0}, true},   // (n, d) -> (1, d), d >= 32
      {{20011, 5}, {0}, false},  // (n, d) -> (1, d), narrow rows
      {{5, 20011}, {1}, true},   // long inner reductions
      {{5, 1999}, {1}, false},   // a warp per output, split: partial sums and the finalize kernel
      {{5, 20012}, {1}, true},   // vector loads (rows a multiple of 4), block teams, split
      {{3, 37, 61, 52}, {0, 2, 3}, true},  // bias gradient with vector loads
      {{2, 1, 3, 1}, {1, 3}, true},  // only size-1 dims reduced: a copy
  };
  for (const Reduction& r : reductions) {
    std::string dims;
    for (int d : r.dims) {
      if (!dims.empty()) dims += ',';
      dims += std::to_string(d);
    }
    cases.push_back(parity_case(
        "sum", "sum over {" + dims + "} of " + shape_str(r.shape),
        [shape = r.shape](Generator& g) { return std::vector<Tensor>{randn64(shape, g)}; },
        [r](const std::vector<Tensor>& x) { return r.dims.empty() ? sum(x[0]) : sum(x[0], r.dims, r.keepdim); }));
  }
  cases.push_back(parity_case(
      "mean", "mean over {0,2,3} of " + shape_str(kOdd),
      [](Generator& g) { return std::vector<Tensor>{randn64(kOdd, g)}; },
      [](const std::vector<Tensor>& x) { return mean(x[0], {0, 2, 3}, true); }));
  cases.push_back(parity_case(
      "sum", "sum over {0,2} of a permuted (53,3,61,37) view",
      [](Generator& g) { return std::vector<Tensor>{randn64({53, 3, 61, 37}, g)}; },
      [](const std::vector<Tensor>& x) { return sum(x[0].permute({1, 3, 2, 0}), {0, 2}); }));
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

  add_elementwise_parity_cases(cases);
}

}  // namespace seg::test
