// nn: Module registration, PyTorch names and order (checked against lists printed by PyTorch 1.13
// and against tests/reference/ref_state_dict.py), train/eval, state_dict save/load and its report,
// the layers' parameter shapes, default initialisations (statistics of large draws) and forward
// behaviour (BatchNorm's running statistics, Dropout), and the init functions.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/nn/init.h"
#include "engine/nn/layers.h"
#include "engine/nn/module.h"
#include "engine/ops.h"
#include "tests/support/reference.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::test;
namespace fs = std::filesystem;

namespace {

// Statistics of large draws. With n >= 50k samples the standard error of the sample std is below
// 0.2% (uniform) / 0.3% (normal) of the true std, and of the mean below 0.5% of the std: the
// tolerances are about 6 standard errors, so a correct fill never fails them, while a wrong fan or
// gain (factors of sqrt(2), sqrt(3) or more) always does.
constexpr double kUniformStdRelTol = 0.01;
constexpr double kNormalStdRelTol = 0.02;
constexpr double kMeanTolInStds = 0.03;
// The largest of n >= 50k uniform draws lies within 0.1% of the bound (the chance it does not is
// below e^-25).
constexpr double kUniformEdgeRelTol = 1e-3;
// The forward pass of the reference network in f32: PyTorch and we sum convolutions and batch
// statistics in different orders; values are O(1), so agreement to 1e-4 is what f32 round-off
// through five layers allows, while any wiring error is O(1).
constexpr double kForwardTol = 1e-4;

struct Stats {
  double mean = 0, std = 0, min = 0, max = 0;
};

Stats stats_of(const Tensor& t) {
  std::vector<double> v = to_vector<double>(t);
  Stats s;
  s.min = *std::min_element(v.begin(), v.end());
  s.max = *std::max_element(v.begin(), v.end());
  for (double x : v) s.mean += x;
  s.mean /= static_cast<double>(v.size());
  for (double x : v) s.std += (x - s.mean) * (x - s.mean);
  s.std = std::sqrt(s.std / static_cast<double>(v.size() - 1));
  return s;
}

// Checks that `t` looks like U(-bound, bound).
void check_uniform(const Tensor& t, double bound) {
  CAPTURE(t.str());
  CAPTURE(bound);
  Stats s = stats_of(t);
  const double std = bound / std::sqrt(3.0);
  CHECK(s.min >= -bound);
  CHECK(s.max <= bound);
  CHECK(s.max >= bound * (1.0 - kUniformEdgeRelTol));
  CHECK(s.min <= -bound * (1.0 - kUniformEdgeRelTol));
  CHECK(std::abs(s.std - std) <= kUniformStdRelTol * std);
  CHECK(std::abs(s.mean) <= kMeanTolInStds * std);
}

// Checks that `t` looks like N(0, std^2).
void check_normal(const Tensor& t, double std) {
  CAPTURE(t.str());
  CAPTURE(std);
  Stats s = stats_of(t);
  CHECK(std::abs(s.std - std) <= kNormalStdRelTol * std);
  CHECK(std::abs(s.mean) <= kMeanTolInStds * std);
  CHECK(s.max > 3.0 * std);  // tails exist: not a uniform with the same std (max sqrt(3) std)
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * dtype_size(ca.dtype())) == 0;
}

std::vector<std::string> names_of(const std::vector<std::pair<std::string, Tensor>>& items) {
  std::vector<std::string> out;
  for (const auto& item : items) out.push_back(item.first);
  return out;
}

// A custom module mixing its own parameter and buffers with children (PyTorch equivalent in the
// "names and order" test).
struct Block : nn::Module {
  explicit Block(Generator& gen) : Module("Block") {
    scale = register_parameter("scale", ones({4}));
    conv = register_module(
        "conv", std::make_shared<nn::Conv2d>(2, 4, 3, gen, Conv2dOptions::make(1, 1), false));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(4));
    register_buffer("step", zeros({}, DType::i64));
    register_buffer("scratch", zeros({3}), /*persistent=*/false);
  }
  Tensor scale;
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
};

struct Net : nn::Module {
  explicit Net(Generator& gen) : Module("Net") {
    blocks = register_module("blocks", std::make_shared<nn::Sequential>());
    blocks->append(std::make_shared<Block>(gen));
    blocks->append(std::make_shared<nn::ReLU>());
    blocks->append(std::make_shared<Block>(gen));
    head = register_module("head", std::make_shared<nn::Linear>(4, 2, gen));
    register_module("head2", head);  // shared, as `self.head2 = self.head` in PyTorch
  }
  std::shared_ptr<nn::Sequential> blocks;
  std::shared_ptr<nn::Linear> head;
};

// The network of tests/reference/ref_state_dict.py.
struct ConvBlock : nn::Module {
  ConvBlock(int64_t cin, int64_t cout, Generator& gen) : Module("ConvBlock") {
    conv = register_module(
        "conv", std::make_shared<nn::Conv2d>(cin, cout, 3, gen, Conv2dOptions::make(1, 1), false));
    bn = register_module("bn", std::make_shared<nn::BatchNorm2d>(cout));
    relu = register_module("relu", std::make_shared<nn::ReLU>());
    pool = register_module("pool", std::make_shared<nn::MaxPool2d>(2));
  }
  Tensor forward(const Tensor& x) override {
    return pool->forward(relu->forward(bn->forward(conv->forward(x))));
  }
  std::shared_ptr<nn::Conv2d> conv;
  std::shared_ptr<nn::BatchNorm2d> bn;
  std::shared_ptr<nn::ReLU> relu;
  std::shared_ptr<nn::MaxPool2d> pool;
};

