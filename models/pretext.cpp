// The pretext networks (design notes in pretext.h).
#include "models/pretext.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/autograd.h"

namespace seg::models {

namespace {

// The backbone options of a pretext net: checked (no fc, 3 input channels), else an error naming
// the net and the option.
ResNetOptions pretext_backbone(const ResNetOptions& o, const char* net) {
  SEG_CHECK(o.num_classes == 0, net, ": backbone.num_classes is ", o.num_classes,
            "; the backbone must have no fc (num_classes 0), as DeepLabv3's");
  SEG_CHECK(o.in_channels == 3, net, ": backbone.in_channels is ", o.in_channels,
            "; the backbone must take 3 channels, as DeepLabv3's");
  return o;
}

// Global average pooling: (n, c, h, w) -> (n, c).
Tensor pooled(const Tensor& x) {
  return adaptive_avg_pool2d(x, 1, 1).flatten(1);
}

// p-norm distance of each row, as triplet_margin_loss computes it: ||a - b + eps||_p.
std::vector<double> row_distances(const Tensor& a, const Tensor& b, int p) {
  const std::vector<double> x = to_vector<double>(a), y = to_vector<double>(b);
  const int64_t n = a.size(0), d = a.size(1);
  constexpr double kEps = 1e-6;
  std::vector<double> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      const double v = std::abs(x[i * d + j] - y[i * d + j] + kEps);
      s += p == 1 ? v : v * v;
    }
    out[i] = p == 1 ? s : std::sqrt(s);
  }
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TripletNet

TripletNet::TripletNet(const TripletNetOptions& opts, Generator& gen)
    : nn::Module("TripletNet"), options(opts) {
  SEG_CHECK(opts.embedding_dim >= 0, "TripletNet: embedding_dim ", opts.embedding_dim,
            " must be >= 0 (0: no projection)");
  backbone = register_module(
      "backbone", std::make_shared<ResNet>(pretext_backbone(opts.backbone, "TripletNet"), gen));
  if (opts.embedding_dim > 0) {
    projection = register_module(
        "projection",
        std::make_shared<nn::Linear>(backbone->layer_channels(4), opts.embedding_dim, gen));
  }
}

int64_t TripletNet::embedding_dim() const {
  return options.embedding_dim > 0 ? options.embedding_dim : backbone->layer_channels(4);
}

Tensor TripletNet::forward(const Tensor& x) {
  SEG_CHECK(x.defined() && x.dim() == 4 && x.size(1) == 3,
            "TripletNet: expected input x (n, 3, H, W), got ", x.str());
  Tensor f = pooled(backbone->forward(x));  // (n, 32 b)
  return projection ? projection->forward(f) : f;
}

TripletEmbeddings TripletNet::embed(const Tensor& anchor, const Tensor& positive,
                                    const Tensor& negative) {
  const std::pair<const char*, const Tensor*> inputs[] = {
      {"anchor", &anchor}, {"positive", &positive}, {"negative", &negative}};
  for (const auto& [name, t] : inputs) {
    SEG_CHECK(t->defined() && t->dim() == 4 && t->size(1) == 3, "TripletNet: expected ", name,
              " (n, 3, H, W), got ", t->str());
    SEG_CHECK(t->sizes() == anchor.sizes(), "TripletNet: ", name, " ", t->str(),
              " differs in shape from anchor ", anchor.str());
  }
  const int64_t n = anchor.size(0);
  Tensor e = forward(cat({anchor, positive, negative}, 0));  // (3n, d), one backbone pass
  return {e.narrow(0, 0, n), e.narrow(0, n, n), e.narrow(0, 2 * n, n)};
}

Tensor triplet_loss(const TripletEmbeddings& e, int p, double margin) {
  return triplet_margin_loss(e.anchor, e.positive, e.negative, margin, p);
}

int64_t triplet_correct(const TripletEmbeddings& e, int p) {
  SEG_CHECK(p == 1 || p == 2, "triplet_correct: p = ", p, " (1 or 2)");
  SEG_CHECK(e.anchor.defined() && e.anchor.dim() == 2 && e.positive.sizes() == e.anchor.sizes() &&
                e.negative.sizes() == e.anchor.sizes(),
            "triplet_correct: expected three (n, d) embeddings, got anchor ", e.anchor.str(),
            ", positive ", e.positive.str(), ", negative ", e.negative.str());
  NoGradGuard no_grad;
  const std::vector<double> dp = row_distances(e.anchor, e.positive, p);
  const std::vector<double> dn = row_distances(e.anchor, e.negative, p);
  int64_t correct = 0;
  for (size_t i = 0; i < dp.size(); ++i) correct += dp[i] < dn[i] ? 1 : 0;
  return correct;
}

// ---------------------------------------------------------------------------------------------
// FrameOrderNet

std::vector<std::pair<int, int>> FrameOrderNet::frame_pairs(int num_frames) {
  std::vector<std::pair<int, int>> out;
  for (int i = 0; i < num_frames; ++i) {
    for (int j = i + 1; j < num_frames; ++j) out.emplace_back(i, j);
  }
  return out;
}

FrameOrderNet::FrameOrderNet(const FrameOrderNetOptions& opts, Generator& gen,
                             std::shared_ptr<Generator> dropout_gen)
    : nn::Module("FrameOrderNet"), options(opts), dropout_generator(std::move(dropout_gen)) {
  SEG_CHECK(dropout_generator != nullptr, "FrameOrderNet: the dropout generator is null");
  SEG_CHECK(opts.num_frames == 3 || opts.num_frames == 4, "FrameOrderNet: num_frames ",
            opts.num_frames, " is not supported (3 or 4)");
  SEG_CHECK(opts.pair_hidden >= 1, "FrameOrderNet: pair_hidden ", opts.pair_hidden,
            " must be >= 1");
  SEG_CHECK(opts.dropout >= 0.0 && opts.dropout < 1.0, "FrameOrderNet: dropout ", opts.dropout,
            " is outside [0, 1)");
  backbone = register_module(
      "backbone", std::make_shared<ResNet>(pretext_backbone(opts.backbone, "FrameOrderNet"), gen));
  const int64_t f = backbone->layer_channels(4);
  const int64_t pairs = static_cast<int64_t>(frame_pairs(opts.num_frames).size());
  pair_fc = register_module("pair_fc", std::make_shared<nn::Linear>(2 * f, opts.pair_hidden, gen));
  dropout =
      register_module("dropout", std::make_shared<nn::Dropout>(opts.dropout, dropout_generator));
  classifier = register_module(
      "classifier", std::make_shared<nn::Linear>(pairs * opts.pair_hidden, num_classes(), gen));
}

int64_t FrameOrderNet::num_classes() const {
  int64_t k = 1;
  for (int i = 2; i <= options.num_frames; ++i) k *= i;
  return k;
}

Tensor FrameOrderNet::forward(const Tensor& frames) {
  const int64_t t = options.num_frames;
  SEG_CHECK(frames.defined() && frames.dim() == 5 && frames.size(1) == t && frames.size(2) == 3,
            "FrameOrderNet: expected frames (n, ", t, ", 3, H, W), got ", frames.str());
  const int64_t n = frames.size(0);
  Tensor x = frames.reshape({n * t, 3, frames.size(3), frames.size(4)});
  Tensor f = pooled(backbone->forward(x)).reshape({n, t, -1});  // (n, T, F), one backbone pass
  // Every pair through the shared pair_fc in one product: (P n, 2F) -> (P n, hidden).
  std::vector<Tensor> pair_inputs;
  for (const auto& [i, j] : frame_pairs(static_cast<int>(t))) {
    pair_inputs.push_back(cat({f.select(1, i), f.select(1, j)}, 1));  // (n, 2F)
  }
  const int64_t pairs = static_cast<int64_t>(pair_inputs.size());
  Tensor h = relu(pair_fc->forward(cat(pair_inputs, 0)));  // (P n, hidden), pair-major
  h = h.reshape({pairs, n, options.pair_hidden}).permute({1, 0, 2}).reshape({n, -1});
  return classifier->forward(dropout->forward(h));  // (n, T!)
}

// ---------------------------------------------------------------------------------------------
// ColorizationNet

namespace {

ResNetOptions colorization_backbone(const ColorizationNetOptions& o) {
  SEG_CHECK(o.output_stride == 8 || o.output_stride == 16 || o.output_stride == 32,
            "ColorizationNet: output_stride ", o.output_stride, " is not supported (8, 16 or 32)");
  ResNetOptions r = pretext_backbone(o.backbone, "ColorizationNet");
  r.replace_stride_with_dilation = {false, o.output_stride == 8, o.output_stride <= 16};
  return r;
}

}  // namespace

ColorizationNet::ColorizationNet(const ColorizationNetOptions& opts, Generator& gen)
    : nn::Module("ColorizationNet"), options(opts) {
  SEG_CHECK(opts.embed_dim >= 1, "ColorizationNet: embed_dim ", opts.embed_dim, " must be >= 1");
  SEG_CHECK(opts.temperature > 0.0 && std::isfinite(opts.temperature),
            "ColorizationNet: temperature ", opts.temperature, " must be > 0");
  SEG_CHECK(opts.ab_scale > 0.0, "ColorizationNet: ab_scale ", opts.ab_scale, " must be > 0");
  SEG_CHECK(opts.bins >= 1 && opts.ab_range > 0.0 && opts.bin_eps >= 0.0,
            "ColorizationNet: invalid bins options (bins ", opts.bins, ", ab_range ", opts.ab_range,
            ", bin_eps ", opts.bin_eps, ")");
  backbone =
      register_module("backbone", std::make_shared<ResNet>(colorization_backbone(opts), gen));
  embed = register_module(
      "embed", std::make_shared<nn::Conv2d>(backbone->layer_channels(4), opts.embed_dim, 1, gen));
}

int64_t ColorizationNet::value_channels() const {
  return options.mode == ColorMode::ab ? 2 : options.bins * options.bins;
}

std::array<int64_t, 2> ColorizationNet::feature_size(int64_t height, int64_t width) const {
  // conv1 and the max pool halve (rounding up), then each of layer2..4 that keeps its stride.
  const int halvings = 2 + (backbone->output_stride() == 32   ? 3
                            : backbone->output_stride() == 16 ? 2
                                                              : 1);
  for (int i = 0; i < halvings; ++i) {
    height = (height + 1) / 2;
    width = (width + 1) / 2;
  }
  return {height, width};
}

namespace {

void check_grey(const Tensor& grey) {
  SEG_CHECK(grey.defined() && grey.dim() == 5 && grey.size(1) >= 2 && grey.size(2) == 1,
            "ColorizationNet: expected grey (n, R+1, 1, H, W) with R >= 1 references, got ",
            grey.str());
}

}  // namespace

Tensor ColorizationNet::attention_of(const Tensor& grey, int64_t* h, int64_t* w) {
  check_grey(grey);
  const int64_t n = grey.size(0), frames = grey.size(1), refs = frames - 1;
  const int64_t height = grey.size(3), width = grey.size(4);
  // Grey replicated to 3 channels: conv1 keeps DeepLabv3's (b, 3, 7, 7).
  Tensor x = grey.reshape({n * frames, 1, height, width})
                 .expand({n * frames, 3, height, width})
                 .contiguous();
  Tensor f = embed->forward(backbone->forward(x));  // (n F, D, h, w)
  const int64_t d = f.size(1), p = f.size(2) * f.size(3);
  *h = f.size(2);
  *w = f.size(3);
  f = f.reshape({n, frames, d, p});
  Tensor target = f.select(1, refs).transpose(1, 2);  // (n, P, D)
  Tensor refs_t = f.narrow(1, 0, refs).permute({0, 2, 1, 3}).reshape({n, d, refs * p});
  Tensor logits = matmul(target, refs_t) * (1.0 / options.temperature);  // (n, P, R P)
  return softmax(logits, 2);
}

Tensor ColorizationNet::forward(const Tensor& grey) {
  int64_t h = 0, w = 0;
  return attention_of(grey, &h, &w);
}

Tensor ColorizationNet::copy(const Tensor& attention, const Tensor& ref_values) {
  SEG_CHECK(ref_values.defined() && ref_values.dim() == 5,
            "ColorizationNet::copy: expected ref_values (n, R, K, h, w), got ", ref_values.str());
  const int64_t n = ref_values.size(0), refs = ref_values.size(1), k = ref_values.size(2);
  const int64_t h = ref_values.size(3), w = ref_values.size(4), p = h * w;
  SEG_CHECK(attention.defined() && attention.dim() == 3 && attention.size(0) == n &&
                attention.size(1) == p && attention.size(2) == refs * p,
            "ColorizationNet::copy: attention ", attention.str(), " does not match ref_values ",
            ref_values.str(), ": expected (", n, ", ", p, ", ", refs * p, ")");
  Tensor v = ref_values.permute({0, 1, 3, 4, 2}).reshape({n, refs * p, k});  // (n, R P, K)
  return matmul(attention, v).transpose(1, 2).reshape({n, k, h, w});
}

Tensor ColorizationNet::bin_centres() const {
  const int64_t q = options.bins;
  const double width = 2.0 * options.ab_range / static_cast<double>(q);
  std::vector<double> c(static_cast<size_t>(q * q * 2));
  for (int64_t i = 0; i < q * q; ++i) {
    c[2 * i] = -options.ab_range + (static_cast<double>(i / q) + 0.5) * width;
    c[2 * i + 1] = -options.ab_range + (static_cast<double>(i % q) + 0.5) * width;
  }
  return from_vector(c, {q * q, 2});
}

Tensor ColorizationNet::color_values(const Tensor& lab, int64_t h, int64_t w) const {
  SEG_CHECK(lab.defined() && lab.dim() == 5 && lab.size(2) == 3,
            "ColorizationNet: expected lab (n, F, 3, H, W), got ", lab.str());
  NoGradGuard no_grad;
  const int64_t n = lab.size(0), frames = lab.size(1);
  // Area averages at h x w, then a and b.
  Tensor ab = adaptive_avg_pool2d(lab.reshape({n * frames, 3, lab.size(3), lab.size(4)}), h, w)
                  .narrow(1, 1, 2);  // (n F, 2, h, w)
  if (options.mode == ColorMode::ab) {
    return (ab * (1.0 / options.ab_scale)).reshape({n, frames, 2, h, w});
  }
  // One-hot bins, built on the host from the pooled ab.
  const int64_t q = options.bins, p = h * w;
  const double width = 2.0 * options.ab_range / static_cast<double>(q);
  const std::vector<double> v = to_vector<double>(ab.contiguous());
  std::vector<double> onehot(static_cast<size_t>(n * frames * q * q * p), 0.0);
  auto bin = [&](double x) {
    const double b = std::floor((x + options.ab_range) / width);
    return static_cast<int64_t>(std::clamp(b, 0.0, static_cast<double>(q - 1)));
  };
  for (int64_t i = 0; i < n * frames; ++i) {
    for (int64_t j = 0; j < p; ++j) {
      const int64_t k = bin(v[(i * 2) * p + j]) * q + bin(v[(i * 2 + 1) * p + j]);
      onehot[(i * q * q + k) * p + j] = 1.0;
    }
  }
  return from_vector(onehot, {n, frames, q * q, h, w}).to(lab.dtype()).to(lab.device());
}

Tensor ColorizationNet::color_loss(const Tensor& prediction, const Tensor& target_values) const {
  SEG_CHECK(prediction.defined() && prediction.dim() == 4 &&
                prediction.size(1) == value_channels() &&
                target_values.sizes() == prediction.sizes(),
            "ColorizationNet: expected prediction and target values (n, ", value_channels(),
            ", h, w) of one shape, got ", prediction.str(), " and ", target_values.str());
  if (options.mode == ColorMode::ab) return l1_loss(prediction, target_values);
  Tensor p_true = sum(prediction * target_values, {1});  // (n, h, w)
  return -mean(log(p_true + options.bin_eps));
}

ColorizationOutput ColorizationNet::forward_loss(const Tensor& grey, const Tensor& lab) {
  check_grey(grey);
  SEG_CHECK(lab.defined() && lab.dim() == 5 && lab.size(0) == grey.size(0) &&
                lab.size(1) == grey.size(1) && lab.size(2) == 3 && lab.size(3) == grey.size(3) &&
                lab.size(4) == grey.size(4),
            "ColorizationNet: expected lab (", grey.size(0), ", ", grey.size(1), ", 3, ",
            grey.size(3), ", ", grey.size(4), ") to match grey ", grey.str(), ", got ", lab.str());
  ColorizationOutput out;
  out.attention = attention_of(grey, &out.h, &out.w);
  const int64_t refs = grey.size(1) - 1;
  out.values = color_values(lab, out.h, out.w);
  out.prediction = copy(out.attention, out.values.narrow(1, 0, refs));
  out.loss = color_loss(out.prediction, out.values.select(1, refs));
  return out;
}

Tensor ColorizationNet::predicted_ab(const Tensor& prediction, int64_t out_h, int64_t out_w) const {
  SEG_CHECK(prediction.defined() && prediction.dim() == 4 && prediction.size(1) == value_channels(),
            "ColorizationNet: expected prediction (n, ", value_channels(), ", h, w), got ",
            prediction.str());
  Tensor ab;
  if (options.mode == ColorMode::ab) {
    ab = prediction * options.ab_scale;
  } else {  // expected ab: a 1x1 conv with the bins' centres as weight (2, Q^2, 1, 1)
    const int64_t k = value_channels();
    Tensor centres = bin_centres().transpose(0, 1).contiguous().reshape({2, k, 1, 1});
    ab = conv2d(prediction, centres.to(prediction.dtype()).to(prediction.device()));
  }
  return upsample_bilinear2d(ab, out_h, out_w, /*align_corners=*/false);
}

Tensor colorization_error(const Tensor& predicted_ab, const Tensor& target_lab) {
  SEG_CHECK(predicted_ab.defined() && predicted_ab.dim() == 4 && predicted_ab.size(1) == 2,
            "colorization_error: expected predicted_ab (n, 2, H, W), got ", predicted_ab.str());
  SEG_CHECK(target_lab.defined() && target_lab.dim() == 4 && target_lab.size(1) == 3 &&
                target_lab.size(0) == predicted_ab.size(0) &&
                target_lab.size(2) == predicted_ab.size(2) &&
                target_lab.size(3) == predicted_ab.size(3),
            "colorization_error: expected target_lab (", predicted_ab.size(0), ", 3, ",
            predicted_ab.size(2), ", ", predicted_ab.size(3), "), got ", target_lab.str());
  return l1_loss(predicted_ab, target_lab.narrow(1, 1, 2));
}

Tensor colorized_lab(const Tensor& target_grey, const Tensor& ab) {
  SEG_CHECK(ab.defined() && ab.dim() == 4 && ab.size(1) == 2,
            "colorized_lab: expected ab (n, 2, H, W), got ", ab.str());
  SEG_CHECK(target_grey.defined() && target_grey.dim() == 4 && target_grey.size(1) == 1 &&
                target_grey.size(0) == ab.size(0) && target_grey.size(2) == ab.size(2) &&
                target_grey.size(3) == ab.size(3),
            "colorized_lab: expected target_grey (", ab.size(0), ", 1, ", ab.size(2), ", ",
            ab.size(3), "), got ", target_grey.str());
  return cat({(target_grey + 1.0) * 50.0, ab}, 1);
}

// ---------------------------------------------------------------------------------------------
// Transfer

PretrainedOptions pretext_backbone_options(const std::string& file_prefix) {
  PretrainedOptions o;
  o.mappings = {{file_prefix + "backbone.", "backbone."}};
  o.drop = {file_prefix + "projection.", file_prefix + "pair_fc.", file_prefix + "classifier.",
            file_prefix + "embed."};
  if (!file_prefix.empty()) o.drop.push_back("optim.");
  return o;
}

}  // namespace seg::models
