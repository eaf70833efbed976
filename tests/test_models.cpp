// Models against PyTorch: architecture, parameter names, forward and backward.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>

#include "engine/io/safetensors.h"
#include "engine/ops.h"
#include "models/unet.h"
#include "tests/support/reference.h"

using namespace seg;

namespace {

// f64 on both sides: the only differences are summation orders, ~1e-16 relative per operation over
// a few hundred operations in depth.
constexpr double kF64Tolerance = 1e-9;

double max_rel_error(const Tensor& a, const Tensor& b) {
  std::vector<double> x = to_vector<double>(a), y = to_vector<double>(b);
  REQUIRE(x.size() == y.size());
  double scale = 1.0, err = 0.0;
  for (double v : y) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < x.size(); ++i) err = std::max(err, std::abs(x[i] - y[i]));
  return err / scale;
}

void check_unet(const std::string& file, bool bilinear) {
  if (!test::have_reference(file)) return;
  NamedTensors ref = load_safetensors(test::reference_path(file));
  auto get = [&](const std::string& name) {
    for (auto& [n, t] : ref) {
      if (n == name) return t;
    }
    FAIL("reference tensor missing: ", name);
    return Tensor();
  };
  Generator gen(0);
  models::UNet net({3, 5, 4, 4, bilinear, true}, gen);
  net.to(DType::f64);
  nn::StateDict state;
  for (auto& [n, t] : ref) {
    if (n.rfind("state.", 0) == 0) state.emplace_back(n.substr(6), t);
  }
  nn::LoadReport report = net.load_state_dict(state);  // strict: every name and shape matches
  CHECK(report.ok());
  CHECK(report.loaded.size() == state.size());

  Tensor x = get("input").clone();
  x.set_requires_grad(true);
  Tensor out = net.forward(x);
  CHECK(out.sizes() == Shape{2, 5, 35, 37});
  CHECK(max_rel_error(out, get("output")) < kF64Tolerance);
  sum(out * get("projection")).backward();
  CHECK(max_rel_error(x.grad(), get("grad.input")) < kF64Tolerance);
  for (auto& [name, p] : net.named_parameters()) {
    CAPTURE(name);
    CHECK(max_rel_error(p.grad(), get("grad." + name)) < kF64Tolerance);
  }
  for (auto& [name, b] : net.named_buffers()) {
    CAPTURE(name);
    CHECK(max_rel_error(b, get("after." + name)) < kF64Tolerance);
  }
}

}  // namespace

TEST_CASE("UNet (transposed-conv up) matches Pytorch-UNet: names, output, gradients, BN statistics") {
  check_unet("unet_transposed.safetensors", false);
}

TEST_CASE("UNet (bilinear up) matches Pytorch-UNet: names, output, gradients, BN statistics") {
  check_unet("unet_bilinear.safetensors", true);
}