struct RefNet : nn::Module {
  RefNet(Generator& gen, std::shared_ptr<Generator> dropout_gen) : Module("RefNet") {
    stem = register_module(
        "stem", std::make_shared<nn::Sequential>(std::vector<std::shared_ptr<nn::Module>>{
                    std::make_shared<nn::Conv2d>(3, 8, 3, gen, Conv2dOptions::make(1, 1)),
                    std::make_shared<nn::BatchNorm2d>(8), std::make_shared<nn::ReLU>(),
                    std::make_shared<nn::MaxPool2d>(2)}));
    layer1 = register_module("layer1", std::make_shared<nn::Sequential>());
    layer1->append(std::make_shared<ConvBlock>(8, 16, gen));
    layer1->append(std::make_shared<ConvBlock>(16, 16, gen));
    up = register_module("up", std::make_shared<nn::ConvTranspose2d>(
                                   16, 4, 2, gen, ConvTranspose2dOptions::make(2, 0)));
    head = register_module("head", std::make_shared<nn::Sequential>());
    head->append(std::make_shared<nn::Flatten>());
    head->append(std::make_shared<nn::Linear>(64, 10, gen));
    head->append(std::make_shared<nn::ReLU>());
    head->append(std::make_shared<nn::Dropout>(0.5, dropout_gen));
    head->append(std::make_shared<nn::Linear>(10, 3, gen));
  }
  Tensor forward(const Tensor& x) override {
    return head->forward(up->forward(layer1->forward(stem->forward(x))));
  }
  std::shared_ptr<nn::Sequential> stem, layer1, head;
  std::shared_ptr<nn::ConvTranspose2d> up;
};

}  // namespace

// =============================================================================================
// init

TEST_CASE("init: fans and gains as PyTorch") {
  using namespace nn::init;
  Fans f = calculate_fans(empty({10, 20}));  // Linear (out, in)
  CHECK(f.fan_in == 20);
  CHECK(f.fan_out == 10);
  f = calculate_fans(empty({64, 32, 3, 5}));  // Conv2d (out, in, kh, kw)
  CHECK(f.fan_in == 32 * 15);
  CHECK(f.fan_out == 64 * 15);
  f = calculate_fans(empty({16, 4, 2, 2}));  // ConvTranspose2d (in, out, kh, kw): size(1) is "in"
  CHECK(f.fan_in == 16);
  CHECK(f.fan_out == 64);
  CHECK(contains(error_of([] { calculate_fans(empty({7})); }), "fewer than 2 dims"));

  CHECK(calculate_gain(Nonlinearity::linear) == 1.0);
  CHECK(calculate_gain(Nonlinearity::conv2d) == 1.0);
  CHECK(calculate_gain(Nonlinearity::sigmoid) == 1.0);
  CHECK(calculate_gain(Nonlinearity::tanh) == doctest::Approx(5.0 / 3.0));
  CHECK(calculate_gain(Nonlinearity::relu) == doctest::Approx(std::sqrt(2.0)));
  CHECK(calculate_gain(Nonlinearity::selu) == doctest::Approx(0.75));
  CHECK(calculate_gain(Nonlinearity::leaky_relu) == doctest::Approx(std::sqrt(2.0 / (1 + 1e-4))));
  CHECK(calculate_gain(Nonlinearity::leaky_relu, 0.0) == doctest::Approx(std::sqrt(2.0)));
  // a = sqrt(5), PyTorch's layer default: gain sqrt(1/3), so the kaiming bound is 1/sqrt(fan_in).
  CHECK(calculate_gain(Nonlinearity::leaky_relu, std::sqrt(5.0)) ==
        doctest::Approx(std::sqrt(1.0 / 3)));
  Tensor w = empty({8, 100});
  CHECK(kaiming_uniform_bound(w, std::sqrt(5.0), FanMode::fan_in, Nonlinearity::leaky_relu) ==
        doctest::Approx(0.1));
}

TEST_CASE("init: large draws match the target distributions") {
  using namespace nn::init;
  Generator gen(1234);
  Tensor w = empty({128, 64, 3, 3});  // 73728 values; fan_in 576, fan_out 1152

  kaiming_uniform_(w, gen);  // leaky_relu with slope a = 0: gain sqrt(2), fan_in
  check_uniform(w, std::sqrt(3.0) * std::sqrt(2.0) / std::sqrt(576.0));
  kaiming_uniform_(w, gen, 0.0, FanMode::fan_out, Nonlinearity::relu);
  check_uniform(w, std::sqrt(3.0) * std::sqrt(2.0) / std::sqrt(1152.0));
  kaiming_uniform_(w, gen, std::sqrt(5.0));
  check_uniform(w, 1.0 / std::sqrt(576.0));

  kaiming_normal_(w, gen, 0.0, FanMode::fan_out, Nonlinearity::relu);  // torchvision's ResNet init
  check_normal(w, std::sqrt(2.0) / std::sqrt(1152.0));
  kaiming_normal_(w, gen, 1.0);  // leaky_relu with slope 1: gain 1
  check_normal(w, 1.0 / std::sqrt(576.0));

  xavier_uniform_(w, gen);
  check_uniform(w, std::sqrt(6.0 / (576.0 + 1152.0)));
  xavier_uniform_(w, gen, 2.0);
  check_uniform(w, 2.0 * std::sqrt(6.0 / (576.0 + 1152.0)));
  xavier_normal_(w, gen);
  check_normal(w, std::sqrt(2.0 / (576.0 + 1152.0)));

  uniform_(w, gen, -0.5, 0.5);
  check_uniform(w, 0.5);
  normal_(w, gen, 0.0, 0.02);
  check_normal(w, 0.02);
  Tensor shifted = empty({100000}, DType::f64);
  normal_(shifted, gen, 3.0, 0.5);
  Stats s = stats_of(shifted);
  CHECK(std::abs(s.mean - 3.0) <= kMeanTolInStds * 0.5);
  CHECK(std::abs(s.std - 0.5) <= kNormalStdRelTol * 0.5);

  constant_(w, 0.25);
  CHECK(stats_of(w).min == 0.25f);
  CHECK(stats_of(w).max == 0.25f);
  zeros_(w);
  CHECK(stats_of(w).max == 0.0);
  ones_(w);
  CHECK(stats_of(w).min == 1.0);
}

