// Optimisers and lr schedulers: hand-computed steps, PyTorch trajectories and lr sequences
// (tests/reference/ref_optim.py), checkpoint/resume of both, in-place semantics and bad input.
#include <doctest/doctest.h>

#include <cfloat>
#include <cmath>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/scheduler.h"
#include "tests/support/reference.h"

using namespace seg;
using nlohmann::json;

namespace {

// Hand-computed f64 steps: the expected values are written as the formula of the step, so they
// differ from the optimiser's only by the rounding order of a handful of double operations.
constexpr double kHandTol = 1e-12;

// f32 trajectories vs PyTorch. The kernels round where ATen's AVX2 kernels round and fuse where
// they fuse (x.add(y, alpha) and addcmul are one fma there), so the values agree to the bit on
// x86-64 (the test reports how many do). The bound is for a valid but different evaluation order:
// against ATen's unfused kernels (ATEN_CPU_CAPABILITY=default) the trajectories differ by up to
// 2.7 ulps after 10 steps. Ulps are of max(|value|, 1): the parameters are O(1) and a rounding
// difference in an update is absolute, not relative to a value that happens to cross zero.
constexpr double kF32UlpsPerStep = 4.0;
// f64: the same argument with the f64 epsilon.
constexpr double kF64UlpsPerStep = 4.0;

Tensor param(const std::vector<double>& v, const Shape& shape, DType dtype = DType::f64) {
  Tensor t = from_vector(v, shape).to(dtype);
  t.set_requires_grad(true);
  return t;
}

void set_grad(const Tensor& p, const std::vector<double>& g) {
  Tensor t = p;
  t.set_grad(from_vector(g, p.sizes()).to(p.dtype()));
}

void check_close(const Tensor& t, const std::vector<double>& expected, double tol = kHandTol) {
  std::vector<double> got = to_vector<double>(t);
  REQUIRE(got.size() == expected.size());
  for (size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i] == doctest::Approx(expected[i]).epsilon(tol));
  }
}

// Runs fn and checks that it throws a seg::Error whose message contains `part`.
void check_error(const std::function<void()>& fn, const std::string& part) {
  try {
    fn();
    FAIL("no error; expected one containing: ", part);
  } catch (const Error& e) {
    const std::string msg = e.what();
    CAPTURE(msg);
    CHECK_MESSAGE(msg.find(part) != std::string::npos, "expected: ", part);
  }
}

std::vector<double> doubles(const json& j) {
  std::vector<double> v;
  for (const json& x : j) v.push_back(x.get<double>());
  return v;
}

json load_reference(const std::string& file) {
  std::ifstream in(test::reference_path(file));
  REQUIRE(in.good());
  return json::parse(in);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Hand-computed steps

TEST_CASE("SGD by hand: momentum with weight decay, nesterov, maximize") {
  {
    Tensor p = param({1.0, -2.0}, {2});
    SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .weight_decay = 0.1});
    set_grad(p, {0.5, 1.0});
    opt.step();
    // d = g + wd * p = (0.6, 0.8); the buffer starts as d; p -= lr * buf
    check_close(p, {1.0 - 0.1 * 0.6, -2.0 - 0.1 * 0.8});
    set_grad(p, {0.5, -1.0});
    opt.step();
    // d = (0.5 + 0.1 * 0.94, -1 - 0.1 * 2.08); buf = 0.9 * buf + d
    const double b0 = 0.9 * 0.6 + (0.5 + 0.094), b1 = 0.9 * 0.8 + (-1.0 - 0.208);
    check_close(p, {0.94 - 0.1 * b0, -2.08 - 0.1 * b1});
  }
  {
    Tensor p = param({1.0}, {1});
    SGD opt({p}, {.lr = 0.1, .momentum = 0.5, .nesterov = true});
    set_grad(p, {1.0});
    opt.step();  // buf = 1, d = g + m * buf = 1.5
    check_close(p, {0.85});
    opt.step();  // buf = 0.5 + 1 = 1.5, d = 1 + 0.75
    check_close(p, {0.85 - 0.175});
  }
  {
    Tensor p = param({1.0}, {1});
    SGD opt({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.5});
    set_grad(p, {1.0});
    opt.step();  // the first buffer is the gradient itself: dampening does not apply yet
    check_close(p, {0.9});
    opt.step();  // buf = 0.9 + 0.5 * 1
    check_close(p, {0.9 - 0.1 * 1.4});
  }
  {
    Tensor p = param({1.0}, {1});
    SGD opt({p}, {.lr = 0.1, .maximize = true});
    set_grad(p, {2.0});
    opt.step();
    check_close(p, {1.2});
  }
}

TEST_CASE("RMSprop by hand: plain, momentum, centered") {
  {
    Tensor p = param({1.0}, {1});
    RMSprop opt({p}, {.lr = 0.01, .eps = 0.0});
    set_grad(p, {2.0});
    opt.step();  // square_avg = 0.01 * 4; p -= lr * g / sqrt(square_avg)
    check_close(p, {1.0 - 0.01 * 2.0 / 0.2});
    set_grad(p, {1.0});
    opt.step();
    check_close(p, {0.9 - 0.01 * 1.0 / std::sqrt(0.99 * 0.04 + 0.01)});
  }
  {
    Tensor p = param({1.0}, {1});
    RMSprop opt({p}, {.lr = 0.01, .eps = 0.0, .momentum = 0.9});
    set_grad(p, {2.0});
    opt.step();  // buf = g / avg = 10
    check_close(p, {0.9});
    set_grad(p, {1.0});
    opt.step();
    const double buf = 0.9 * 10.0 + 1.0 / std::sqrt(0.0496);
    check_close(p, {0.9 - 0.01 * buf});
  }
  {
    Tensor p = param({1.0}, {1});
    RMSprop opt({p}, {.lr = 0.01, .eps = 1e-8, .centered = true});
    set_grad(p, {2.0});
    opt.step();  // grad_avg = 0.02; avg = sqrt(0.04 - 0.02^2) + eps
    check_close(p, {1.0 - 0.01 * 2.0 / (std::sqrt(0.04 - 0.0004) + 1e-8)});
  }
}

