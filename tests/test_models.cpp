// Models against PyTorch: architecture, parameter names, forward and backward (UNet against
// Pytorch-UNet; ResNet and DeepLabv3 against torchvision and DeepLabv3.pytorch), and the
// pretrained-weights loader.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops.h"
#include "models/deeplabv3.h"
#include "models/init.h"
#include "models/resnet.h"
#include "models/unet.h"
#include "tests/support/reference.h"
#include "tests/support/reference_tensors.h"
#include "tests/support/test_util.h"

using namespace seg;

namespace {

// f64 on both sides: the only differences are summation orders, ~1e-16 relative per operation over
// a few hundred operations in depth.
constexpr double kF64Tolerance = 1e-9;
// The full-size references (ResNet-50, DeepLabv3-ResNet101) store their gradients rounded to f32
// to keep the files to a few hundred MB: a stored value is off by up to half an f32 ulp, 6e-8
// relative; twice that bounds the error relative to max(|reference|, 1).
constexpr double kStoredF32Tolerance = 1.2e-7;

using test::check_close;
using test::max_rel_error;
using Reference = test::ReferenceTensors;

void check_unet(const std::string& file, bool bilinear) {
  if (!test::have_reference(file)) return;
  Reference ref(file);
  Generator gen(0);
  models::UNet net({3, 5, 4, 4, bilinear, true}, gen);
  net.to(DType::f64);
  const nn::StateDict state = ref.with_prefix("state.");
  nn::LoadReport report = net.load_state_dict(state);  // strict: every name and shape matches
  CHECK(report.ok());
  CHECK(report.loaded.size() == state.size());

  Tensor x = ref.get("input").clone();
  x.set_requires_grad(true);
  Tensor out = net.forward(x);
  CHECK(out.sizes() == Shape{2, 5, 35, 37});
  check_close(out, ref, "output", kF64Tolerance);
  sum(out * ref.get("projection")).backward();
  check_close(x.grad(), ref, "grad.input", kF64Tolerance);
  for (auto& [name, p] : net.named_parameters())
    check_close(p.grad(), ref, "grad." + name, kF64Tolerance);
  for (auto& [name, b] : net.named_buffers()) check_close(b, ref, "after." + name, kF64Tolerance);

  // Evaluation with the running statistics the training forward left.
  net.eval();
  NoGradGuard no_grad;
  check_close(net.forward(ref.get("input")), ref, "eval.output", kF64Tolerance);
}

// ---- ResNet / DeepLabv3 ----

// loss = CE(out) + kAuxWeight * CE(aux), ignore 255: the reference's (torchvision's recipe).
constexpr double kAuxWeight = 0.5;

// The small models of tests/reference/ref_deeplab.py.
models::DeepLabV3Options small_deeplab(int output_stride) {
  models::DeepLabV3Options o;
  o.backbone_blocks = {1, 1, 2, 3};
  o.base_channels = 8;
  o.aspp_channels = 16;
  o.num_classes = 5;
  o.output_stride = output_stride;
  o.aux = true;
  o.aspp_dropout = 0.0;  // the reference runs with p = 0 so that training is deterministic
  o.aux_dropout = 0.0;
  return o;
}

Tensor deeplab_loss(const models::DeepLabOutput& y, const Tensor& labels) {
  CrossEntropyOptions ce;
  ce.ignore_index = 255;
  Tensor loss = cross_entropy(y.out, labels, ce);
  if (y.aux.defined()) loss = loss + kAuxWeight * cross_entropy(y.aux, labels, ce);
  return loss;
}

// Loads the reference's weights (strict), then in train and in eval mode compares logits, loss,
// every gradient (where the reference has them) and, after the train forward, every buffer.
void check_deeplab(const std::string& file, const models::DeepLabV3Options& options,
                   double grad_tolerance) {
  if (!test::have_reference(file)) return;
  Reference ref(file);
  Generator gen(0);
  models::DeepLabV3 net(options, gen, std::make_shared<Generator>(1));
  net.to(DType::f64);
  const nn::StateDict state = ref.with_prefix("state.");
  const nn::LoadReport report = net.load_state_dict(state);  // strict
  CHECK(report.ok());
  CHECK(report.loaded.size() == state.size());

  const Tensor x = ref.get("input").to(DType::f64);  // (2, 3, h, w)
  const Tensor labels = ref.get("labels");           // (2, h, w) i32, some 255
  for (const std::string mode : {"train", "eval"}) {
    CAPTURE(mode);
    net.train(mode == "train");
    net.zero_grad();
    models::DeepLabOutput y = net.forward_all(x, true);
    CHECK(y.out.sizes() == Shape{x.size(0), options.num_classes, x.size(2), x.size(3)});
    check_close(y.out, ref, mode + ".out", kF64Tolerance);
    CHECK(y.aux.defined() == options.aux);
    if (options.aux) check_close(y.aux, ref, mode + ".aux", kF64Tolerance);
    Tensor loss = deeplab_loss(y, labels);
    check_close(loss.reshape({1}), ref, mode + ".loss", kF64Tolerance);
    if (ref.has(mode + ".grad.backbone.conv1.weight")) {
      loss.backward();
      for (auto& [name, p] : net.named_parameters()) {
        check_close(p.grad(), ref, mode + ".grad." + name, grad_tolerance);
      }
    }
    if (mode == "train") {
      for (auto& [name, b] : net.named_buffers())
        check_close(b, ref, "after." + name, kF64Tolerance);
    }
  }
}

void check_layer_dilations(const models::ResNet& net, int layer, std::vector<int64_t> expected) {
  CAPTURE(layer);
  CHECK(net.block_dilations(layer) == expected);
  for (const auto& block : net.blocks(layer)) {
    CHECK(block->conv2->options.dil_h == block->dilation);
    CHECK(block->conv2->options.pad_h == block->dilation);
  }
}

// The sample standard deviation of a tensor's values.
double std_of(const Tensor& t) {
  std::vector<double> v = to_vector<double>(t);
  double mean = 0.0, sq = 0.0;
  for (double x : v) mean += x;
  mean /= static_cast<double>(v.size());
  for (double x : v) sq += (x - mean) * (x - mean);
  return std::sqrt(sq / static_cast<double>(v.size() - 1));
}

double max_abs(const Tensor& t) {
  double m = 0.0;
  for (double x : to_vector<double>(t)) m = std::max(m, std::abs(x));
  return m;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// UNet

TEST_CASE(
    "UNet (transposed-conv up) matches Pytorch-UNet: names, output, gradients, BN statistics") {
  check_unet("unet_transposed.safetensors", false);
}

TEST_CASE("UNet (bilinear up) matches Pytorch-UNet: names, output, gradients, BN statistics") {
  check_unet("unet_bilinear.safetensors", true);
}

TEST_CASE("UNet defaults are Pytorch-UNet's UNet(3, 19): transposed-conv up, 64..1024 channels") {
  // FINDINGS.md: UNet(n_channels=3, n_classes=19, bilinear=False); the width multiplier is
  // base_channels (64 = the paper's). Names and shapes against Pytorch-UNet at full size.
  const models::UNetOptions defaults;
  CHECK(defaults.in_channels == 3);
  CHECK(defaults.num_classes == 19);
  CHECK(defaults.base_channels == 64);
  CHECK(defaults.depth == 4);
  CHECK_FALSE(defaults.bilinear);
  if (!test::have_reference("unet_full_shapes.safetensors")) return;
  Reference ref("unet_full_shapes.safetensors");
  for (bool bilinear : {false, true}) {
    CAPTURE(bilinear);
    models::UNetOptions o;
    o.bilinear = bilinear;
    Generator gen(0);
    models::UNet net(o, gen);
    const std::string prefix = bilinear ? "bilinear." : "transposed.";
    const nn::StateDict expected = ref.with_prefix(prefix);
    const nn::StateDict ours = net.state_dict();
    CHECK(ours.size() == expected.size());
    for (const auto& [name, t] : ours) {
      CAPTURE(name);
      REQUIRE(ref.has(prefix + name));
      std::vector<int64_t> dims = to_vector<int64_t>(ref.get(prefix + name));
      CHECK(Shape(dims.begin(), dims.end()) == t.sizes());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// ResNet

TEST_CASE("ResNet: torchvision's dilations, strides and multi-grid") {
  Generator gen(0);
  models::ResNetOptions o;
  o.blocks = {1, 1, 2, 3};
  o.base_channels = 4;
  SUBCASE("no dilation: output stride 32") {
    models::ResNet net(o, gen);
    CHECK(net.output_stride() == 32);
    for (int layer = 1; layer <= 4; ++layer)
      check_layer_dilations(net, layer, std::vector<int64_t>(o.blocks[layer - 1], 1));
    CHECK(net.blocks(4)[0]->stride == 2);
    Tensor y = net.forward(randn({1, 3, 64, 96}, gen));
    CHECK(y.sizes() == Shape{1, 128, 2, 3});
  }
  SUBCASE("output stride 16: layer4 (1, 2, 2), the study's block dilations") {
    o.replace_stride_with_dilation = {false, false, true};
    models::ResNet net(o, gen);
    CHECK(net.output_stride() == 16);
    check_layer_dilations(net, 3, {1, 1});
    check_layer_dilations(net, 4, {1, 2, 2});
    CHECK(net.blocks(4)[0]->stride == 1);
    CHECK(net.blocks(4)[0]->downsample != nullptr);  // channels change
    models::ResNetFeatures f = net.features(randn({1, 3, 65, 97}, gen));
    CHECK(f.layer1.sizes() == Shape{1, 16, 17, 25});
    CHECK(f.layer3.sizes() == Shape{1, 64, 5, 7});
    CHECK(f.layer4.sizes() == Shape{1, 128, 5, 7});
  }
  SUBCASE("output stride 8: layer3 (1, 2), layer4 (2, 4, 4)") {
    o.replace_stride_with_dilation = {false, true, true};
    models::ResNet net(o, gen);
    CHECK(net.output_stride() == 8);
    check_layer_dilations(net, 3, {1, 2});
    check_layer_dilations(net, 4, {2, 4, 4});
    CHECK(net.features(randn({1, 3, 65, 97}, gen)).layer4.sizes() == Shape{1, 128, 9, 13});
  }
  SUBCASE("multi-grid (1, 2, 4) multiplies layer4's rate in every block") {
    o.multi_grid = {1, 2, 4};
    o.replace_stride_with_dilation = {false, false, true};
    check_layer_dilations(models::ResNet(o, gen), 4, {2, 4, 8});
    o.replace_stride_with_dilation = {false, true, true};
    check_layer_dilations(models::ResNet(o, gen), 4, {4, 8, 16});
  }
  SUBCASE("bad options are errors naming them") {
    o.multi_grid = {1, 2};
    CHECK(test::contains(test::error_of([&] { models::ResNet net(o, gen); }),
                         "multi_grid has 2 multipliers but layer4 has 3 blocks"));
    o.multi_grid.clear();
    o.blocks = {1, 1, 1};
    CHECK(
        test::contains(test::error_of([&] { models::ResNet net(o, gen); }), "must have 4 counts"));
    o.blocks.clear();
    o.depth = 34;
    CHECK(test::contains(test::error_of([&] { models::ResNet net(o, gen); }),
                         "depth 34 is not supported"));
  }
}

TEST_CASE("ResNet: torchvision's init: convs N(0, sqrt(2 / (k k out))), BN 1 and 0") {
  Generator gen(0);
  models::ResNetOptions o;
  o.blocks = {1, 1, 1, 1};
  o.num_classes = 10;
  models::ResNet net(o, gen);
  // kaiming_normal_(fan_out, relu). 589,824 draws give the std within ~0.1%.
  const Tensor w = net.blocks(3)[0]->conv2->weight;  // (256, 256, 3, 3)
  CHECK(w.sizes() == Shape{256, 256, 3, 3});
  CHECK(std_of(w) == doctest::Approx(std::sqrt(2.0 / (9.0 * 256.0))).epsilon(0.01));
  const Tensor d = net.blocks(4)[0]->downsample->at<nn::Conv2d>(0)->weight;  // (2048, 1024, 1, 1)
  CHECK(std_of(d) == doctest::Approx(std::sqrt(2.0 / 2048.0)).epsilon(0.01));
  CHECK(to_vector<double>(net.bn1->weight) == std::vector<double>(64, 1.0));
  CHECK(to_vector<double>(net.blocks(2)[0]->bn3->bias) == std::vector<double>(512, 0.0));
  CHECK(net.fc->weight.sizes() == Shape{10, 2048});
}

TEST_CASE("ResNet-50 loads scripts/export_torchvision_resnet.py's file and matches torchvision") {
  if (!test::have_reference("resnet50_export.safetensors") ||
      !test::have_reference("resnet50_reference.safetensors")) {
    return;
  }
  const auto export_file = test::reference_path("resnet50_export.safetensors");
  Reference ref("resnet50_reference.safetensors");
  Generator gen(0);
  models::ResNetOptions o;
  o.depth = 50;
  o.num_classes = 1000;
  models::ResNet net(o, gen);
  int64_t count = 0;
  for (const Tensor& p : net.parameters()) count += p.numel();
  CHECK(count == 25557032);  // torchvision's resnet50
  models::PretrainedReport report = models::load_pretrained(net, export_file);
  CHECK(report.load.loaded.size() == 320);
  CHECK(report.load.loaded.size() == net.state_dict().size());
  CHECK(report.load.ok());
  net.to(DType::f64);

  const Tensor x = ref.get("input").to(DType::f64);  // (2, 3, 64, 64)
  const Tensor labels = ref.get("labels");           // (2) i32
  net.train();
  Tensor logits = net.forward(x);
  check_close(logits, ref, "train.out", kF64Tolerance);
  Tensor loss = cross_entropy(logits, labels);
  check_close(loss.reshape({1}), ref, "train.loss", kF64Tolerance);
  loss.backward();
  for (auto& [name, p] : net.named_parameters()) {
    check_close(p.grad(), ref, "train.grad." + name, kStoredF32Tolerance);
  }
  for (auto& [name, b] : net.named_buffers()) check_close(b, ref, "after." + name, kF64Tolerance);
  net.eval();
  NoGradGuard no_grad;
  Tensor eval_logits = net.forward(x);
  check_close(eval_logits, ref, "eval.out", kF64Tolerance);
  check_close(cross_entropy(eval_logits, labels).reshape({1}), ref, "eval.loss", kF64Tolerance);

  // The same file into a DeepLabv3-ResNet50 backbone: every backbone tensor, fc dropped.
  models::DeepLabV3Options d;
  d.backbone_depth = 50;
  models::DeepLabV3 deeplab(d, gen, std::make_shared<Generator>(1));
  std::ostringstream log;
  report = models::load_pretrained(deeplab, export_file, models::imagenet_backbone_options(), &log);
  CHECK(report.load.loaded.size() == deeplab.backbone->state_dict().size());
  CHECK(report.load.missing.empty());
  CHECK(report.dropped == std::vector<std::string>{"fc.bias", "fc.weight"});
  CHECK(test::contains(log.str(), "into backbone.: loaded 318 of 318 tensors; dropped (2)"));
  const Tensor file_w = load_safetensors_tensor(export_file, "layer3.4.conv2.weight");
  CHECK(max_rel_error(deeplab.backbone->blocks(3)[4]->conv2->weight, file_w) == 0.0);
}

// ---------------------------------------------------------------------------------------------
// DeepLabv3 against torchvision and DeepLabv3.pytorch

TEST_CASE("DeepLabv3 (small, output stride 8) matches torchvision: logits, loss, gradients, BN") {
  check_deeplab("deeplab_small_os8.safetensors", small_deeplab(8), kF64Tolerance);
}

TEST_CASE("DeepLabv3 (small, output stride 16) matches torchvision: logits, loss, gradients, BN") {
  check_deeplab("deeplab_small_os16.safetensors", small_deeplab(16), kF64Tolerance);
}

TEST_CASE("DeepLabv3 (small, multi-grid 1, 2, 4) matches torchvision with those dilations") {
  models::DeepLabV3Options o = small_deeplab(16);
  o.multi_grid = {1, 2, 4};
  check_deeplab("deeplab_small_mg.safetensors", o, kF64Tolerance);
}

TEST_CASE("DeepLabv3 (small, the study's layout) matches DeepLabv3.pytorch") {
  models::DeepLabV3Options o = models::DeepLabV3Options::study();
  o.backbone_blocks = {1, 1, 2, 3};
  o.base_channels = 8;
  o.aspp_channels = 16;
  o.num_classes = 5;
  check_deeplab("deeplab_small_study.safetensors", o, kF64Tolerance);
}

TEST_CASE("DeepLabv3-ResNet101 (output stride 8, aux) matches torchvision's deeplabv3_resnet101") {
  models::DeepLabV3Options o;  // torchvision's
  o.num_classes = 5;
  o.aux = true;
  o.aspp_dropout = 0.0;
  o.aux_dropout = 0.0;
  check_deeplab("deeplab_r101_os8.safetensors", o, kStoredF32Tolerance);
}

// ---------------------------------------------------------------------------------------------
// DeepLabv3: structure, options, dropout, parameter groups

TEST_CASE("DeepLabv3: torchvision's names and shapes; the study's layout and presets") {
  Generator gen(0);
  auto dropout_gen = std::make_shared<Generator>(1);
  models::DeepLabV3Options o = small_deeplab(8);
  o.aspp_rates = {2, 3, 4, 5};  // any number of rates
  models::DeepLabV3 net(o, gen, dropout_gen);
  std::map<std::string, Shape> shapes;
  for (auto& [name, t] : net.state_dict()) shapes[name] = t.sizes();
  CHECK(shapes.at("backbone.conv1.weight") == Shape{8, 3, 7, 7});
  CHECK(shapes.count("backbone.fc.weight") == 0);
  CHECK(shapes.at("classifier.0.convs.0.0.weight") == Shape{16, 256, 1, 1});
  CHECK(shapes.at("classifier.0.convs.4.0.weight") == Shape{16, 256, 3, 3});
  CHECK(shapes.at("classifier.0.convs.5.1.weight") == Shape{16, 256, 1, 1});  // image pooling
  CHECK(shapes.at("classifier.0.convs.5.2.running_mean") == Shape{16});
  CHECK(shapes.at("classifier.0.project.0.weight") == Shape{16, 6 * 16, 1, 1});
  CHECK(shapes.at("classifier.1.weight") == Shape{16, 16, 3, 3});
  CHECK(shapes.at("classifier.4.weight") == Shape{5, 16, 1, 1});
  CHECK(shapes.at("classifier.4.bias") == Shape{5});
  CHECK(shapes.at("aux_classifier.0.weight") == Shape{32, 128, 3, 3});
  CHECK(shapes.at("aux_classifier.4.bias") == Shape{5});
  CHECK(net.aspp->rates == std::vector<int64_t>{2, 3, 4, 5});
  CHECK(net.aspp->convs->at<nn::Sequential>(4)->at<nn::Conv2d>(0)->options.dil_h == 5);

  const models::DeepLabV3Options study = models::DeepLabV3Options::study();
  CHECK(study.output_stride == 16);
  CHECK(models::deeplab_aspp_rates(study) == std::vector<int64_t>{6, 12, 18});
  CHECK(models::deeplab_aspp_rates(models::DeepLabV3Options()) == std::vector<int64_t>{12, 24, 36});
  models::DeepLabV3Options so = study;
  so.backbone_blocks = {1, 1, 1, 3};
  so.base_channels = 8;
  so.aspp_channels = 64;
  models::DeepLabV3 s(so, gen, dropout_gen);
  CHECK(s.classifier->size() == 2);  // ASPP, 1x1 classifier
  CHECK(s.classifier->at<nn::Conv2d>(1)->weight.sizes() == Shape{19, 64, 1, 1});
  CHECK(s.classifier->at<nn::Conv2d>(1)->bias.defined());
  CHECK(s.aux_classifier == nullptr);
  check_layer_dilations(*s.backbone, 4, {1, 2, 2});
  CHECK(s.backbone->bn1->momentum == 0.05);
  CHECK(s.backbone->blocks(4)[0]->downsample->at<nn::BatchNorm2d>(1)->momentum == 0.05);
  CHECK(s.aspp->project->at<nn::BatchNorm2d>(1)->momentum == 0.0003);
  CHECK(s.aspp->project->at<nn::Dropout>(3)->p == 0.0);
  CHECK(net.aspp->project->at<nn::Dropout>(3)->p == 0.0);  // small_deeplab turned it off
  CHECK(models::DeepLabV3Options().aspp_dropout == 0.5);
  CHECK(models::DeepLabV3Options().aux_dropout == 0.1);
  // Head init: the study's N(0, sqrt(2 / (k k out))); torchvision's PyTorch default U(-b, b),
  // b = 1 / sqrt(fan_in). Statistical bounds: 147,456 draws give the std within ~0.4%.
  const Tensor sw =
      s.aspp->convs->at<nn::Sequential>(1)->at<nn::Conv2d>(0)->weight;  // (64, 256, 3, 3)
  CHECK(std_of(sw) == doctest::Approx(std::sqrt(2.0 / (9.0 * 64.0))).epsilon(0.02));
  models::DeepLabV3Options tvo = so;
  tvo.layout = models::DeepLabLayout::torchvision;
  tvo.he_init_head = false;
  models::DeepLabV3 t(tvo, gen, dropout_gen);
  const Tensor tw = t.aspp->convs->at<nn::Sequential>(1)->at<nn::Conv2d>(0)->weight;
  const double bound = 1.0 / std::sqrt(256.0 * 9.0);
  CHECK(max_abs(tw) <= bound);
  CHECK(std_of(tw) == doctest::Approx(bound / std::sqrt(3.0)).epsilon(0.02));
}

TEST_CASE("DeepLabv3: forward_all sizes, parameter groups, errors") {
  Generator gen(0);
  auto dropout_gen = std::make_shared<Generator>(1);
  for (int os : {8, 16}) {
    CAPTURE(os);
    models::DeepLabV3 net(small_deeplab(os), gen, dropout_gen);
    const Tensor x = randn({2, 3, 65, 97}, gen);
    models::DeepLabOutput y = net.forward_all(x, false);
    const Shape low = os == 8 ? Shape{2, 5, 9, 13} : Shape{2, 5, 5, 7};
    CHECK(y.out.sizes() == low);
    CHECK(y.aux.sizes() == Shape{2, 5, os == 8 ? 9 : 5, os == 8 ? 13 : 7});
    models::DeepLabOutput up = net.forward_all(x, true);
    CHECK(up.out.sizes() == Shape{2, 5, 65, 97});
    CHECK(up.aux.sizes() == Shape{2, 5, 65, 97});
    CHECK(net.forward(x).sizes() == Shape{2, 5, 65, 97});

    const std::vector<Tensor> backbone = net.backbone_parameters(), head = net.head_parameters();
    CHECK(backbone.size() == net.backbone->parameters().size());
    CHECK(backbone.size() + head.size() == net.parameters().size());
    std::set<const void*> seen;
    for (const Tensor& p : backbone) seen.insert(p.impl());
    for (const Tensor& p : head) CHECK(seen.insert(p.impl()).second);
  }
  models::DeepLabV3Options bad = small_deeplab(32);
  CHECK(test::contains(test::error_of([&] { models::DeepLabV3 net(bad, gen, dropout_gen); }),
                       "output_stride 32 is not supported"));
  CHECK(
      test::contains(test::error_of([&] { models::DeepLabV3 net(small_deeplab(8), gen, nullptr); }),
                     "dropout generator is null"));
  models::DeepLabV3 net(small_deeplab(16), gen, dropout_gen);
  // One image: the image-pooling BN sees one value per channel, an error in training (PyTorch's).
  CHECK(test::contains(test::error_of([&] {
                         net.forward(randn({1, 3, 33, 33}, gen));
                       }),
                       "more than 1 value per channel"));
  net.eval();
  CHECK(net.forward(randn({1, 3, 33, 33}, gen)).sizes() == Shape{1, 5, 33, 33});
}

TEST_CASE("DeepLabv3: dropout draws from the shared generator, in training only") {
  models::DeepLabV3Options o = small_deeplab(16);
  o.aspp_dropout = 0.5;
  o.aux_dropout = 0.1;
  auto run = [&](uint64_t dropout_seed, bool training, int calls) {
    Generator gen(0);
    auto dropout_gen = std::make_shared<Generator>(dropout_seed);
    models::DeepLabV3 net(o, gen, dropout_gen);
    CHECK(net.dropout_generator == dropout_gen);
    net.train(training);
    Generator data(7);
    const Tensor x = randn({2, 3, 33, 33}, data);
    std::vector<std::vector<float>> outs;
    for (int i = 0; i < calls; ++i) outs.push_back(to_vector<float>(net.forward(x)));
    CHECK(dropout_gen->calls() == (training ? static_cast<uint64_t>(2 * calls) : 0u));
    return outs;
  };
  const auto a = run(1, true, 2);
  CHECK(a[0] != a[1]);                // a fresh mask each call
  CHECK(run(1, true, 1)[0] == a[0]);  // reproducible from the seed
  CHECK(run(2, true, 1)[0] != a[0]);  // another seed, another mask
  const auto e = run(1, false, 2);
  CHECK(e[0] == e[1]);  // evaluation: no dropout
}

// ---------------------------------------------------------------------------------------------
// Pretrained weights

TEST_CASE("load_pretrained: a ResNet state_dict into a DeepLabv3 backbone, round trip") {
  test::TempDir dir("pretrained");
  Generator gen(0);
  models::ResNetOptions ro;
  ro.blocks = {1, 1, 2, 3};
  ro.base_channels = 8;
  ro.num_classes = 10;
  models::ResNet resnet(ro, gen);
  resnet.save_state_dict(dir / "resnet.safetensors");
  models::DeepLabV3 net(small_deeplab(8), gen, std::make_shared<Generator>(1));
  const nn::StateDict head_before = net.classifier->state_dict();

  models::PretrainedReport report =
      models::load_pretrained(net, dir / "resnet.safetensors", models::imagenet_backbone_options());
  CHECK(report.load.loaded.size() == net.backbone->state_dict().size());
  CHECK(report.load.ok());
  CHECK(report.dropped == std::vector<std::string>{"fc.weight", "fc.bias"});
  CHECK(report.target == "backbone.");
  const nn::StateDict src = resnet.state_dict(), dst = net.backbone->state_dict();
  REQUIRE(dst.size() + 2 == src.size());
  for (size_t i = 0; i < dst.size(); ++i) {
    CAPTURE(dst[i].first);
    CHECK(dst[i].first == src[i].first);
    CHECK(to_vector<double>(dst[i].second) == to_vector<double>(src[i].second));
  }
  const nn::StateDict head_after = net.classifier->state_dict();  // untouched
  for (size_t i = 0; i < head_after.size(); ++i) {
    CHECK(to_vector<double>(head_after[i].second) == to_vector<double>(head_before[i].second));
  }

  // A whole model back into a fresh one through a renaming: "backbone." -> "encoder.".
  net.save_state_dict(dir / "deeplab.safetensors");
  models::DeepLabV3 other(small_deeplab(8), gen, std::make_shared<Generator>(1));
  models::PretrainedOptions rename;
  rename.mappings = {{"backbone.", "backbone."},
                     {"classifier.", "classifier."},
                     {"aux_classifier.", "aux_classifier."}};
  report = models::load_pretrained(other, dir / "deeplab.safetensors", rename);
  CHECK(report.load.loaded.size() == other.state_dict().size());
  CHECK(to_vector<double>(other.aspp->project->at<nn::Conv2d>(0)->weight) ==
        to_vector<double>(net.aspp->project->at<nn::Conv2d>(0)->weight));
}

TEST_CASE("load_pretrained: missing, mismatched and unexpected tensors; the study's prefix bug") {
  test::TempDir dir("pretrained_bad");
  Generator gen(0);
  models::ResNetOptions ro;
  ro.blocks = {1, 1, 2, 3};
  ro.base_channels = 8;
  models::ResNet resnet(ro, gen);
  const nn::StateDict full = resnet.state_dict();
  models::DeepLabV3 net(small_deeplab(8), gen, std::make_shared<Generator>(1));
  const std::vector<double> before = to_vector<double>(net.backbone->conv1->weight);
  auto write = [&](const std::string& name, const nn::StateDict& dict) {
    save_safetensors(dir / name, dict);
    return dir / name;
  };
  auto unchanged = [&] { return to_vector<double>(net.backbone->conv1->weight) == before; };

  SUBCASE("a missing tensor is an error naming it; nothing is loaded") {
    nn::StateDict dict;
    for (const auto& [n, t] : full) {
      if (n != "layer3.1.conv2.weight") dict.emplace_back(n, t);
    }
    const auto file = write("missing.safetensors", dict);
    const std::string err = test::error_of(
        [&] { models::load_pretrained(net, file, models::imagenet_backbone_options()); });
    CHECK(test::contains(err, "missing (1): backbone.layer3.1.conv2.weight"));
    CHECK(test::contains(err, "missing.safetensors"));
    CHECK(unchanged());
  }
  SUBCASE("a shape mismatch is reported, and is an error unless require_all is off") {
    nn::StateDict dict = full;
    for (auto& [n, t] : dict) {
      if (n == "layer2.0.conv1.weight") t = zeros({16, 32, 3, 3});
    }
    const auto file = write("shape.safetensors", dict);
    const std::string err = test::error_of(
        [&] { models::load_pretrained(net, file, models::imagenet_backbone_options()); });
    CHECK(test::contains(err,
                         "shape mismatched (1): backbone.layer2.0.conv1.weight: module "
                         "(16,32,1,1), dict (16,32,3,3)"));
    CHECK(unchanged());
    models::PretrainedOptions lenient = models::imagenet_backbone_options();
    lenient.require_all = false;
    models::PretrainedReport report = models::load_pretrained(net, file, lenient);
    REQUIRE(report.load.shape_mismatched.size() == 1);
    CHECK(report.load.shape_mismatched[0].name == "backbone.layer2.0.conv1.weight");
    CHECK(report.load.shape_mismatched[0].got == Shape{16, 32, 3, 3});
    CHECK(report.load.loaded.size() == full.size() - 1);
    CHECK(!unchanged());
  }
  SUBCASE("unexpected tensors are an error unless allowed") {
    nn::StateDict dict = full;
    dict.emplace_back("layer5.0.conv1.weight", zeros({2}));
    const auto file = write("extra.safetensors", dict);
    CHECK(test::contains(test::error_of([&] {
                           models::load_pretrained(net, file, models::imagenet_backbone_options());
                         }),
                         "unexpected (1): layer5.0.conv1.weight"));
    CHECK(unchanged());
    models::PretrainedOptions allow = models::imagenet_backbone_options();
    allow.allow_unexpected = true;
    models::PretrainedReport report = models::load_pretrained(net, file, allow);
    CHECK(report.load.unexpected == std::vector<std::string>{"layer5.0.conv1.weight"});
    CHECK(report.load.loaded.size() == full.size());
  }
  SUBCASE("a checkpoint under another prefix loads nothing and says so (the study's bug)") {
    nn::StateDict dict;
    for (const auto& [n, t] : full) dict.emplace_back("module." + n, t);
    const auto file = write("prefixed.safetensors", dict);
    const std::string err = test::error_of(
        [&] { models::load_pretrained(net, file, models::imagenet_backbone_options()); });
    CHECK(test::contains(err, "loaded 0 of " + std::to_string(full.size())));
    CHECK(test::contains(err,
                         "unexpected (" + std::to_string(full.size()) + "): module.conv1.weight"));
    CHECK(unchanged());
    models::PretrainedOptions mapped;
    mapped.mappings = {{"module.", "backbone."}};
    CHECK(models::load_pretrained(net, file, mapped).load.loaded.size() == full.size());
  }
}