TEST_CASE("init: reproducible from the seed, in place, no autograd, empty tensors allowed") {
  using namespace nn::init;
  Generator g1(7), g2(7), g3(8);
  Tensor a = empty({4, 5}), b = empty({4, 5}), c = empty({4, 5});
  kaiming_uniform_(a, g1);
  kaiming_uniform_(b, g2);
  kaiming_uniform_(c, g3);
  CHECK(same_bytes(a, b));
  CHECK_FALSE(same_bytes(a, c));
  // Successive draws differ (the generator advances).
  kaiming_uniform_(b, g2);
  CHECK_FALSE(same_bytes(a, b));

  // A parameter requiring grad is filled in place, without a graph.
  Tensor p = zeros({3, 3});
  p.set_requires_grad(true);
  Tensor handle = p;
  Tensor r = xavier_uniform_(p, g1);
  CHECK(r.same(p));
  CHECK(handle.grad_fn() == nullptr);
  CHECK(stats_of(handle).max > 0.0);

  Tensor e = empty({0, 4});
  CHECK_NOTHROW(kaiming_uniform_(e, g1));
  CHECK_NOTHROW(normal_(e, g1));
  CHECK(contains(error_of([&] { kaiming_uniform_(empty({5}), g1); }), "fewer than 2 dims"));
  CHECK(contains(error_of([&] { uniform_(zeros({3}, DType::i32), g1); }), "not floating"));
}

// =============================================================================================
// Module

TEST_CASE("Module: names and order as PyTorch (parameters, buffers, state_dict, modules)") {
  Generator gen(0);
  Net net(gen);
  // Printed by PyTorch 1.13 for the same structure (see Block / Net above).
  const std::vector<std::string> state_dict_names = {"blocks.0.scale",
                                                     "blocks.0.step",
                                                     "blocks.0.conv.weight",
                                                     "blocks.0.bn.weight",
                                                     "blocks.0.bn.bias",
                                                     "blocks.0.bn.running_mean",
                                                     "blocks.0.bn.running_var",
                                                     "blocks.0.bn.num_batches_tracked",
                                                     "blocks.2.scale",
                                                     "blocks.2.step",
                                                     "blocks.2.conv.weight",
                                                     "blocks.2.bn.weight",
                                                     "blocks.2.bn.bias",
                                                     "blocks.2.bn.running_mean",
                                                     "blocks.2.bn.running_var",
                                                     "blocks.2.bn.num_batches_tracked",
                                                     "head.weight",
                                                     "head.bias",
                                                     "head2.weight",
                                                     "head2.bias"};
  const std::vector<std::string> parameter_names = {"blocks.0.scale",     "blocks.0.conv.weight",
                                                    "blocks.0.bn.weight", "blocks.0.bn.bias",
                                                    "blocks.2.scale",     "blocks.2.conv.weight",
                                                    "blocks.2.bn.weight", "blocks.2.bn.bias",
                                                    "head.weight",        "head.bias"};
  const std::vector<std::string> buffer_names = {"blocks.0.step",
                                                 "blocks.0.scratch",
                                                 "blocks.0.bn.running_mean",
                                                 "blocks.0.bn.running_var",
                                                 "blocks.0.bn.num_batches_tracked",
                                                 "blocks.2.step",
                                                 "blocks.2.scratch",
                                                 "blocks.2.bn.running_mean",
                                                 "blocks.2.bn.running_var",
                                                 "blocks.2.bn.num_batches_tracked"};
  const std::vector<std::string> module_names = {
      "",         "blocks",   "blocks.0",      "blocks.0.conv", "blocks.0.bn",
      "blocks.1", "blocks.2", "blocks.2.conv", "blocks.2.bn",   "head"};
  nn::StateDict sd = net.state_dict();
  CHECK(names_of(sd) == state_dict_names);
  CHECK(names_of(net.named_parameters()) == parameter_names);
  CHECK(names_of(net.named_buffers()) == buffer_names);
  std::vector<std::string> modules;
  for (const auto& [name, m] : net.named_modules()) modules.push_back(name);
  CHECK(modules == module_names);
  CHECK(net.named_modules()[3].second->type_name() == "Conv2d");
  CHECK(net.parameters().size() == parameter_names.size());

  // Non-recursive lists; the shared head appears under both names in the state_dict and is the
  // same storage.
  CHECK(names_of(net.blocks->at<Block>(0)->named_parameters(false)) ==
        std::vector<std::string>{"scale"});
  CHECK(names_of(net.blocks->at<Block>(0)->named_buffers(false)) ==
        std::vector<std::string>{"step", "scratch"});
  CHECK(sd[16].second.data_ptr() == sd[18].second.data_ptr());

  // Shapes, dtypes, and the state_dict's tensors: detached views of the module's own storage.
  CHECK(sd[2].second.sizes() == Shape{4, 2, 3, 3});
  CHECK(sd[7].second.dtype() == DType::i64);
  CHECK(sd[7].second.dim() == 0);
  CHECK_FALSE(sd[0].second.requires_grad());
  CHECK(net.named_parameters()[0].second.requires_grad());
  CHECK(sd[0].second.data_ptr() == net.blocks->at<Block>(0)->scale.data_ptr());

  // Lookups of this module's own members.
  auto block = net.blocks->at<Block>(2);
  CHECK(block->parameter("scale").same(block->scale));
  CHECK(block->buffer("step").dtype() == DType::i64);
  CHECK(block->child("bn").get() == block->bn.get());
  CHECK(contains(error_of([&] { block->parameter("nope"); }),
                 "Block: no parameter 'nope' (has: scale)"));
  CHECK(contains(error_of([&] { block->buffer("nope"); }), "has: step, scratch"));
  CHECK(contains(error_of([&] { block->child("nope"); }), "has: conv, bn"));
  CHECK(contains(error_of([&] { net.blocks->at<nn::Linear>(1); }), "child 1 is a ReLU"));
  CHECK(contains(error_of([&] { (*net.blocks)[3]; }), "index 3 out of range for 3 modules"));
}