TEST_CASE("Adam and AdamW by hand: bias correction, L2 vs decoupled decay, amsgrad") {
  {
    // A constant gradient moves every coordinate by lr * sign(g) per step (eps = 0): the bias
    // corrections turn the running averages back into g and g^2 exactly.
    Tensor p = param({1.0, -1.0}, {2});
    Adam opt({p}, {.lr = 0.1, .eps = 0.0});
    set_grad(p, {0.5, -2.0});
    opt.step();
    check_close(p, {0.9, -0.9});
    opt.step();
    check_close(p, {0.8, -0.8});
    CHECK(opt.param_step(0, 0) == 2);
  }
  {
    Tensor p = param({1.0}, {1});
    Adam opt({p}, {.lr = 0.1, .eps = 0.0, .weight_decay = 0.5});
    set_grad(p, {0.5});
    opt.step();  // g' = 0.5 + 0.5 * 1 = 1
    check_close(p, {0.9});
    opt.step();  // g' = 0.5 + 0.5 * 0.9 = 0.95
    const double m = 0.9 * 0.1 + 0.1 * 0.95, v = 0.999 * 0.001 + 0.001 * 0.95 * 0.95;
    const double bc1 = 1.0 - 0.9 * 0.9, bc2 = 1.0 - 0.999 * 0.999;
    check_close(p, {0.9 - 0.1 * (m / bc1) / std::sqrt(v / bc2)});
  }
  {
    Tensor p = param({1.0}, {1});
    AdamW opt({p}, {.lr = 0.1, .eps = 0.0, .weight_decay = 0.5});
    set_grad(p, {0.5});
    opt.step();  // p *= 1 - lr * wd, then the Adam step of lr * sign(g)
    check_close(p, {1.0 * 0.95 - 0.1});
    opt.step();
    check_close(p, {0.85 * 0.95 - 0.1});
  }
  {
    // amsgrad: after a large gradient and a zero one the denominator keeps the larger average.
    Tensor p = param({1.0}, {1});
    Tensor q = param({1.0}, {1});
    Adam ams({p}, {.lr = 0.1, .eps = 0.0, .amsgrad = true});
    Adam plain({q}, {.lr = 0.1, .eps = 0.0});
    set_grad(p, {2.0});
    set_grad(q, {2.0});
    ams.step();
    plain.step();
    set_grad(p, {0.0});
    set_grad(q, {0.0});
    ams.step();
    plain.step();
    const double m = 0.9 * 0.2, bc1 = 1.0 - 0.81, bc2 = 1.0 - 0.999 * 0.999;
    const double v1 = 0.001 * 4.0, v2 = 0.999 * v1;
    check_close(p, {0.9 - 0.1 / bc1 * m / (std::sqrt(v1) / std::sqrt(bc2))});
    check_close(q, {0.9 - 0.1 / bc1 * m / (std::sqrt(v2) / std::sqrt(bc2))});
  }
}

// ---------------------------------------------------------------------------------------------
// Semantics

TEST_CASE("step: in place, no graph, version bumped, parameters without gradient skipped") {
  Tensor a = param({1.0, 2.0}, {2}, DType::f32);
  Tensor b = param({3.0}, {1}, DType::f32);
  Adam opt({a, b}, {.lr = 0.1});
  set_grad(a, {1.0, 1.0});
  const void* storage = a.data_ptr();
  const uint64_t version_a = a.storage()->version();
  const uint64_t version_b = b.storage()->version();
  opt.step();
  CHECK(a.data_ptr() == storage);
  CHECK(a.storage()->version() > version_a);
  CHECK(b.storage()->version() == version_b);  // no gradient: untouched
  CHECK(to_vector<float>(b) == std::vector<float>{3.0f});
  CHECK(a.is_leaf());
  CHECK(a.requires_grad());
  CHECK(opt.param_step(0, 0) == 1);
  CHECK(opt.param_step(0, 1) == 0);
  // Only the parameter that was stepped has state.
  std::vector<std::string> names;
  for (const auto& [name, t] : opt.state_tensors()) names.push_back(name);
  CHECK(names == std::vector<std::string>{"param_groups.0.lr", "state.0.0.step",
                                          "state.0.0.exp_avg", "state.0.0.exp_avg_sq"});

  // A graph that saved the parameter before the step refuses to run after it.
  Tensor y = sum(a * a);
  set_grad(a, {1.0, 1.0});
  opt.step();
  CHECK_THROWS_AS(y.backward(), Error);

  // zero_grad drops the gradients (set_to_none).
  opt.zero_grad();
  CHECK_FALSE(a.grad().defined());
  CHECK_FALSE(b.grad().defined());
  const std::vector<float> before = to_vector<float>(a);
  opt.step();  // nothing has a gradient: nothing changes
  CHECK(to_vector<float>(a) == before);
  CHECK(opt.param_step(0, 0) == 2);
}

// An empty parameter has no data: its gradient and state views are undefined in the kernel call,
// which must skip it and still update the others of the same call.
TEST_CASE("step: an empty parameter beside others, every optimiser") {
  const auto run = [](auto make) {
    Tensor e = zeros({0, 3}).set_requires_grad(true);
    Tensor a = param({1.0, -2.0}, {2}, DType::f32);
    auto opt = make(std::vector<Tensor>{e, a});
    for (int step = 0; step < 2; ++step) {
      e.set_grad(zeros({0, 3}));
      set_grad(a, {0.5, 0.25});
      opt->step();
    }
    CHECK(e.numel() == 0);
    const std::vector<float> v = to_vector<float>(a);
    CHECK(v[0] < 1.0f);
    CHECK(v[1] < -2.0f);
  };
  run([](std::vector<Tensor> p) {
    return std::make_unique<SGD>(p, SGDOptions{.lr = 0.1, .momentum = 0.9});
  });
  run([](std::vector<Tensor> p) {
    return std::make_unique<RMSprop>(p, RMSpropOptions{.lr = 0.1, .momentum = 0.9, .centered = true});
  });
  run([](std::vector<Tensor> p) {
    return std::make_unique<Adam>(p, AdamOptions{.lr = 0.1, .amsgrad = true});
  });
  run([](std::vector<Tensor> p) { return std::make_unique<AdamW>(p, AdamWOptions{.lr = 0.1}); });
}

