// The pretext networks (models/pretext.h) and the future-frame network (models/future.h): against
// PyTorch (tests/reference/ref_pretext.py: names, outputs, losses, gradients, BN statistics), and
// without it: shapes, errors naming the input, the transfer contract with DeepLabv3, the dropout
// stream, the colour values, bins and helpers.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/io/safetensors.h"
#include "engine/ops.h"
#include "engine/optim/optimizer.h"
#include "engine/train_state.h"
#include "models/deeplabv3.h"
#include "models/future.h"
#include "models/init.h"
#include "models/pretext.h"
#include "tests/support/reference.h"
#include "tests/support/reference_tensors.h"
#include "tests/support/test_util.h"

using namespace seg;

namespace {

// f64 on both sides (the reference stores the f32-drawn weights exactly as f32): the only
// differences are summation orders, ~1e-16 relative per operation over a few hundred operations
// in depth, relative to max(|reference|, 1) as test_models.cpp.
constexpr double kF64Tolerance = 1e-9;
// The bins loss -log(p + 1e-6) divides the gradient by p + 1e-6 (p >= ~1e-3 where the bin is
// present in these inputs, so at most ~1e3); its gradients are checked relative to max(|ref|, 1)
// too, and their absolute error stays ~1e3 times the f64 rounding above: still far below 1e-9.

using test::max_rel_error;
using Reference = test::ReferenceTensors;

void check_ref(const Tensor& ours, const Reference& ref, const std::string& name,
                 double tolerance = kF64Tolerance) {
  test::check_close(ours, ref, name, tolerance);
}

// Strict load of the reference's "state." tensors (f32) into an f64 model.
void load_state(nn::Module& net, const Reference& ref, const std::string& keep = "") {
  net.to(DType::f64);
  const nn::StateDict state = ref.with_prefix("state.", keep);
  const nn::LoadReport report = net.load_state_dict(state);  // strict: every name and shape
  CHECK(report.ok());
  CHECK(report.loaded.size() == state.size());
}

// Every parameter gradient and, after the training forward, every buffer.
void check_grads_and_buffers(nn::Module& net, const Reference& ref, const std::string& prefix) {
  for (auto& [name, p] : net.named_parameters()) {
    check_ref(p.grad(), ref, prefix + "train.grad." + name);
  }
  for (auto& [name, b] : net.named_buffers()) check_ref(b, ref, prefix + "after." + name);
}

// The small backbone of the reference: torchvision's Bottleneck ResNet, blocks (1, 1, 1, 1),
// base 4 (a few MB of reference data in f64): pooled features 32 * 4 = 128.
models::ResNetOptions small_backbone() {
  models::ResNetOptions o;
  o.blocks = {1, 1, 1, 1};
  o.base_channels = 4;
  return o;
}
constexpr int64_t kFeatures = 128;

models::ColorizationNetOptions small_colorization(models::ColorMode mode) {
  models::ColorizationNetOptions o;
  o.backbone = small_backbone();
  o.embed_dim = 16;
  o.temperature = 0.5;  // as the reference: not 1, so that the division is exercised
  o.mode = mode;
  o.bins = 4;
  return o;
}

// (name, shape) of the state_dict entries under "backbone.", in order.
std::vector<std::pair<std::string, Shape>> backbone_entries(const nn::Module& m) {
  std::vector<std::pair<std::string, Shape>> out;
  for (const auto& [name, t] : m.state_dict()) {
    if (name.rfind("backbone.", 0) == 0) out.emplace_back(name, t.sizes());
  }
  return out;
}

Tensor lab_constant(int64_t n, int64_t frames, int64_t h, int64_t w, double l, double a, double b) {
  Tensor lab = empty({n, frames, 3, h, w});
  lab.narrow(2, 0, 1).fill_(l);
  lab.narrow(2, 1, 1).fill_(a);
  lab.narrow(2, 2, 1).fill_(b);
  return lab;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Against PyTorch

TEST_CASE("TripletNet matches PyTorch: one-pass embeddings, L1 triplet loss, gradients, BN") {
  if (!test::have_reference("pretext_triplet.safetensors")) return;
  Reference ref("pretext_triplet.safetensors");
  Generator gen(0);
  models::TripletNetOptions o;
  o.backbone = small_backbone();
  o.embedding_dim = 16;
  models::TripletNet net(o, gen);
  load_state(net, ref);
  const Tensor a = ref.input("anchor"), p = ref.input("positive"), n = ref.input("negative");

  net.train();
  models::TripletEmbeddings e = net.embed(a, p, n);
  check_ref(e.anchor, ref, "train.anchor");
  check_ref(e.positive, ref, "train.positive");
  check_ref(e.negative, ref, "train.negative");
  Tensor loss = models::triplet_loss(e, 1, 1.0);
  check_ref(loss.reshape({1}), ref, "train.loss");
  loss.backward();
  check_grads_and_buffers(net, ref, "");

  net.eval();
  {
    NoGradGuard no_grad;
    models::TripletEmbeddings ev = net.embed(a, p, n);
    check_ref(ev.anchor, ref, "eval.anchor");
    check_ref(ev.positive, ref, "eval.positive");
    check_ref(ev.negative, ref, "eval.negative");
  }

  // The same backbone without projection: the pooled 32 b features, L2 distance.
  o.embedding_dim = 0;
  models::TripletNet bare(o, gen);
  load_state(bare, ref, "backbone.");
  CHECK(bare.embedding_dim() == kFeatures);
  NoGradGuard no_grad;
  models::TripletEmbeddings eb = bare.embed(a, p, n);
  check_ref(eb.anchor, ref, "noproj.train.anchor");
  check_ref(models::triplet_loss(eb, 2, 1.0).reshape({1}), ref, "noproj.train.loss");
}

TEST_CASE("FrameOrderNet matches PyTorch: pair features, logits, cross entropy, gradients, BN") {
  if (!test::have_reference("pretext_order.safetensors")) return;
  Reference ref("pretext_order.safetensors");
  Generator gen(0);
  models::FrameOrderNetOptions o;
  o.backbone = small_backbone();
  o.pair_hidden = 32;
  o.dropout = 0.0;  // the reference runs with p = 0 so that training is deterministic
  models::FrameOrderNet net(o, gen, std::make_shared<Generator>(1));
  load_state(net, ref);
  const Tensor frames = ref.input("frames");
  net.train();
  Tensor logits = net.forward(frames);
  check_ref(logits, ref, "train.logits");
  Tensor loss = cross_entropy(logits, ref.get("labels"));
  check_ref(loss.reshape({1}), ref, "train.loss");
  loss.backward();
  check_grads_and_buffers(net, ref, "");
  net.eval();
  NoGradGuard no_grad;
  check_ref(net.forward(frames), ref, "eval.logits");
}

TEST_CASE("ColorizationNet matches PyTorch in both colour modes: attention, copy, losses, grads") {
  if (!test::have_reference("pretext_colorization.safetensors")) return;
  Reference ref("pretext_colorization.safetensors");
  const Tensor grey = ref.get("grey"), lab = ref.input("lab");  // (2, 4, 1|3, 32, 64)
  for (models::ColorMode mode : {models::ColorMode::ab, models::ColorMode::bins}) {
    const std::string prefix = mode == models::ColorMode::ab ? "ab." : "bins.";
    CAPTURE(prefix);
    Generator gen(0);
    models::ColorizationNet net(small_colorization(mode), gen);
    load_state(net, ref);
    net.train();
    models::ColorizationOutput out = net.forward_loss(grey, lab);
    CHECK(out.h == 4);
    CHECK(out.w == 8);
    // Bins: one-hot, exactly; ab: area averages (summation order).
    check_ref(out.values, ref, prefix + "values",
                mode == models::ColorMode::bins ? 0.0 : kF64Tolerance);
    check_ref(out.attention, ref, prefix + "train.attention");
    check_ref(out.prediction, ref, prefix + "train.prediction");
    check_ref(out.loss.reshape({1}), ref, prefix + "train.loss");
    out.loss.backward();
    check_grads_and_buffers(net, ref, prefix);
    NoGradGuard no_grad;
    Tensor ab = net.predicted_ab(out.prediction, 32, 64);
    check_ref(ab, ref, prefix + "train.predicted_ab");
    check_ref(models::colorization_error(ab, lab.select(1, 3)).reshape({1}), ref,
                prefix + "train.error");
    if (mode == models::ColorMode::bins) {
      net.eval();
      check_ref(net.forward(grey), ref, "eval.attention");
    }
  }
}

TEST_CASE("FutureFrameNet matches PyTorch (fusion as a (K,1,1) Conv3d there): output, L1, grads") {
  if (!test::have_reference("pretext_future.safetensors")) return;
  Reference ref("pretext_future.safetensors");
  Generator gen(0);
  models::FutureFrameNet net({3, 3, 4, 3}, gen);
  load_state(net, ref);
  const Tensor inputs = ref.input("inputs");  // (2, 3, 3, 16, 32)
  net.train();
  Tensor out = net.forward(inputs);
  check_ref(out, ref, "train.output");
  Tensor loss = l1_loss(out, ref.input("target"));
  check_ref(loss.reshape({1}), ref, "train.loss");
  loss.backward();
  check_grads_and_buffers(net, ref, "");
  net.eval();
  NoGradGuard no_grad;
  check_ref(net.forward(inputs), ref, "eval.output");
}

// ---------------------------------------------------------------------------------------------
// The transfer contract

TEST_CASE("Pretext nets: backbone.* names and shapes are DeepLabv3's; a checkpoint transfers") {
  struct Case {
    const char* what;
    int depth;
    std::vector<int> blocks;
    int64_t base;
  };
  const Case cases[] = {{"ResNet-50 blocks, base 4", 50, {}, 4},
                        {"ResNet-101 blocks, base 4", 101, {}, 4},
                        {"blocks (1, 1, 2, 3), base 8", 101, {1, 1, 2, 3}, 8}};
  for (const Case& c : cases) {
    CAPTURE(c.what);
    Generator gen(0);
    models::ResNetOptions ro;
    ro.depth = c.depth;
    ro.blocks = c.blocks;
    ro.base_channels = c.base;
    models::DeepLabV3Options d;
    d.backbone_depth = c.depth;
    d.backbone_blocks = c.blocks;
    d.base_channels = c.base;
    d.aspp_channels = 8;
    models::DeepLabV3 deeplab(d, gen, std::make_shared<Generator>(1));
    const auto expected = backbone_entries(deeplab);
    CHECK(expected.size() == deeplab.backbone->state_dict().size());

    models::TripletNetOptions to;
    to.backbone = ro;
    to.embedding_dim = 8;
    models::TripletNet triplet(to, gen);
    models::FrameOrderNetOptions fo;
    fo.backbone = ro;
    fo.num_frames = 4;
    fo.pair_hidden = 8;
    models::FrameOrderNet order(fo, gen, std::make_shared<Generator>(2));
    models::ColorizationNetOptions co;
    co.backbone = ro;
    co.output_stride = 16;  // dilation changes no name or shape
    models::ColorizationNet color(co, gen);
    const std::pair<const char*, nn::Module*> nets[] = {
        {"triplet", &triplet}, {"order", &order}, {"colorization", &color}};
    test::TempDir dir("pretext_transfer");
    for (const auto& [name, net] : nets) {
      CAPTURE(name);
      CHECK(backbone_entries(*net) == expected);
      if (c.blocks.empty()) continue;  // the load itself once, on the small backbone
      const auto file = dir / (std::string(name) + ".safetensors");
      net->save_state_dict(file);
      models::PretrainedReport report =
          models::load_pretrained(deeplab, file, models::pretext_backbone_options());
      CHECK(report.load.ok());
      CHECK(report.load.loaded.size() == expected.size());
      const nn::StateDict src = net->state_dict(), dst = deeplab.state_dict();
      std::map<std::string, Tensor> by_name(dst.begin(), dst.end());
      for (const auto& [n, t] : src) {
        if (n.rfind("backbone.", 0) != 0) continue;
        CAPTURE(n);
        CHECK(to_vector<double>(by_name.at(n)) == to_vector<double>(t));
      }
    }
    if (c.blocks.empty()) continue;
    // A TrainState checkpoint ("model." and "optim." tensors) of the frame-order net.
    SGD opt(order.parameters(), SGDOptions{.lr = 0.1, .momentum = 0.9});
    Tensor loss = sum(order.forward(randn({2, 4, 3, 32, 32}, gen)));
    loss.backward();
    opt.step();
    TrainState state(order, opt);
    state.save(dir / "ckpt.safetensors");
    models::PretrainedReport report = models::load_pretrained(
        deeplab, dir / "ckpt.safetensors", models::pretext_backbone_options("model."));
    CHECK(report.load.loaded.size() == expected.size());
    CHECK(to_vector<double>(deeplab.backbone->conv1->weight) ==
          to_vector<double>(order.backbone->conv1->weight));
    // A plain state_dict read as a TrainState checkpoint maps nothing: refused, naming it.
    CHECK(test::contains(test::error_of([&] {
                           models::load_pretrained(deeplab, dir / "triplet.safetensors",
                                                   models::pretext_backbone_options("model."));
                         }),
                         "missing"));
  }
}

// ---------------------------------------------------------------------------------------------
// Shapes and errors

TEST_CASE("TripletNet: shapes, one pass for three inputs, accuracy count, errors") {
  Generator gen(0);
  models::TripletNetOptions o;
  o.backbone = small_backbone();
  models::TripletNet bare(o, gen);
  CHECK(bare.projection == nullptr);
  CHECK(bare.embedding_dim() == kFeatures);
  const Tensor x = randn({2, 3, 32, 48}, gen);
  CHECK(bare.forward(x).sizes() == Shape{2, kFeatures});
  o.embedding_dim = 12;
  models::TripletNet net(o, gen);
  CHECK(net.projection->weight.sizes() == Shape{12, kFeatures});
  models::TripletEmbeddings e =
      net.embed(x, randn({2, 3, 32, 48}, gen), randn({2, 3, 32, 48}, gen));
  CHECK(e.anchor.sizes() == Shape{2, 12});
  CHECK(e.negative.sizes() == Shape{2, 12});
  // One pass: BN counted one batch.
  CHECK(net.backbone->bn1->num_batches_tracked.item() == 1.0);
  CHECK(models::triplet_loss(e).dim() == 0);

  // d(a, p) < d(a, n): row 0 yes (L1 1 vs 3), row 1 no (2 vs 1).
  models::TripletEmbeddings m{from_vector(std::vector<float>{0, 0, 0, 0}, {2, 2}),
                              from_vector(std::vector<float>{1, 0, 2, 0}, {2, 2}),
                              from_vector(std::vector<float>{3, 0, 0, 1}, {2, 2})};
  CHECK(models::triplet_correct(m, 1) == 1);
  CHECK(models::triplet_correct(m, 2) == 1);

  CHECK(test::contains(test::error_of([&] {
                         net.forward(randn({2, 1, 32, 32}, gen));
                       }),
                       "TripletNet: expected input x (n, 3, H, W), got f32 (2,1,32,32)"));
  CHECK(test::contains(
      test::error_of([&] {
        net.embed(x, x, randn({2, 3, 32, 40}, gen));
      }),
      "TripletNet: negative f32 (2,3,32,40) cpu differs in shape from anchor f32 (2,3,32,48)"));
  models::TripletNetOptions bad = o;
  bad.backbone.num_classes = 10;
  CHECK(test::contains(test::error_of([&] { models::TripletNet t(bad, gen); }),
                       "TripletNet: backbone.num_classes is 10"));
  bad = o;
  bad.backbone.in_channels = 1;
  CHECK(test::contains(test::error_of([&] { models::TripletNet t(bad, gen); }),
                       "backbone.in_channels is 1"));
}

TEST_CASE("FrameOrderNet: 3 or 4 frames, pairs in lexicographic order, errors") {
  CHECK(models::FrameOrderNet::frame_pairs(3) ==
        std::vector<std::pair<int, int>>{{0, 1}, {0, 2}, {1, 2}});
  CHECK(models::FrameOrderNet::frame_pairs(4).size() == 6);
  CHECK(models::FrameOrderNet::frame_pairs(4)[2] == std::pair<int, int>{0, 3});
  Generator gen(0);
  auto dropout_gen = std::make_shared<Generator>(1);
  models::FrameOrderNetOptions o;
  o.backbone = small_backbone();
  o.pair_hidden = 16;
  for (int t : {3, 4}) {
    CAPTURE(t);
    o.num_frames = t;
    models::FrameOrderNet net(o, gen, dropout_gen);
    CHECK(net.num_classes() == (t == 3 ? 6 : 24));
    CHECK(net.pair_fc->weight.sizes() == Shape{16, 2 * kFeatures});
    CHECK(net.classifier->weight.sizes() == Shape{net.num_classes(), (t == 3 ? 3 : 6) * 16});
    CHECK(net.forward(randn({2, t, 3, 32, 32}, gen)).sizes() == Shape{2, net.num_classes()});
    CHECK(test::contains(test::error_of([&] {
                           net.forward(randn({2, 5, 3, 32, 32}, gen));
                         }),
                         "FrameOrderNet: expected frames (n, " + std::to_string(t) +
                             ", 3, H, W), got f32 (2,5,3,32,32)"));
  }
  CHECK(models::FrameOrderNetOptions().dropout == 0.5);
  CHECK(models::FrameOrderNetOptions().pair_hidden == 512);
  o.num_frames = 5;
  CHECK(test::contains(test::error_of([&] { models::FrameOrderNet n(o, gen, dropout_gen); }),
                       "num_frames 5 is not supported (3 or 4)"));
  o.num_frames = 3;
  CHECK(test::contains(test::error_of([&] { models::FrameOrderNet n(o, gen, nullptr); }),
                       "FrameOrderNet: the dropout generator is null"));
}

TEST_CASE(
    "FrameOrderNet: dropout draws from the model's generator in training only; a "
    "checkpoint saves and restores the stream") {
  test::TempDir dir("order_dropout");
  Generator gen(0);
  auto dropout_gen = std::make_shared<Generator>(5);
  models::FrameOrderNetOptions o;
  o.backbone = small_backbone();
  o.pair_hidden = 16;  // dropout 0.5 (the default)
  models::FrameOrderNet net(o, gen, dropout_gen);
  CHECK(net.dropout_generator == dropout_gen);
  CHECK(net.dropout->generator == dropout_gen);
  const Tensor frames = randn({2, 3, 3, 32, 32}, gen);
  SGD opt(net.parameters(), SGDOptions{.lr = 0.0});
  TrainState state(net, opt);
  state.add_generator("dropout", dropout_gen.get());

  net.eval();
  const std::vector<float> e0 = to_vector<float>(net.forward(frames));
  CHECK(to_vector<float>(net.forward(frames)) == e0);
  CHECK(dropout_gen->calls() == 0);
  net.train();
  net.forward(frames);
  CHECK(dropout_gen->calls() == 1);
  state.save(dir / "ckpt.safetensors");
  const std::vector<float> a = to_vector<float>(net.forward(frames));
  const std::vector<float> b = to_vector<float>(net.forward(frames));
  CHECK(a != b);  // a fresh mask each call
  CHECK(dropout_gen->calls() == 3);
  state.load(dir / "ckpt.safetensors");  // the weights, BN statistics and the stream
  CHECK(dropout_gen->calls() == 1);
  CHECK(to_vector<float>(net.forward(frames)) == a);
  CHECK(to_vector<float>(net.forward(frames)) == b);
}

TEST_CASE("ColorizationNet: attention, copy, feature sizes, output stride, errors") {
  Generator gen(0);
  models::ColorizationNetOptions o = small_colorization(models::ColorMode::ab);
  models::ColorizationNet net(o, gen);
  CHECK(net.backbone->output_stride() == 8);
  CHECK(net.embed->weight.sizes() == Shape{16, kFeatures, 1, 1});
  CHECK(net.backbone->conv1->weight.sizes() == Shape{4, 3, 7, 7});
  CHECK(models::ColorizationNetOptions().temperature == 1.0);
  CHECK(models::ColorizationNetOptions().embed_dim == 64);
  const Tensor grey = rand({2, 3, 1, 33, 65}, gen) * 2.0 - 1.0;  // R = 2, odd sizes
  Tensor a = net.forward(grey);
  const auto hw = net.feature_size(33, 65);
  CHECK(hw == std::array<int64_t, 2>{5, 9});
  const int64_t p = hw[0] * hw[1];
  CHECK(a.sizes() == Shape{2, p, 2 * p});
  // Rows are distributions over the reference pixels.
  const Tensor rows = sum(a, {2});
  for (double v : to_vector<double>(rows)) CHECK(v == doctest::Approx(1.0).epsilon(1e-5));

  // copy: attention one-hot on reference pixel r*P + j copies that pixel's values.
  std::vector<float> att(static_cast<size_t>(2 * p * 2 * p), 0.0f);
  for (int64_t s = 0; s < 2; ++s) {
    for (int64_t i = 0; i < p; ++i) att[(s * p + i) * 2 * p + (s == 0 ? p + i : (i + 1) % p)] = 1;
  }
  const Tensor values = randn({2, 2, 3, hw[0], hw[1]}, gen);  // (n, R, K, h, w)
  const Tensor copied = models::ColorizationNet::copy(from_vector(att, {2, p, 2 * p}), values);
  CHECK(copied.sizes() == Shape{2, 3, hw[0], hw[1]});
  // Sample 0 copies reference 1 in place; sample 1 reference 0 shifted by one pixel.
  CHECK(to_vector<float>(copied.select(0, 0)) ==
        to_vector<float>(values.select(0, 0).select(0, 1)));
  const std::vector<float> v10 = to_vector<float>(values.select(0, 1).select(0, 0));  // (3, h, w)
  const std::vector<float> c1 = to_vector<float>(copied.select(0, 1));
  for (int64_t k = 0; k < 3; ++k) {
    for (int64_t i = 0; i < p; ++i) CHECK(c1[k * p + i] == v10[k * p + (i + 1) % p]);
  }

  for (int os : {16, 32}) {
    CAPTURE(os);
    models::ColorizationNetOptions oo = o;
    oo.output_stride = os;
    models::ColorizationNet other(oo, gen);
    CHECK(other.backbone->output_stride() == os);
    const auto s = other.feature_size(33, 65);
    CHECK(other.forward(grey).sizes() == Shape{2, s[0] * s[1], 2 * s[0] * s[1]});
  }

  // Errors name the tensor.
  CHECK(test::contains(test::error_of([&] {
                         net.forward(randn({2, 3, 3, 32, 32}, gen));
                       }),
                       "ColorizationNet: expected grey (n, R+1, 1, H, W) with R >= 1 references, "
                       "got f32 (2,3,3,32,32)"));
  CHECK(test::contains(test::error_of([&] {
                         net.forward(randn({2, 1, 1, 32, 32}, gen));
                       }),
                       "expected grey"));
  CHECK(test::contains(
      test::error_of([&] { net.forward_loss(grey, lab_constant(2, 3, 32, 64, 50, 0, 0)); }),
      "ColorizationNet: expected lab (2, 3, 3, 33, 65) to match grey"));
  CHECK(test::contains(test::error_of([&] {
                         models::ColorizationNet::copy(a, randn({2, 3, 3, hw[0], hw[1]}, gen));
                       }),
                       "does not match ref_values"));
  models::ColorizationNetOptions bad = o;
  bad.output_stride = 4;
  CHECK(test::contains(test::error_of([&] { models::ColorizationNet n(bad, gen); }),
                       "output_stride 4 is not supported"));
  bad = o;
  bad.temperature = 0.0;
  CHECK(test::contains(test::error_of([&] { models::ColorizationNet n(bad, gen); }),
                       "temperature 0 must be > 0"));
}

TEST_CASE("ColorizationNet: ab values, bins, expected ab, losses, error and colourised Lab") {
  Generator gen(0);
  const int64_t n = 1, frames = 3, H = 32, W = 64;
  SUBCASE("ab mode: area averages / 110; L1 loss; predicted ab upsampled") {
    models::ColorizationNet net(small_colorization(models::ColorMode::ab), gen);
    CHECK(net.value_channels() == 2);
    Tensor lab = lab_constant(n, frames, H, W, 40.0, 22.0, -55.0);
    // One 8 x 8 cell of frame 0 holds a = 0 and 44 in halves: its average is 22 again.
    lab.select(0, 0).select(0, 0).select(0, 1).narrow(0, 0, 4).narrow(1, 0, 8).fill_(0.0);
    lab.select(0, 0).select(0, 0).select(0, 1).narrow(0, 4, 4).narrow(1, 0, 8).fill_(44.0);
    const Tensor v = net.color_values(lab, 4, 8);
    CHECK(v.sizes() == Shape{n, frames, 2, 4, 8});
    for (double x : to_vector<double>(v.narrow(2, 0, 1))) CHECK(x == doctest::Approx(0.2));
    for (double x : to_vector<double>(v.narrow(2, 1, 1))) CHECK(x == doctest::Approx(-0.5));
    const Tensor ab = net.predicted_ab(v.select(1, 0), H, W);
    CHECK(ab.sizes() == Shape{n, 2, H, W});
    CHECK(models::colorization_error(ab, lab.select(1, 2)).item() ==
          doctest::Approx(0.0).epsilon(1e-5));
    CHECK(net.color_loss(v.select(1, 0), v.select(1, 1)).item() == 0.0);
    models::ColorizationOutput out = net.forward_loss(rand({n, frames, 1, H, W}, gen), lab);
    CHECK(out.prediction.sizes() == Shape{n, 2, 4, 8});
    CHECK(out.loss.item() == doctest::Approx(0.0).epsilon(1e-5));  // all frames one colour
  }
  SUBCASE("bins mode: a uniform Q x Q grid over [-110, 110]^2, index qa * Q + qb") {
    models::ColorizationNetOptions o = small_colorization(models::ColorMode::bins);
    o.bins = 16;  // the default: width 13.75
    models::ColorizationNet net(o, gen);
    CHECK(models::ColorizationNetOptions().bins == 16);
    CHECK(net.value_channels() == 256);
    struct Colour {
      double a, b;
      int64_t bin;
    };
    const Colour colours[] = {{0.0, 0.0, 8 * 16 + 8},
                              {-110.0, 109.9, 0 * 16 + 15},
                              {-200.0, 300.0, 0 * 16 + 15},
                              {13.75, -13.76, 9 * 16 + 6},
                              {-96.0, -96.3, 1 * 16 + 0}};
    for (const Colour& c : colours) {
      CAPTURE(c.a);
      CAPTURE(c.b);
      const Tensor v = net.color_values(lab_constant(n, frames, H, W, 50, c.a, c.b), 4, 8);
      REQUIRE(v.sizes() == Shape{n, frames, 256, 4, 8});
      const std::vector<double> x = to_vector<double>(v.select(1, 0));  // (1, 256, 4, 8)
      for (int64_t k = 0; k < 256; ++k) CHECK(x[k * 32 + 5] == (k == c.bin ? 1.0 : 0.0));
    }
    // The expected ab of a one-hot prediction is its bin's centre.
    const Tensor centres = net.bin_centres();
    CHECK(centres.sizes() == Shape{256, 2});
    CHECK(to_vector<double>(centres.select(0, 9 * 16 + 6)) ==
          std::vector<double>{-110.0 + 9.5 * 13.75, -110.0 + 6.5 * 13.75});
    const Tensor onehot =
        net.color_values(lab_constant(n, frames, H, W, 50, 13.75, -13.76), 4, 8).select(1, 0);
    const Tensor ab = net.predicted_ab(onehot, H, W);
    CHECK(ab.sizes() == Shape{n, 2, H, W});
    for (double x : to_vector<double>(ab.narrow(1, 0, 1))) CHECK(x == doctest::Approx(20.625));
    for (double x : to_vector<double>(ab.narrow(1, 1, 1))) CHECK(x == doctest::Approx(-20.625));
    // Loss: -log(p[true] + eps): 0 for a certain prediction, log(1 / eps) for an absent bin.
    CHECK(net.color_loss(onehot, onehot).item() == doctest::Approx(-std::log(1.0 + 1e-6)));
    const Tensor other =
        net.color_values(lab_constant(n, frames, H, W, 50, -50, 50), 4, 8).select(1, 0);
    CHECK(net.color_loss(other, onehot).item() == doctest::Approx(-std::log(1e-6)));
    models::ColorizationOutput out = net.forward_loss(
        rand({n, frames, 1, H, W}, gen), lab_constant(n, frames, H, W, 50, 13.75, -13.76));
    CHECK(out.prediction.sizes() == Shape{n, 256, 4, 8});
    CHECK(out.loss.item() == doctest::Approx(0.0).epsilon(1e-5));  // every pixel one bin
  }
  SUBCASE("colourised Lab: L from the target's grey, ab predicted") {
    const Tensor grey = full({1, 1, 2, 2}, 0.2);  // L = 60
    const Tensor ab = full({1, 2, 2, 2}, -7.0);
    const Tensor lab = models::colorized_lab(grey, ab);
    CHECK(lab.sizes() == Shape{1, 3, 2, 2});
    for (float v : to_vector<float>(lab.select(1, 0))) CHECK(v == doctest::Approx(60.0));
    CHECK(to_vector<float>(lab.select(1, 2)) == std::vector<float>(4, -7.0f));
    CHECK(test::contains(test::error_of([&] {
                           models::colorized_lab(grey, full({1, 2, 3, 2}, 0));
                         }),
                         "colorized_lab: expected target_grey (1, 1, 3, 2)"));
  }
}

TEST_CASE("FutureFrameNet: layout, output range and shape, size errors") {
  Generator gen(0);
  const models::FutureFrameNetOptions defaults;
  CHECK(defaults.inputs == 3);
  CHECK(defaults.outputs == 3);
  CHECK(defaults.base_channels == 32);
  CHECK(defaults.levels == 4);
  models::FutureFrameNet net({3, 2, 4, 3}, gen);  // K 3, M 2, base 4, levels 3
  std::map<std::string, Shape> shapes;
  for (auto& [name, t] : net.state_dict()) shapes[name] = t.sizes();
  CHECK(shapes.at("encoder.0.0.weight") == Shape{4, 3, 3, 3});
  CHECK(shapes.at("encoder.3.0.weight") == Shape{32, 16, 3, 3});
  CHECK(shapes.count("encoder.0.0.bias") == 0);
  CHECK(shapes.at("fuse.3.0.weight") == Shape{32, 96, 1, 1});
  CHECK(shapes.at("fuse.0.1.running_mean") == Shape{4});
  CHECK(shapes.at("decoder.0.up.0.weight") == Shape{32, 16, 2, 2});  // (in, out, 2, 2)
  CHECK(shapes.at("decoder.0.conv.0.weight") == Shape{16, 32, 3, 3});
  CHECK(shapes.at("decoder.2.up.0.weight") == Shape{8, 4, 2, 2});
  CHECK(shapes.at("head.weight") == Shape{6, 4, 1, 1});
  CHECK(shapes.at("head.bias") == Shape{6});
  CHECK(net.encoder->at<nn::Sequential>(0)->at<nn::Conv2d>(0)->options.stride_h == 1);
  CHECK(net.encoder->at<nn::Sequential>(1)->at<nn::Conv2d>(0)->options.stride_h == 2);

  Tensor y = net.forward(randn({2, 3, 3, 16, 40}, gen) * 10.0);
  CHECK(y.sizes() == Shape{2, 2, 3, 16, 40});
  for (float v : to_vector<float>(y)) CHECK(std::abs(v) <= 1.0f);

  CHECK(test::contains(test::error_of([&] {
                         net.forward(randn({2, 3, 3, 20, 40}, gen));
                       }),
                       "H x W = 20 x 40 must be divisible by 2^levels = 8 (levels 3)"));
  CHECK(test::contains(test::error_of([&] {
                         net.forward(randn({2, 4, 3, 16, 16}, gen));
                       }),
                       "FutureFrameNet: expected inputs (n, 3, 3, H, W), got f32 (2,4,3,16,16)"));
}

TEST_CASE("FutureFrameNet residual: starts at the last frame, learns the change, needs the frame") {
  Generator gen(0);
  models::FutureFrameNetOptions o{3, 2, 4, 2};
  o.residual = true;
  models::FutureFrameNet net(o, gen);
  const Tensor inputs = randn({2, 3, 3, 8, 12}, gen);
  // The last frame in (-1, 1), as the app passes it.
  const Tensor last = tanh(randn({2, 3, 8, 12}, gen));
  // Zero head: every predicted frame is the last one, up to atanh/tanh rounding in f32.
  const Tensor y = net.forward(inputs, last);
  REQUIRE(y.sizes() == Shape{2, 2, 3, 8, 12});
  const std::vector<float> got = to_vector<float>(y), want = to_vector<float>(last);
  constexpr float kRoundTrip = 1e-5f;  // tanh(atanh(x)) in f32 for |x| < 1 - 1e-3
  const size_t frame = 3 * 8 * 12;
  for (size_t n = 0; n < 2; ++n) {
    for (size_t m = 0; m < 2; ++m) {
      for (size_t k = 0; k < frame; ++k) {
        CHECK(std::abs(got[(n * 2 + m) * frame + k] - want[n * frame + k]) <= kRoundTrip);
      }
    }
  }
  // Gradients reach the head (and through it the rest); none reaches the data.
  Tensor target = zeros({2, 2, 3, 8, 12});
  l1_loss(y, target).backward();
  CHECK(net.head->weight.grad().defined());
  double norm = 0.0;
  for (float g : to_vector<float>(net.head->weight.grad())) norm += std::abs(g);
  CHECK(norm > 0.0);
  // Without the last frame, or with a wrong one: named errors.
  CHECK(test::contains(test::error_of([&] { net.forward(inputs); }),
                       "a residual network needs the last input frame"));
  CHECK(test::contains(test::error_of([&] { net.forward(inputs, last.narrow(3, 0, 6)); }),
                       "FutureFrameNet: expected the last frame (2, 3, 8, 12)"));
}