TEST_CASE("Module: registration errors, base forward, train/eval, zero_grad") {
  nn::Module m("Custom");
  m.register_parameter("w", zeros({2}));
  CHECK(m.parameter("w").requires_grad());
  CHECK(contains(error_of([&] { m.register_parameter("w", zeros({2})); }),
                 "Custom: cannot register parameter 'w'"));
  CHECK(contains(error_of([&] { m.register_buffer("w", zeros({2})); }), "'w'"));
  CHECK(contains(error_of([&] { m.register_module("w", std::make_shared<nn::ReLU>()); }), "'w'"));
  CHECK(
      contains(error_of([&] { m.register_parameter("a.b", zeros({2})); }), "may not contain '.'"));
  CHECK(contains(error_of([&] { m.register_parameter("", zeros({2})); }), "empty name"));
  CHECK(contains(error_of([&] { m.register_parameter("i", zeros({2}, DType::i32)); }),
                 "must be floating"));
  Tensor leaf = ones({2});
  leaf.set_requires_grad(true);
  CHECK(contains(error_of([&] { m.register_parameter("y", leaf * 2.0); }), "must be a leaf"));
  CHECK(contains(error_of([&] { m.register_module("n", std::shared_ptr<nn::Module>()); }), "null"));

  // The base forward names the module type.
  CHECK(
      contains(error_of([&] { m.forward(zeros({1})); }), "Custom: forward(Tensor) is not defined"));
  Generator gen(0);
  Net net(gen);
  CHECK(contains(error_of([&] { net(zeros({1})); }), "Net: forward(Tensor) is not defined"));

  // train()/eval() reach every descendant.
  CHECK(net.is_training());
  net.eval();
  for (const auto& [name, mod] : net.named_modules()) CHECK_FALSE(mod->is_training());
  net.blocks->train();
  CHECK_FALSE(net.is_training());
  CHECK(net.blocks->at<Block>(2)->bn->is_training());
  net.train();
  for (const auto& [name, mod] : net.named_modules()) CHECK(mod->is_training());

  // zero_grad drops every parameter's gradient.
  Tensor x = ones({3, 4});
  sum(net.head->forward(x)).backward();
  CHECK(net.head->weight.grad().defined());
  net.zero_grad();
  CHECK_FALSE(net.head->weight.grad().defined());
}

TEST_CASE("Module::to converts parameters and floating buffers in place") {
  Generator gen(3);
  auto seq = std::make_shared<nn::Module>("Wrapper");
  auto lin = seq->register_module("lin", std::make_shared<nn::Linear>(5, 3, gen));
  auto bn = seq->register_module("bn", std::make_shared<nn::BatchNorm2d>(3));
  std::vector<double> before = to_vector<double>(lin->weight);
  Tensor handle = lin->weight;  // as an optimiser would hold it
  seq->to(DType::f64);
  CHECK(handle.dtype() == DType::f64);
  CHECK(lin->weight.dtype() == DType::f64);
  CHECK(handle.requires_grad());
  CHECK(to_vector<double>(handle) == before);  // f32 -> f64 is exact
  CHECK(bn->running_var.dtype() == DType::f64);
  CHECK(bn->num_batches_tracked.dtype() == DType::i64);
  Tensor y = lin->forward(ones({2, 5}, DType::f64));
  CHECK(y.dtype() == DType::f64);
  CHECK(contains(error_of([&] { seq->to(DType::i32); }), "must stay floating"));
  seq->to(Device::cpu());  // nothing to do
  CHECK(lin->weight.dtype() == DType::f64);
}

// =============================================================================================
// layers