TEST_CASE("step: the gradient from backward, and a non-contiguous parameter") {
  // loss = sum(w * x): the gradient of w is x.
  Tensor w = param({1.0, 2.0, 3.0}, {3});
  Tensor x = from_vector(std::vector<double>{0.5, -1.0, 2.0}, {3});
  SGD opt({w}, {.lr = 0.1});
  sum(w * x).backward();
  opt.step();
  check_close(w, {0.95, 2.1, 2.8});

  // A transposed leaf is updated through a contiguous copy and written back element by element.
  Tensor base = from_vector(std::vector<double>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = base.transpose(0, 1);  // (3, 2), strides (1, 3)
  t.set_requires_grad(true);
  REQUIRE_FALSE(t.is_contiguous());
  Tensor c = param({1, 4, 2, 5, 3, 6}, {3, 2});  // the same values, contiguous
  SGD opt_t({t}, {.lr = 0.5, .momentum = 0.9});
  SGD opt_c({c}, {.lr = 0.5, .momentum = 0.9});
  for (int s = 0; s < 3; ++s) {
    set_grad(t, {1, -1, 2, -2, 3, -3});
    set_grad(c, {1, -1, 2, -2, 3, -3});
    opt_t.step();
    opt_c.step();
  }
  CHECK(to_vector<double>(t) == to_vector<double>(c));
  CHECK_FALSE(t.is_contiguous());
}

TEST_CASE("per-group options and lr access") {
  Tensor a = param({1.0}, {1});
  Tensor b = param({1.0}, {1});
  SGD opt({{{a}, {.lr = 0.1}}, {{b}, {.lr = 0.01, .momentum = 0.9, .nesterov = true}}});
  CHECK(opt.num_param_groups() == 2);
  CHECK(opt.lrs() == std::vector<double>{0.1, 0.01});
  CHECK(opt.group_options(1).nesterov);
  set_grad(a, {1.0});
  set_grad(b, {1.0});
  opt.step();
  check_close(a, {0.9});
  check_close(b, {1.0 - 0.01 * 1.9});  // nesterov: g + m * buf
  opt.set_lr(0, 0.5);
  opt.step();
  check_close(a, {0.4});
  // Options changed between steps are checked at the next step.
  opt.group_options(1).momentum = 0.0;
  check_error([&] { opt.step(); }, "nesterov momentum requires a momentum > 0");
  opt.group_options(1).nesterov = false;
  opt.step();
  Tensor c = param({1.0}, {1});
  opt.add_param_group({c}, {.lr = 0.2});
  CHECK(opt.lrs() == std::vector<double>{0.5, 0.01, 0.2});

  // The usage example of engine/optim/optimizer.h.
  const std::vector<Tensor> backbone_params = {param({1.0}, {1}), param({2.0, 3.0}, {2})};
  const std::vector<Tensor> head_params = {param({4.0}, {1})};
  SGD deeplab({{backbone_params, {.lr = 0.01, .momentum = 0.9, .weight_decay = 1e-4}},
               {head_params, {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4}}});
  PolynomialLR poly(deeplab, 100, 0.9);
  deeplab.zero_grad();
  sum(backbone_params[1] * backbone_params[1]).backward();
  deeplab.step();
  poly.step();
  check_close(backbone_params[1], {2.0 - 0.01 * (4.0 + 2e-4), 3.0 - 0.01 * (6.0 + 3e-4)});
  CHECK(deeplab.lrs()[1] == doctest::Approx(0.1 * std::pow(0.99, 0.9)));
}

// ---------------------------------------------------------------------------------------------
// PyTorch trajectories

namespace {

template <class Options>
void apply_common(Options& o, const std::string& key, const json& v) {
  if (key == "lr") {
    o.lr = v.get<double>();
  } else if (key == "weight_decay") {
    o.weight_decay = v.get<double>();
  } else if (key == "maximize") {
    o.maximize = v.get<bool>();
  } else {
    FAIL("unknown option ", key);
  }
}

void apply_options(SGDOptions& o, const json& j) {
  for (const auto& [key, v] : j.items()) {
    if (key == "momentum")
      o.momentum = v.get<double>();
    else if (key == "dampening")
      o.dampening = v.get<double>();
    else if (key == "nesterov")
      o.nesterov = v.get<bool>();
    else
      apply_common(o, key, v);
  }
}
void apply_options(RMSpropOptions& o, const json& j) {
  for (const auto& [key, v] : j.items()) {
    if (key == "momentum")
      o.momentum = v.get<double>();
    else if (key == "alpha")
      o.alpha = v.get<double>();
    else if (key == "eps")
      o.eps = v.get<double>();
    else if (key == "centered")
      o.centered = v.get<bool>();
    else
      apply_common(o, key, v);
  }
}
template <class AdamLike>
void apply_adam_options(AdamLike& o, const json& j) {
  for (const auto& item : j.items()) {
    const std::string& key = item.key();
    const json& v = item.value();
    if (key == "betas") {
      o.beta1 = v.at(0).get<double>();
      o.beta2 = v.at(1).get<double>();
    } else if (key == "eps") {
      o.eps = v.get<double>();
    } else if (key == "amsgrad") {
      o.amsgrad = v.get<bool>();
    } else {
      apply_common(o, key, v);
    }
  }
}
void apply_options(AdamOptions& o, const json& j) {
  apply_adam_options(o, j);
}
void apply_options(AdamWOptions& o, const json& j) {
  apply_adam_options(o, j);
}

// PyTorch's construction: defaults from the keyword arguments, then each group's overrides.
template <class Opt, class Options>
std::unique_ptr<Optimizer> build(const json& c, const std::vector<Tensor>& params) {
  Options defaults;
  apply_options(defaults, c.at("defaults"));
  std::vector<ParamGroupSpec<Options>> groups;
  for (const json& g : c.at("groups")) {
    ParamGroupSpec<Options> spec;
    for (const json& i : g.at("params")) spec.params.push_back(params.at(i.get<size_t>()));
    spec.options = defaults;
    apply_options(spec.options, g.at("options"));
    groups.push_back(spec);
  }
  return std::make_unique<Opt>(groups);
}

std::unique_ptr<Optimizer> build_optimizer(const json& c, const std::vector<Tensor>& params) {
  const std::string kind = c.at("optimizer");
  if (kind == "SGD") return build<SGD, SGDOptions>(c, params);
  if (kind == "RMSprop") return build<RMSprop, RMSpropOptions>(c, params);
  if (kind == "Adam") return build<Adam, AdamOptions>(c, params);
  if (kind == "AdamW") return build<AdamW, AdamWOptions>(c, params);
  FAIL("unknown optimizer ", kind);
  return nullptr;
}

}  // namespace

TEST_CASE("optimisers follow PyTorch's trajectories") {
  if (!test::have_reference("optim.json")) return;
  const json ref = load_reference("optim.json");
  double worst_ulps[2] = {0.0, 0.0};  // f32, f64
  int exact[2] = {0, 0}, total[2] = {0, 0};
  for (const json& c : ref.at("optimizers")) {
    const std::string name = c.at("name");
    CAPTURE(name);
    const bool f64 = c.at("dtype") == "f64";
    const DType dtype = f64 ? DType::f64 : DType::f32;
    const double eps = f64 ? DBL_EPSILON : FLT_EPSILON;
    const double ulps_per_step = f64 ? kF64UlpsPerStep : kF32UlpsPerStep;
    std::vector<Tensor> params;
    std::vector<Shape> shapes;
    for (size_t i = 0; i < c.at("shapes").size(); ++i) {
      shapes.push_back(c.at("shapes")[i].get<Shape>());
      params.push_back(param(doubles(c.at("init")[i]), shapes.back(), dtype));
    }
    std::unique_ptr<Optimizer> opt = build_optimizer(c, params);
    const json& grads = c.at("grads");
    for (size_t step = 0; step < grads.size(); ++step) {
      for (size_t i = 0; i < params.size(); ++i) {
        const json& g = grads[step][i];
        if (g.is_null()) {
          params[i].zero_grad();
        } else {
          set_grad(params[i], doubles(g));
        }
      }
      opt->step();
      for (size_t i = 0; i < params.size(); ++i) {
        const std::vector<double> expected = doubles(c.at("params")[step][i]);
        const std::vector<double> got = to_vector<double>(params[i]);
        REQUIRE(got.size() == expected.size());
        for (size_t k = 0; k < got.size(); ++k) {
          const double ulp = eps * std::max(std::abs(expected[k]), 1.0);
          const double ulps = std::abs(got[k] - expected[k]) / ulp;
          worst_ulps[f64] = std::max(worst_ulps[f64], ulps);
          exact[f64] += got[k] == expected[k];
          total[f64] += 1;
          if (!(ulps <= ulps_per_step * static_cast<double>(step + 1))) {
            CAPTURE(step);
            CAPTURE(i);
            CAPTURE(k);
            CHECK(got[k] == expected[k]);
          }
        }
      }
    }
  }
  MESSAGE("f32: ", exact[0], "/", total[0], " values bit-exact, worst ", worst_ulps[0],
          " ulps; f64: ", exact[1], "/", total[1], " bit-exact, worst ", worst_ulps[1], " ulps");
  CHECK(total[0] > 0);
  CHECK(total[1] > 0);
}

// ---------------------------------------------------------------------------------------------
// Schedulers

namespace {

// The optimiser of the scheduler references: two groups with their own base lrs.
struct LrFixture {
  Tensor a = param({0.0}, {1});
  Tensor b = param({0.0}, {1});
  SGD opt;
  explicit LrFixture(const std::vector<double>& base_lrs)
      : opt({{{a}, {.lr = base_lrs.at(0)}}, {{b}, {.lr = base_lrs.at(1)}}}) {}
};

std::unique_ptr<LRScheduler> make_scheduler(Optimizer& opt, const json& spec) {
  const std::string kind = spec.at("kind");
  const json args = spec.value("args", json::object());
  if (kind == "StepLR") {
    return std::make_unique<StepLR>(opt, args.at("step_size").get<int64_t>(),
                                    args.at("gamma").get<double>());
  }
  if (kind == "PolynomialLR") {
    return std::make_unique<PolynomialLR>(opt, args.at("total_iters").get<int64_t>(),
                                          args.at("power").get<double>());
  }
  if (kind == "CosineAnnealingLR") {
    return std::make_unique<CosineAnnealingLR>(opt, args.at("T_max").get<int64_t>(),
                                               args.at("eta_min").get<double>());
  }
  if (kind == "LinearLR") {
    return std::make_unique<LinearLR>(opt, args.at("start_factor").get<double>(),
                                      args.at("end_factor").get<double>(),
                                      args.at("total_iters").get<int64_t>());
  }
  if (kind == "SequentialLR") {
    std::vector<std::unique_ptr<LRScheduler>> children;
    for (const json& child : spec.at("children")) children.push_back(make_scheduler(opt, child));
    return std::make_unique<SequentialLR>(opt, std::move(children),
                                          spec.at("milestones").get<std::vector<int64_t>>());
  }
  FAIL("unknown scheduler ", kind);
  return nullptr;
}

ReduceLROnPlateauOptions plateau_options(const json& args) {
  ReduceLROnPlateauOptions o;
  for (const auto& [key, v] : args.items()) {
    if (key == "mode")
      o.mode = parse_plateau_mode(v.get<std::string>());
    else if (key == "factor")
      o.factor = v.get<double>();
    else if (key == "patience")
      o.patience = v.get<int64_t>();
    else if (key == "threshold")
      o.threshold = v.get<double>();
    else if (key == "threshold_mode")
      o.threshold_mode = parse_threshold_mode(v.get<std::string>());
    else if (key == "cooldown")
      o.cooldown = v.get<int64_t>();
    else if (key == "min_lr")
      o.min_lrs = v.is_array() ? doubles(v) : std::vector<double>{v.get<double>()};
    else if (key == "eps")
      o.eps = v.get<double>();
    else
      FAIL("unknown option ", key);
  }
  return o;
}

}  // namespace

TEST_CASE("schedulers follow PyTorch's lr sequences exactly") {
  if (!test::have_reference("optim.json")) return;
  const json ref = load_reference("optim.json");
  int cases = 0;
  for (const json& c : ref.at("schedulers")) {
    const std::string name = c.at("name");
    CAPTURE(name);
    LrFixture f(doubles(c.at("base_lrs")));
    const json& lrs = c.at("lrs");
    if (c.at("kind") == "ReduceLROnPlateau") {
      ReduceLROnPlateau s(f.opt, plateau_options(c.at("args")));
      const json& metrics = c.at("metrics");
      for (size_t t = 0; t < metrics.size(); ++t) {
        CAPTURE(t);
        s.step(metrics[t].get<double>());
        CHECK(f.opt.lrs() == doubles(lrs[t]));
        CHECK(s.last_lr() == doubles(lrs[t]));
      }
    } else {
      std::unique_ptr<LRScheduler> s = make_scheduler(f.opt, c);
      CHECK(f.opt.lrs() == doubles(lrs[0]));  // the constructor's initial step
      for (size_t t = 1; t < lrs.size(); ++t) {
        CAPTURE(t);
        f.opt.step();
        s->step();
        // Exact: the same double operations in the same order as lr_scheduler.py.
        CHECK(f.opt.lrs() == doubles(lrs[t]));
        CHECK(s->last_lr() == doubles(lrs[t]));
      }
    }
    ++cases;
  }
  CHECK(cases >= 10);
}

TEST_CASE("poly: the recursive form is PyTorch's, and it is not the closed form to the bit") {
  // lr_t = base * (1 - t/T)^0.9, computed as PyTorch does it, step by step from the previous lr.
  LrFixture f({0.01, 0.007});
  PolynomialLR poly(f.opt, 1000, 0.9);
  int differ = 0;
  double worst = 0.0;
  for (int t = 1; t <= 1000; ++t) {
    poly.step();
    const double closed = 0.01 * std::pow(1.0 - t / 1000.0, 0.9);
    differ += f.opt.lr(0) != closed;
    worst = std::max(worst, std::abs(f.opt.lr(0) - closed) / 0.01);
  }
  CHECK(f.opt.lr(0) == 0.0);
  CHECK(f.opt.lr(1) == 0.0);
  CHECK(differ > 0);     // rounding differs somewhere ...
  CHECK(worst < 1e-13);  // ... in the last bits only
  poly.step();           // past total_iters: unchanged
  CHECK(f.opt.lr(0) == 0.0);
}

TEST_CASE("schedulers: warmup then poly by hand; each group from its own base lr") {
  LrFixture f({0.1, 0.01});
  std::vector<std::unique_ptr<LRScheduler>> children;
  children.push_back(std::make_unique<LinearLR>(f.opt, 0.5, 1.0, 2));
  children.push_back(std::make_unique<PolynomialLR>(f.opt, 4, 1.0));
  SequentialLR s(f.opt, std::move(children), {2});
  CHECK(f.opt.lr(0) == doctest::Approx(0.05));
  CHECK(f.opt.lr(1) == doctest::Approx(0.005));
  const double expected[] = {0.075, 0.1, 0.075, 0.05, 0.025, 0.0, 0.0};
  for (double e : expected) {
    s.step();
    CHECK(f.opt.lr(0) == doctest::Approx(e));
    CHECK(f.opt.lr(1) == doctest::Approx(e / 10));
  }
  CHECK(f.opt.initial_lr(0) == 0.1);
}

TEST_CASE("ReduceLROnPlateau by hand: patience, threshold, cooldown, min_lr") {
  LrFixture f({1.0, 0.1});
  ReduceLROnPlateau s(f.opt, {.mode = PlateauMode::min,
                              .factor = 0.5,
                              .patience = 1,
                              .threshold = 0.1,
                              .threshold_mode = ThresholdMode::abs,
                              .cooldown = 1,
                              .min_lrs = {0.3, 0.0}});
  s.step(1.0);   // best 1.0
  s.step(0.95);  // not better by 0.1: bad 1
  CHECK(f.opt.lr(0) == 1.0);
  s.step(0.95);  // bad 2 > patience: halve, cooldown 1
  CHECK(f.opt.lr(0) == 0.5);
  CHECK(f.opt.lr(1) == 0.05);
  CHECK(s.in_cooldown());
  s.step(0.95);  // in cooldown: bad epochs ignored
  CHECK(s.num_bad_epochs() == 0);
  s.step(0.95);
  s.step(0.95);  // bad 2: halve again, group 0 floored at 0.3
  CHECK(f.opt.lr(0) == 0.3);
  CHECK(f.opt.lr(1) == 0.025);
  CHECK(s.best() == 1.0);
  s.step(0.5);  // better
  CHECK(s.best() == 0.5);
}

TEST_CASE("scheduler state round trip continues the same sequence") {
  auto warmup_cosine = [](Optimizer& opt) {
    std::vector<std::unique_ptr<LRScheduler>> c;
    c.push_back(std::make_unique<LinearLR>(opt, 0.1, 1.0, 4));
    c.push_back(std::make_unique<CosineAnnealingLR>(opt, 9, 1e-4));
    return std::unique_ptr<LRScheduler>(new SequentialLR(opt, std::move(c), {4}));
  };
  std::vector<std::function<std::unique_ptr<LRScheduler>(Optimizer&)>> makers = {
      [](Optimizer& opt) { return std::unique_ptr<LRScheduler>(new StepLR(opt, 3, 0.7)); },
      [](Optimizer& opt) { return std::unique_ptr<LRScheduler>(new PolynomialLR(opt, 20, 0.9)); },
      [](Optimizer& opt) {
        return std::unique_ptr<LRScheduler>(new CosineAnnealingLR(opt, 7, 0.01));
      },
      [](Optimizer& opt) { return std::unique_ptr<LRScheduler>(new LinearLR(opt, 0.2, 0.9, 6)); },
      warmup_cosine};
  for (size_t m = 0; m < makers.size(); ++m) {
    CAPTURE(m);
    LrFixture straight({0.1, 0.03});
    std::unique_ptr<LRScheduler> s = makers[m](straight.opt);
    std::vector<std::vector<double>> expected;
    for (int t = 0; t < 25; ++t) {
      s->step();
      expected.push_back(straight.opt.lrs());
    }
    // Run 8 steps, save, rebuild everything from the config, load, run the rest.
    LrFixture first({0.1, 0.03});
    std::unique_ptr<LRScheduler> s1 = makers[m](first.opt);
    for (int t = 0; t < 8; ++t) s1->step();
    const std::string saved = s1->state().dump();
    LrFixture resumed({0.1, 0.03});
    std::unique_ptr<LRScheduler> s2 = makers[m](resumed.opt);
    s2->load_state(json::parse(saved));
    CHECK(resumed.opt.lrs() == expected[7]);
    for (int t = 8; t < 25; ++t) {
      CAPTURE(t);
      s2->step();
      CHECK(resumed.opt.lrs() == expected[t]);
    }
    CHECK(s2->last_epoch() == s->last_epoch());
  }

  // ReduceLROnPlateau: best (also while still infinite), bad epochs, cooldown.
  const std::vector<double> metrics = {5, 4, 4, 4, 4.5, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2};
  for (size_t cut : {size_t{0}, size_t{3}, size_t{7}}) {
    CAPTURE(cut);
    const ReduceLROnPlateauOptions o{.factor = 0.5, .patience = 1, .cooldown = 2};
    LrFixture straight({0.1, 0.03});
    ReduceLROnPlateau s(straight.opt, o);
    std::vector<std::vector<double>> expected;
    for (double v : metrics) {
      s.step(v);
      expected.push_back(straight.opt.lrs());
    }
    LrFixture first({0.1, 0.03});
    ReduceLROnPlateau s1(first.opt, o);
    for (size_t t = 0; t < cut; ++t) s1.step(metrics[t]);
    const std::string saved = s1.state().dump();
    LrFixture resumed({0.1, 0.03});
    ReduceLROnPlateau s2(resumed.opt, o);
    s2.load_state(json::parse(saved));
    for (size_t t = cut; t < metrics.size(); ++t) {
      s2.step(metrics[t]);
      CHECK(resumed.opt.lrs() == expected[t]);
    }
    CHECK(s2.best() == s.best());
  }
}

// ---------------------------------------------------------------------------------------------
// Optimiser state round trip

TEST_CASE("optimizer state round trip resumes bit for bit") {
  Generator gen(7);
  const std::vector<Shape> shapes = {{4, 5}, {7}, {3}};
  // Gradients for 10 steps; parameter 2 misses steps 0, 1 and 5 (lagging step count).
  std::vector<std::vector<Tensor>> grads(10);
  for (int s = 0; s < 10; ++s) {
    for (size_t i = 0; i < shapes.size(); ++i) {
      const bool missing = i == 2 && (s < 2 || s == 5);
      grads[s].push_back(missing ? Tensor() : randn(shapes[i], gen));
    }
  }
  std::vector<Tensor> init;
  for (const Shape& s : shapes) init.push_back(randn(s, gen));
  auto fresh = [&] {
    std::vector<Tensor> ps;
    for (const Tensor& t : init) {
      Tensor p = t.clone();
      p.set_requires_grad(true);
      ps.push_back(p);
    }
    return ps;
  };
  auto run = [&](Optimizer& opt, std::vector<Tensor>& ps, int from, int to) {
    for (int s = from; s < to; ++s) {
      for (size_t i = 0; i < ps.size(); ++i) {
        if (grads[s][i].defined()) {
          ps[i].set_grad(grads[s][i]);
        } else {
          ps[i].zero_grad();
        }
      }
      opt.step();
    }
  };
  using Maker = std::function<std::unique_ptr<Optimizer>(const std::vector<Tensor>&)>;
  const std::vector<Maker> makers = {
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<SGD>(std::vector<ParamGroupSpec<SGDOptions>>{
            {{ps[0]}, {.lr = 0.1, .momentum = 0.9, .nesterov = true}},
            {{ps[1], ps[2]}, {.lr = 0.05, .momentum = 0.5, .dampening = 0.1}}});
      },
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<RMSprop>(
            ps, RMSpropOptions{.lr = 0.01, .momentum = 0.9, .centered = true});
      },
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<Adam>(std::vector<ParamGroupSpec<AdamOptions>>{
            {{ps[0], ps[2]}, {.lr = 0.01, .amsgrad = true}}, {{ps[1]}, {.lr = 0.003}}});
      },
      [](const std::vector<Tensor>& ps) {
        return std::make_unique<AdamW>(ps, AdamWOptions{.lr = 0.01, .weight_decay = 0.1});
      }};
  for (size_t m = 0; m < makers.size(); ++m) {
    CAPTURE(m);
    std::vector<Tensor> straight = fresh();
    auto opt = makers[m](straight);
    run(*opt, straight, 0, 10);

    std::vector<Tensor> first = fresh();
    auto opt1 = makers[m](first);
    run(*opt1, first, 0, 4);
    opt1->set_lr(0, opt1->lr(0));  // unchanged, but goes through the saved lr
    // The checkpoint: copies of the state tensors and of the parameters, as a file would hold.
    std::vector<std::pair<std::string, Tensor>> saved;
    for (const auto& [name, t] : opt1->state_tensors()) saved.emplace_back(name, t.clone());
    std::vector<Tensor> resumed = fresh();
    {
      NoGradGuard ng;
      for (size_t i = 0; i < resumed.size(); ++i) resumed[i].copy_(first[i]);
    }
    auto opt2 = makers[m](resumed);
    opt2->load_state_tensors(saved);
    CHECK(opt2->param_step(0, 0) == 4);
    run(*opt2, resumed, 4, 10);
    for (size_t i = 0; i < straight.size(); ++i) {
      CHECK(to_vector<float>(resumed[i]) == to_vector<float>(straight[i]));
    }
    // The state is the same too.
    auto a = opt->state_tensors();
    auto b = opt2->state_tensors();
    REQUIRE(a.size() == b.size());
    for (size_t k = 0; k < a.size(); ++k) {
      CHECK(a[k].first == b[k].first);
      CHECK(to_vector<double>(a[k].second) == to_vector<double>(b[k].second));
    }
  }
}

