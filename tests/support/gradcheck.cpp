#include "tests/support/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "engine/autograd.h"
#include "engine/ops.h"

namespace seg::test {

void add_elementwise_grad_cases(std::vector<GradCase>& cases);  // tests/gradcheck/elementwise.cpp
void add_shape_grad_cases(std::vector<GradCase>& cases);        // tests/gradcheck/shape.cpp
void add_layer_grad_cases(std::vector<GradCase>& cases);        // tests/gradcheck/layers.cpp
void add_norm_pool_grad_cases(std::vector<GradCase>& cases);    // tests/gradcheck/norm_pool.cpp
void add_loss_grad_cases(std::vector<GradCase>& cases);         // tests/gradcheck/loss.cpp

std::vector<GradCase> all_grad_cases() {
  std::vector<GradCase> cases;
  add_elementwise_grad_cases(cases);
  add_shape_grad_cases(cases);
  add_layer_grad_cases(cases);
  add_norm_pool_grad_cases(cases);
  add_loss_grad_cases(cases);
  return cases;
}

Tensor randn64(const Shape& shape, Generator& gen, bool requires_grad) {
  Tensor t = randn(shape, gen, DType::f64);
  t.set_requires_grad(requires_grad);
  return t;
}

Tensor uniform64(const Shape& shape, Generator& gen, double low, double high, bool requires_grad) {
  Tensor t = empty(shape, DType::f64);
  t.uniform_(gen, low, high);
  t.set_requires_grad(requires_grad);
  return t;
}

namespace {

// L = sum(out * r), in f64 on the host.
double projected(const Tensor& out, const std::vector<double>& r) {
  std::vector<double> v = to_vector<double>(out);
  double acc = 0.0;
  for (size_t i = 0; i < v.size(); ++i) acc += v[i] * r[i];
  return acc;
}

}  // namespace

std::set<std::string> graph_node_names(const Tensor& out) {
  std::set<std::string> names;
  std::vector<Node*> stack;
  std::set<Node*> seen;
  if (out.grad_fn()) stack.push_back(out.grad_fn().get());
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    if (!seen.insert(node).second) continue;
    names.insert(node->name());
    for (const Edge& e : node->next_edges) {
      if (e.node) stack.push_back(e.node.get());
    }
  }
  return names;
}

GradCheckResult check_gradients(const GradCase& c, uint64_t seed) {
  GradCheckResult result;
  auto fail = [&](const std::string& message) {
    if (result.ok) result.message = message;
    result.ok = false;
  };
  Generator gen(seed);
  std::vector<Tensor> inputs = c.inputs(gen);
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) {
      SEG_CHECK(t.dtype() == DType::f64 && t.is_contiguous(), "gradcheck ", c.name,
                ": checked inputs must be contiguous f64, got ", t.str());
    }
  }
  Tensor out = c.fn(inputs);
  SEG_CHECK(out.dtype() == DType::f64, "gradcheck ", c.name, ": output ", out.str(), " is not f64");
  SEG_CHECK(out.requires_grad(), "gradcheck ", c.name, ": output does not require grad");
  result.nodes = graph_node_names(out);
  Tensor r = empty(out.sizes(), DType::f64);
  r.uniform_(gen, -1.0, 1.0);
  std::vector<double> rv = to_vector<double>(r);
  out.backward(r);

  NoGradGuard no_grad;
  int sampled = 0;
  result.checked_per_input.assign(inputs.size(), 0);
  for (size_t i = 0; i < inputs.size(); ++i) {
    Tensor x = inputs[i];
    if (!x.defined() || !x.requires_grad()) continue;
    Tensor g = x.grad();
    std::vector<double> analytic =
        g.defined() ? to_vector<double>(g) : std::vector<double>(static_cast<size_t>(x.numel()), 0.0);
    double* data = x.data<double>();
    const int64_t n = x.numel();
    // Distinct elements: a partial Fisher-Yates shuffle of 0..n-1 drawn from the case's generator.
    std::vector<int64_t> picks(static_cast<size_t>(n));
    for (int64_t j = 0; j < n; ++j) picks[static_cast<size_t>(j)] = j;
    if (n > kMaxCheckedElements) {
      std::vector<double> u = to_vector<double>(rand({kMaxCheckedElements}, gen, DType::f64));
      for (int64_t k = 0; k < kMaxCheckedElements; ++k) {
        const int64_t left = n - k;
        const int64_t pick =
            k + std::min(left - 1, static_cast<int64_t>(u[static_cast<size_t>(k)] * left));
        std::swap(picks[static_cast<size_t>(k)], picks[static_cast<size_t>(pick)]);
      }
      picks.resize(kMaxCheckedElements);
    }
    for (int64_t j : picks) {
      ++sampled;
      const double saved = data[j];
      const double h = kGradCheckStep;
      data[j] = saved + h;
      const double lp = projected(c.fn(inputs), rv);
      data[j] = saved - h;
      const double lm = projected(c.fn(inputs), rv);
      data[j] = saved;
      const double l0 = projected(c.fn(inputs), rv);
      const double right = (lp - l0) / h, left = (l0 - lm) / h;
      if (std::abs(right - left) > kKinkThreshold * std::max({1.0, std::abs(left), std::abs(right)})) {
        ++result.skipped_kinks;
        continue;
      }
      const double numeric = (lp - lm) / (2 * h);
      const double a = analytic[static_cast<size_t>(j)];
      ++result.checked;
      ++result.checked_per_input[i];
      if (std::abs(a - numeric) > c.tolerance * std::max({1.0, std::abs(a), std::abs(numeric)})) {
        std::ostringstream os;
        os.precision(12);
        os << c.op << " [" << c.name << "]: input " << i << " " << x.str() << " element " << j
           << ": analytic " << a << " vs numeric " << numeric;
        fail(os.str());
      }
    }
    if (result.checked_per_input[i] == 0) {
      std::ostringstream os;
      os << c.op << " [" << c.name << "]: input " << i << " " << x.str()
         << " requires grad but no element of it was checked (" << picks.size()
         << " sampled, all skipped as kinks)";
      fail(os.str());
    }
  }
  if (sampled > 0 && result.skipped_kinks > kMaxSkippedKinkShare * sampled) {
    std::ostringstream os;
    os << c.op << " [" << c.name << "]: " << result.skipped_kinks << " of " << sampled
       << " sampled elements were skipped as kinks, more than the bound of "
       << kMaxSkippedKinkShare * 100 << "%";
    fail(os.str());
  }
  return result;
}

}  // namespace seg::test