TEST_CASE("layers: PyTorch parameter names, shapes and default initialisations") {
  Generator gen(42);
  // Conv2d: weight (out, in, kh, kw) ~ U(+-1/sqrt(in*kh*kw)), bias the same bound.
  nn::Conv2d conv(64, 128, 3, gen);
  CHECK(names_of(conv.state_dict()) == std::vector<std::string>{"weight", "bias"});
  CHECK(conv.weight.sizes() == Shape{128, 64, 3, 3});
  CHECK(conv.bias.sizes() == Shape{128});
  check_uniform(conv.weight, 1.0 / std::sqrt(576.0));
  Stats b = stats_of(conv.bias);
  CHECK(b.max <= 1.0 / std::sqrt(576.0));
  CHECK(b.min >= -1.0 / std::sqrt(576.0));
  CHECK(b.max - b.min > 1.0 / std::sqrt(576.0));  // 128 draws spread over the range

  nn::Conv2d rect(3, 5, 1, 7, gen, Conv2dOptions::make(2, 0), /*bias=*/false);
  CHECK(names_of(rect.state_dict()) == std::vector<std::string>{"weight"});
  CHECK(rect.weight.sizes() == Shape{5, 3, 1, 7});
  CHECK_FALSE(rect.bias.defined());

  // ConvTranspose2d: weight (in, out, kh, kw); fan_in = weight.size(1) * kh * kw = out * 9.
  nn::ConvTranspose2d convt(32, 256, 3, gen);
  CHECK(convt.weight.sizes() == Shape{32, 256, 3, 3});
  CHECK(convt.bias.sizes() == Shape{256});
  check_uniform(convt.weight, 1.0 / std::sqrt(256.0 * 9.0));
  CHECK(stats_of(convt.bias).max <= 1.0 / std::sqrt(256.0 * 9.0));

  // Linear: weight (out, in), bound 1/sqrt(in).
  nn::Linear lin(1000, 100, gen);
  CHECK(names_of(lin.state_dict()) == std::vector<std::string>{"weight", "bias"});
  CHECK(lin.weight.sizes() == Shape{100, 1000});
  check_uniform(lin.weight, 1.0 / std::sqrt(1000.0));
  CHECK(stats_of(lin.bias).max <= 1.0 / std::sqrt(1000.0));
  CHECK(stats_of(lin.bias).min >= -1.0 / std::sqrt(1000.0));

  // BatchNorm2d: weight 1, bias 0, running_mean 0, running_var 1, num_batches_tracked 0 (i64).
  nn::BatchNorm2d bn(6);
  CHECK(names_of(bn.state_dict()) == std::vector<std::string>{"weight", "bias", "running_mean",
                                                              "running_var",
                                                              "num_batches_tracked"});
  CHECK(names_of(bn.named_parameters()) == std::vector<std::string>{"weight", "bias"});
  CHECK(to_vector<float>(bn.weight) == std::vector<float>(6, 1.0f));
  CHECK(to_vector<float>(bn.bias) == std::vector<float>(6, 0.0f));
  CHECK(to_vector<float>(bn.running_mean) == std::vector<float>(6, 0.0f));
  CHECK(to_vector<float>(bn.running_var) == std::vector<float>(6, 1.0f));
  CHECK(bn.num_batches_tracked.dtype() == DType::i64);
  CHECK(bn.num_batches_tracked.sizes() == Shape{});
  CHECK(bn.num_batches_tracked.item() == 0.0);
  CHECK(bn.running_mean.requires_grad() == false);
  nn::BatchNorm2d plain(6, 1e-5, 0.1, /*affine=*/false, /*track_running_stats=*/false);
  CHECK(plain.state_dict().empty());

  // Parameter-free layers have no state.
  CHECK(nn::ReLU().state_dict().empty());
  CHECK(nn::MaxPool2d(2).state_dict().empty());
  CHECK(nn::MaxPool2d(3).options.stride_h == 3);
  CHECK(nn::MaxPool2d(3, 2, 1, true).options.ceil_mode);
  CHECK(nn::Dropout(0.5, std::make_shared<Generator>(0)).state_dict().empty());

  // Same seed, same construction order: same weights.
  Generator g1(5), g2(5);
  nn::Conv2d c1(4, 8, 3, g1), c2(4, 8, 3, g2);
  CHECK(same_bytes(c1.weight, c2.weight));
  CHECK(same_bytes(c1.bias, c2.bias));
  CHECK_FALSE(same_bytes(c1.weight.flatten().narrow(0, 0, 8), c1.bias));

  // Bad configurations.
  CHECK(contains(error_of([&] { nn::Conv2d(0, 4, 3, gen); }),
                 "Conv2d: in_channels must be positive"));
  CHECK(contains(error_of([&] { nn::Linear(4, 0, gen); }), "Linear: out_features"));
  CHECK(contains(error_of([&] { nn::Dropout(1.5, std::make_shared<Generator>(0)); }),
                 "outside [0, 1]"));
  CHECK(contains(error_of([&] { nn::Dropout(0.5, nullptr); }), "generator is null"));
  CHECK(contains(error_of([&] { nn::BatchNorm2d(4, 1e-5, 2.0); }), "momentum"));
}