TEST_CASE("load_state_tensors: errors name the entry, and nothing changes on error") {
  Tensor a = param({1, 2, 3, 4, 5, 6}, {2, 3}, DType::f32);
  Tensor b = param({1, 2}, {2}, DType::f32);
  Adam opt({a, b}, {.lr = 0.01, .amsgrad = true});
  set_grad(a, {1, 1, 1, 1, 1, 1});
  set_grad(b, {1, 1});
  opt.step();
  const auto good = opt.state_tensors();
  auto without = [&](const std::string& name) {
    std::vector<std::pair<std::string, Tensor>> v;
    for (const auto& e : good) {
      if (e.first != name) v.push_back(e);
    }
    return v;
  };
  auto with = [&](const std::string& name, const Tensor& t) {
    auto v = good;
    bool replaced = false;
    for (auto& e : v) {
      if (e.first == name) {
        e.second = t;
        replaced = true;
      }
    }
    if (!replaced) v.emplace_back(name, t);
    return v;
  };
  check_error([&] { opt.load_state_tensors(without("state.0.1.max_exp_avg_sq")); },
              "Adam: load_state_tensors: missing 'state.0.1.max_exp_avg_sq'");
  check_error([&] { opt.load_state_tensors(without("state.0.0.step")); },
              "missing 'state.0.0.step'");
  check_error(
      [&] {
        opt.load_state_tensors(with("state.0.0.exp_avg", zeros({3, 2})));
      },
      "entry 'state.0.0.exp_avg' has shape (3,2) but parameter 0.0 has shape (2,3)");
  check_error(
      [&] {
        opt.load_state_tensors(with("state.0.0.momentum_buffer", zeros({2, 3})));
      },
      "unexpected entry 'state.0.0.momentum_buffer' (Adam keeps no 'momentum_buffer')");
  check_error([&] { opt.load_state_tensors(with("state.0.2.exp_avg", zeros({2}))); },
              "names parameter 0.2 but param group 0 has 2 parameters");
  check_error([&] { opt.load_state_tensors(with("state.1.0.step", zeros({}))); },
              "the optimizer has 1 param groups");
  check_error([&] { opt.load_state_tensors(with("model.weight", zeros({2}))); },
              "unexpected entry 'model.weight'");
  check_error([&] { opt.load_state_tensors(with("state.0.0.step", full({}, -1.0))); },
              "holds -1, not a step count");
  check_error([&] { opt.load_state_tensors(with("param_groups.0.lr", full({}, -0.5))); },
              "holds -0.5, not a valid lr");
  // Nothing changed: the state is still the one from the step.
  const auto after = opt.state_tensors();
  REQUIRE(after.size() == good.size());
  for (size_t k = 0; k < after.size(); ++k) {
    CHECK(after[k].first == good[k].first);
    CHECK(to_vector<double>(after[k].second) == to_vector<double>(good[k].second));
  }
  CHECK(opt.param_step(0, 0) == 1);
  // A parameter without entries starts afresh; the lr entry is optional.
  opt.load_state_tensors({});
  CHECK(opt.param_step(0, 0) == 0);
  CHECK(opt.state_tensors().size() == 1);
}

// ---------------------------------------------------------------------------------------------
// Bad input

TEST_CASE("invalid hyperparameters name the option and the value") {
  Tensor p = param({1.0}, {1});
  check_error([&] { SGD({p}, {}); }, "SGD: lr is required");
  check_error([&] { SGD({p}, {.lr = -0.1}); }, "SGD: invalid lr -0.1 in param group 0");
  check_error([&] { SGD({p}, {.lr = 0.1, .momentum = -1}); }, "SGD: invalid momentum -1");
  check_error([&] { SGD({p}, {.lr = 0.1, .weight_decay = -0.5}); },
              "SGD: invalid weight_decay -0.5");
  check_error([&] { SGD({p}, {.lr = 0.1, .nesterov = true}); },
              "SGD: nesterov momentum requires a momentum > 0 and zero dampening; param group 0 "
              "has momentum 0 and dampening 0");
  check_error([&] { SGD({p}, {.lr = 0.1, .momentum = 0.9, .dampening = 0.1, .nesterov = true}); },
              "has momentum 0.9 and dampening 0.1");
  check_error([&] { RMSprop({p}, {.alpha = -0.5}); }, "RMSprop: invalid alpha -0.5");
  check_error([&] { RMSprop({p}, {.eps = -1e-8}); }, "RMSprop: invalid eps -1e-08");
  check_error([&] { RMSprop({p}, {.momentum = -0.9}); }, "RMSprop: invalid momentum -0.9");
  check_error([&] { Adam({p}, {.beta1 = 1.0}); },
              "Adam: invalid beta1 1 in param group 0 (must be in [0, 1))");
  check_error([&] { Adam({p}, {.beta2 = -0.1}); }, "Adam: invalid beta2 -0.1");
  check_error([&] { Adam({p}, {.eps = -1.0}); }, "Adam: invalid eps -1");
  check_error([&] { AdamW({p}, {.lr = -1e-3}); }, "AdamW: invalid lr -0.001");
  check_error([&] { AdamW({p}, {.weight_decay = -1.0}); }, "AdamW: invalid weight_decay -1");
  Tensor q = param({1.0}, {1});
  check_error(
      [&] {
        Adam(std::vector<ParamGroupSpec<AdamOptions>>{{{p}, {}}, {{q}, {.beta1 = 2}}});
      },
      "Adam: invalid beta1 2 in param group 1");
  Adam ok({p});
  check_error([&] { ok.set_lr(0, -1.0); }, "Adam: invalid lr -1 for param group 0");
  check_error([&] { ok.set_lr(3, 0.1); }, "Adam: no param group 3 (1 groups)");
}