TEST_CASE("layers: Sequential, Conv2d, Linear, pooling and upsampling forward") {
  Generator gen(1);
  auto seq = std::make_shared<nn::Sequential>();
  CHECK(seq->size() == 0);
  Tensor x = randn({2, 3, 8, 8}, gen);
  CHECK(same_bytes(seq->forward(x), x));  // empty: identity
  auto conv = seq->append(std::make_shared<nn::Conv2d>(3, 4, 3, gen, Conv2dOptions::make(1, 1)));
  seq->append(std::make_shared<nn::ReLU>());
  seq->append(std::make_shared<nn::MaxPool2d>(2));
  CHECK(names_of(seq->state_dict()) == std::vector<std::string>{"0.weight", "0.bias"});
  CHECK(seq->size() == 3);
  CHECK((*seq)[0].get() == conv.get());
  Tensor y = (*seq)(x);
  CHECK(y.sizes() == Shape{2, 4, 4, 4});
  Tensor expect = max_pool2d(relu(conv2d(x, conv->weight, conv->bias, Conv2dOptions::make(1, 1))));
  CHECK(same_bytes(y, expect));

  nn::Linear lin(4, 3, gen);
  Tensor v = randn({5, 4}, gen);
  CHECK(same_bytes(lin(v), linear(v, lin.weight, lin.bias)));

  nn::ConvTranspose2d up(4, 2, 2, gen, ConvTranspose2dOptions::make(2, 0));
  CHECK(up(y).sizes() == Shape{2, 2, 8, 8});
  CHECK(nn::AdaptiveAvgPool2d(1, 1)(y).sizes() == Shape{2, 4, 1, 1});
  CHECK(nn::Upsample(nn::UpsampleOptions{6, 10, 0.0, true})(y).sizes() == Shape{2, 4, 6, 10});
  CHECK(nn::Upsample(nn::UpsampleOptions{0, 0, 2.0, false})(y).sizes() == Shape{2, 4, 8, 8});
  CHECK(nn::Flatten()(y).sizes() == Shape{2, 64});
  CHECK(nn::Identity()(y).same(y));
}

TEST_CASE("layers: BatchNorm2d running statistics, num_batches_tracked, eval") {
  // x (2, 2, 1, 2): channel 0 holds {1, 2, 3, 4} (mean 2.5, biased var 1.25, unbiased 5/3),
  // channel 1 holds {0, 0, 0, 4} (mean 1, biased var 3, unbiased 4).
  Tensor x = from_vector(std::vector<float>{1, 2, 0, 0, 3, 4, 0, 4}, {2, 2, 1, 2});
  constexpr double kTol = 1e-6;  // f32 arithmetic on small exact inputs
  nn::BatchNorm2d bn(2);
  Tensor y = bn(x);
  CHECK(bn.num_batches_tracked.item() == 1.0);
  std::vector<float> rm = to_vector<float>(bn.running_mean), rv = to_vector<float>(bn.running_var);
  CHECK(rm[0] == doctest::Approx(0.1 * 2.5).epsilon(kTol));
  CHECK(rm[1] == doctest::Approx(0.1 * 1.0).epsilon(kTol));
  CHECK(rv[0] == doctest::Approx(0.9 + 0.1 * 5.0 / 3.0).epsilon(kTol));
  CHECK(rv[1] == doctest::Approx(0.9 + 0.1 * 4.0).epsilon(kTol));
  std::vector<float> yv = to_vector<float>(y);
  CHECK(yv[0] == doctest::Approx((1 - 2.5) / std::sqrt(1.25 + 1e-5)).epsilon(kTol));
  CHECK(yv[3] == doctest::Approx((0 - 1.0) / std::sqrt(3.0 + 1e-5)).epsilon(kTol));
  bn(x);
  CHECK(bn.num_batches_tracked.item() == 2.0);

  // Eval: running statistics, nothing updated.
  bn.eval();
  bn.running_mean.fill_(1.0);
  bn.running_var.fill_(4.0);
  bn.weight.detach().fill_(2.0);
  bn.bias.detach().fill_(0.5);
  yv = to_vector<float>(bn(x));
  CHECK(yv[0] == doctest::Approx((1 - 1.0) / std::sqrt(4.0 + 1e-5) * 2 + 0.5).epsilon(kTol));
  CHECK(yv[5] == doctest::Approx((4 - 1.0) / std::sqrt(4.0 + 1e-5) * 2 + 0.5).epsilon(kTol));
  CHECK(bn.num_batches_tracked.item() == 2.0);
  CHECK(to_vector<float>(bn.running_mean) == std::vector<float>{1, 1});

  // momentum = None: cumulative moving average (factor 1 / num_batches_tracked).
  nn::BatchNorm2d cma(2, 1e-5, std::nullopt);
  cma(x);
  CHECK(to_vector<float>(cma.running_mean)[0] == doctest::Approx(2.5).epsilon(kTol));
  Tensor x2 = from_vector(std::vector<float>{5, 5, 2, 2, 5, 5, 2, 2}, {2, 2, 1, 2});
  cma(x2);
  CHECK(cma.num_batches_tracked.item() == 2.0);
  CHECK(to_vector<float>(cma.running_mean)[0] == doctest::Approx((2.5 + 5.0) / 2).epsilon(kTol));
  CHECK(to_vector<float>(cma.running_mean)[1] == doctest::Approx((1.0 + 2.0) / 2).epsilon(kTol));
  CHECK(to_vector<float>(cma.running_var)[0] == doctest::Approx((5.0 / 3 + 0.0) / 2).epsilon(kTol));

  // No running statistics: batch statistics in eval too.
  nn::BatchNorm2d batch_only(2, 1e-5, 0.1, true, false);
  batch_only.eval();
  CHECK(to_vector<float>(batch_only(x))[0] ==
        doctest::Approx((1 - 2.5) / std::sqrt(1.25 + 1e-5)).epsilon(kTol));

  CHECK(contains(error_of([&] { bn(zeros({2, 3, 4, 4})); }), "has 3 channels, the layer has 2"));
  CHECK(contains(error_of([&] { bn(zeros({2, 2})); }), "expected a 4-D input"));
}