TEST_CASE("invalid parameters and gradients") {
  Tensor p = param({1.0, 2.0}, {2});
  Tensor frozen = from_vector(std::vector<double>{1.0}, {1});
  check_error([&] { SGD({frozen}, {.lr = 0.1}); },
              "SGD: parameter 0.0 (f64 (1) cpu) does not require grad");
  Tensor derived = p * 2.0;
  check_error([&] { SGD({derived}, {.lr = 0.1}); }, "is not a leaf tensor");
  check_error(
      [&] {
        SGD({p, p}, {.lr = 0.1});
      },
      "parameter 0.1 (f64 (2) cpu) is also parameter 0.0");
  check_error(
      [&] {
        SGD(std::vector<ParamGroupSpec<SGDOptions>>{{{p}, {.lr = 0.1}}, {{p}, {.lr = 0.2}}});
      },
      "parameter 1.0 (f64 (2) cpu) is also parameter 0.0");
  check_error([&] { SGD({Tensor()}, {.lr = 0.1}); }, "SGD: parameter 0.0 is undefined");
  check_error([&] { SGD(std::vector<Tensor>{}, {.lr = 0.1}); }, "SGD: got an empty parameter list");
  Tensor ints = from_vector(std::vector<int32_t>{1}, {1});
  check_error([&] { SGD({ints}, {.lr = 0.1}); }, "only floating tensors can be optimised");

  // A bad gradient is found before anything changes, even in an earlier parameter.
  Tensor ok = param({1.0}, {1});
  SGD opt({ok, p}, {.lr = 0.1, .momentum = 0.9});
  set_grad(ok, {1.0});
  p.set_grad(from_vector(std::vector<float>{1.0f, 1.0f}, {2}));
  check_error([&] { opt.step(); },
              "SGD: the gradient of parameter 0.1 is f32 (2) cpu but the parameter is f64 (2) cpu");
  CHECK(to_vector<double>(ok) == std::vector<double>{1.0});
  CHECK(opt.param_step(0, 0) == 0);
  CHECK(opt.state_tensors().size() == 1);
}