TEST_CASE("layers: Dropout draws from its shared generator in training only") {
  auto gen = std::make_shared<Generator>(11);
  nn::Dropout drop(0.25, gen);
  Tensor x = ones({200, 500});
  const uint64_t calls = gen->calls();
  Tensor y = drop(x);
  CHECK(gen->calls() > calls);
  std::vector<float> v = to_vector<float>(y);
  size_t zeros_count = 0, badly_scaled = 0;
  for (float f : v) {
    if (f == 0.0f) {
      ++zeros_count;
    } else if (f != static_cast<float>(1.0 / 0.75)) {
      ++badly_scaled;
    }
  }
  CHECK(badly_scaled == 0);
  // 100000 Bernoulli(0.25) draws: standard error 0.0014; 0.01 is 7 of them.
  CHECK(std::abs(static_cast<double>(zeros_count) / v.size() - 0.25) < 0.01);
  // Same seed and call count: the same mask.
  auto gen2 = std::make_shared<Generator>(11);
  gen2->set_state(11, calls);
  CHECK(same_bytes(nn::Dropout(0.25, gen2)(x), y));

  drop.eval();
  const uint64_t before = gen->calls();
  CHECK(same_bytes(drop(x), x));
  CHECK(gen->calls() == before);
}

// =============================================================================================
// state_dict save / load

TEST_CASE("state_dict: save, load into a fresh module, identical values") {
  TempDir dir("roundtrip");
  Generator gen(1);
  Net a(gen);
  // Non-default buffers and parameters.
  Tensor x = randn({2, 2, 5, 5}, gen);
  a.blocks->at<Block>(0)->bn->forward(a.blocks->at<Block>(0)->conv->forward(x));
  a.blocks->at<Block>(2)->bn->running_var.fill_(3.0);
  a.blocks->at<Block>(0)->buffer("step").fill_(77);
  a.save_state_dict(dir / "net.safetensors", {{"epoch", "3"}});
  CHECK(load_safetensors_metadata(dir / "net.safetensors").at("epoch") == "3");

  Generator other(999);
  Net b(other);
  Tensor b_weight = b.head->weight;  // a handle held elsewhere (an optimiser) stays valid
  nn::LoadReport r = b.load_state_dict_file(dir / "net.safetensors");
  CHECK(r.ok());
  CHECK(r.loaded.size() == 20);
  CHECK(r.missing.empty());
  CHECK(r.unexpected.empty());
  CHECK(r.shape_mismatched.empty());
  nn::StateDict sa = a.state_dict(), sb = b.state_dict();
  REQUIRE(sa.size() == sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    CAPTURE(sa[i].first);
    CHECK(sa[i].first == sb[i].first);
    CHECK(same_bytes(sa[i].second, sb[i].second));
  }
  CHECK(same_bytes(b_weight, a.head->weight));
  CHECK(b_weight.requires_grad());
  CHECK(b.blocks->at<Block>(0)->bn->num_batches_tracked.item() == 1.0);
  CHECK(b.blocks->at<Block>(0)->buffer("step").item() == 77.0);

  // In-memory dicts work the same; floating values convert (f64 -> f32).
  Net c(other);
  nn::StateDict converted;
  for (const auto& [name, t] : sa) {
    converted.emplace_back(name, is_floating(t.dtype()) ? t.to(DType::f64) : t);
  }
  CHECK(c.load_state_dict(converted).ok());
  CHECK(same_bytes(c.head->weight, a.head->weight));
}

TEST_CASE("state_dict: missing, unexpected and mismatched tensors are reported; strict throws") {
  Generator gen(2);
  Net src(gen);
  nn::StateDict dict = src.state_dict();

  SUBCASE("shape mismatch: both shapes reported") {
    for (auto& [name, t] : dict) {
      if (name == "blocks.2.conv.weight") t = zeros({4, 3, 3, 3});
    }
    Net dst(gen);
    Tensor before = dst.blocks->at<Block>(2)->conv->weight.clone();
    nn::LoadReport r = dst.load_state_dict(dict, /*strict=*/false);
    CHECK_FALSE(r.ok());
    REQUIRE(r.shape_mismatched.size() == 1);
    CHECK(r.shape_mismatched[0].name == "blocks.2.conv.weight");
    CHECK(r.shape_mismatched[0].expected == Shape{4, 2, 3, 3});
    CHECK(r.shape_mismatched[0].got == Shape{4, 3, 3, 3});
    CHECK(r.loaded.size() == 19);
    CHECK(same_bytes(dst.blocks->at<Block>(2)->conv->weight, before));  // left alone
    CHECK(same_bytes(dst.head->weight, src.head->weight));              // the rest loaded
    CHECK(contains(r.str(), "blocks.2.conv.weight: module (4,2,3,3), dict (4,3,3,3)"));
    const std::string msg = error_of([&] { dst.load_state_dict(dict); });
    CHECK(contains(msg, "Net: load_state_dict (strict) failed"));
    CHECK(contains(msg,
                   "shape mismatched (1): blocks.2.conv.weight: module (4,2,3,3), dict (4,3,3,3)"));
  }
  SUBCASE("missing and unexpected keys; strict changes nothing") {
    nn::StateDict partial;
    for (auto& [name, t] : dict) {
      if (name != "head.bias" && name != "blocks.0.bn.running_var") partial.emplace_back(name, t);
    }
    partial.emplace_back("extra.weight", zeros({2}));
    partial.emplace_back("blocks.0.convv.weight", zeros({2}));
    Net dst(gen);
    Tensor head_before = dst.head->weight.clone();
    const std::string msg = error_of([&] { dst.load_state_dict(partial); });
    CHECK(contains(msg, "missing (2): blocks.0.bn.running_var, head.bias"));
    CHECK(contains(msg, "unexpected (2): extra.weight, blocks.0.convv.weight"));
    CHECK(contains(msg, "loaded 18 of 20 tensors"));
    CHECK(same_bytes(dst.head->weight, head_before));  // strict failure: nothing was copied

    nn::LoadReport r = dst.load_state_dict(partial, /*strict=*/false);
    CHECK(r.missing == std::vector<std::string>{"blocks.0.bn.running_var", "head.bias"});
    CHECK(r.unexpected == std::vector<std::string>{"extra.weight", "blocks.0.convv.weight"});
    CHECK(r.loaded.size() == 18);
    CHECK(same_bytes(dst.head->weight, src.head->weight));
  }
  SUBCASE("dtypes that do not convert; repeated and undefined names") {
    for (auto& [name, t] : dict) {
      if (name == "blocks.0.bn.num_batches_tracked") t = zeros({}, DType::f32);
    }
    Net dst(gen);
    nn::LoadReport r = dst.load_state_dict(dict, false);
    REQUIRE(r.dtype_mismatched.size() == 1);
    CHECK(r.dtype_mismatched[0].expected == DType::i64);
    CHECK(r.dtype_mismatched[0].got == DType::f32);
    CHECK(contains(error_of([&] { dst.load_state_dict(dict); }),
                   "dtype mismatched (1): blocks.0.bn.num_batches_tracked: module i64, dict f32"));
    nn::StateDict twice = {{"head.weight", zeros({2, 4})}, {"head.weight", zeros({2, 4})}};
    CHECK(
        contains(error_of([&] { dst.load_state_dict(twice, false); }), "has 'head.weight' twice"));
    nn::StateDict undefined = {{"head.weight", Tensor()}};
    CHECK(contains(error_of([&] { dst.load_state_dict(undefined, false); }), "undefined"));
  }
  SUBCASE("file errors name the file") {
    TempDir dir("strict");
    save_safetensors(dir / "other.safetensors", {{"x", zeros({1})}});
    Net dst(gen);
    const std::string msg = error_of([&] { dst.load_state_dict_file(dir / "other.safetensors"); });
    CHECK(contains(msg, (dir / "other.safetensors").string()));
    CHECK(contains(msg, "unexpected (1): x"));
    CHECK(contains(error_of([&] { dst.load_state_dict_file(dir / "absent.safetensors"); }),
                   "absent.safetensors: no such file"));
  }
}

TEST_CASE("state_dict: a PyTorch checkpoint loads by name, in PyTorch's order, exactly") {
  if (!test::have_reference("state_dict.safetensors") ||
      !test::have_reference("state_dict_keys.json") ||
      !test::have_reference("state_dict_io.safetensors")) {
    return;
  }
  Generator gen(0);
  RefNet net(gen, std::make_shared<Generator>(1));

  // Names, shapes and dtypes in PyTorch's order.
  std::ifstream keys_file(test::reference_path("state_dict_keys.json"));
  nlohmann::json keys = nlohmann::json::parse(keys_file);
  nn::StateDict ours = net.state_dict();
  REQUIRE(ours.size() == keys["state_dict"].size());
  for (size_t i = 0; i < ours.size(); ++i) {
    const auto& entry = keys["state_dict"][i];
    CAPTURE(entry.dump());
    CHECK(ours[i].first == entry[0].get<std::string>());
    CHECK(ours[i].second.sizes() == entry[1].get<Shape>());
    CHECK(ours[i].second.dtype() ==
          (entry[2].get<std::string>() == "torch.int64" ? DType::i64 : DType::f32));
  }
  CHECK(names_of(net.named_parameters()) == keys["parameters"].get<std::vector<std::string>>());
  CHECK(names_of(net.named_buffers()) == keys["buffers"].get<std::vector<std::string>>());

  // Strict load: everything loaded, every value bit-exact.
  const fs::path path = test::reference_path("state_dict.safetensors");
  nn::LoadReport r = net.load_state_dict_file(path);
  CHECK(r.ok());
  CHECK(r.loaded.size() == keys["state_dict"].size());
  NamedTensors file = load_safetensors(path);
  std::map<std::string, Tensor> by_name(file.begin(), file.end());
  for (const auto& [name, t] : net.state_dict()) {
    CAPTURE(name);
    REQUIRE(by_name.count(name) == 1);
    CHECK(same_bytes(t, by_name[name]));
  }
  CHECK(net.layer1->at<ConvBlock>(1)->bn->num_batches_tracked.item() == 3.0);

  // The loaded network computes PyTorch's output (eval mode: running statistics, no dropout).
  net.eval();
  Tensor x = load_safetensors_tensor(test::reference_path("state_dict_io.safetensors"), "input");
  Tensor expect =
      load_safetensors_tensor(test::reference_path("state_dict_io.safetensors"), "output");
  Tensor y = net(x);
  REQUIRE(y.sizes() == expect.sizes());
  std::vector<float> yv = to_vector<float>(y), ev = to_vector<float>(expect);
  for (size_t i = 0; i < yv.size(); ++i) {
    CAPTURE(i);
    CHECK(std::abs(yv[i] - ev[i]) <= kForwardTol * std::max(1.0f, std::abs(ev[i])));
  }
}