TEST_CASE("invalid scheduler arguments") {
  LrFixture f({0.1, 0.01});
  check_error([&] { StepLR(f.opt, 0); }, "StepLR: invalid step_size 0 (must be >= 1)");
  check_error([&] { StepLR(f.opt, 2, -0.5); }, "StepLR: invalid gamma -0.5");
  check_error([&] { PolynomialLR(f.opt, 0); }, "PolynomialLR: invalid total_iters 0");
  check_error([&] { PolynomialLR(f.opt, 10, -1.0); }, "PolynomialLR: invalid power -1");
  check_error([&] { CosineAnnealingLR(f.opt, 0); }, "CosineAnnealingLR: invalid T_max 0");
  check_error([&] { CosineAnnealingLR(f.opt, 5, -1.0); }, "CosineAnnealingLR: invalid eta_min -1");
  check_error([&] { LinearLR(f.opt, 0.0); },
              "LinearLR: invalid start_factor 0 (must be in (0, 1])");
  check_error([&] { LinearLR(f.opt, 0.5, 1.5); }, "LinearLR: invalid end_factor 1.5");
  check_error([&] { LinearLR(f.opt, 0.5, 1.0, 0); }, "LinearLR: invalid total_iters 0");
  check_error([&] { ReduceLROnPlateau(f.opt, {.factor = 1.0}); },
              "ReduceLROnPlateau: invalid factor 1 (must be in [0, 1))");
  check_error([&] { ReduceLROnPlateau(f.opt, {.patience = -1}); }, "invalid patience -1");
  check_error(
      [&] {
        ReduceLROnPlateau(f.opt, {.min_lrs = {0.1, 0.2, 0.3}});
      },
      "ReduceLROnPlateau: expected 2 min_lrs, got 3");
  check_error([&] { parse_plateau_mode("lowest"); },
              "mode 'lowest' is unknown (expected min or max)");
  check_error([&] { parse_threshold_mode("ratio"); }, "threshold_mode 'ratio' is unknown");

  auto two = [&](Optimizer& opt) {
    std::vector<std::unique_ptr<LRScheduler>> c;
    c.push_back(std::make_unique<LinearLR>(opt));
    c.push_back(std::make_unique<StepLR>(opt, 2));
    return c;
  };
  check_error([&] { SequentialLR(f.opt, two(f.opt), {}); },
              "SequentialLR: 2 schedulers need 1 milestones, got 0");
  check_error([&] { SequentialLR(f.opt, two(f.opt), {0}); },
              "milestones must be positive and strictly increasing; milestone 0 is 0");
  LrFixture other({0.1, 0.01});
  check_error([&] { SequentialLR(f.opt, two(other.opt), {3}); },
              "SequentialLR: scheduler 0 (LinearLR) belongs to a different optimizer");

  // load_state: wrong type, missing keys, wrong sizes.
  StepLR s(f.opt, 2);
  check_error(
      [&] {
        s.load_state(json{{"type", "LinearLR"}});
      },
      "StepLR: load_state: the state is for \"LinearLR\", not StepLR");
  json st = s.state();
  st.erase("last_epoch");
  check_error([&] { s.load_state(st); }, "StepLR: load_state: missing key 'last_epoch'");
  st = s.state();
  st["base_lrs"] = {0.1};
  check_error(
      [&] { s.load_state(st); },
      "StepLR: load_state: key 'base_lrs' has 1 values but the optimizer has 2 param groups");
  st = s.state();
  st["step_count"] = "three";
  check_error([&] { s.load_state(st); }, "key 'step_count' must be an integer, got \"three\"");
}
