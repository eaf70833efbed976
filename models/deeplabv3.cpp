// DeepLabv3 (design notes in deeplabv3.h). Modules are registered in torchvision's order, so the
// state_dict lists tensors as torchvision's does.
#include "models/deeplabv3.h"

#include <cmath>
#include <string>

#include "engine/nn/init.h"

namespace seg::models {

namespace {

std::shared_ptr<nn::Conv2d> conv(int64_t in, int64_t out, int64_t k, int64_t dilation, bool bias,
                                 Generator& gen) {
  const int64_t pad = k == 3 ? dilation : 0;
  return std::make_shared<nn::Conv2d>(in, out, k, gen, Conv2dOptions::make(1, pad, dilation), bias);
}

std::shared_ptr<nn::BatchNorm2d> bn(int64_t c, double momentum) {
  return std::make_shared<nn::BatchNorm2d>(c, 1e-5, momentum);
}

// conv, BN, ReLU as a Sequential ("0", "1", "2").
std::shared_ptr<nn::Sequential> conv_bn_relu(std::shared_ptr<nn::Conv2d> c, double momentum) {
  auto s = std::make_shared<nn::Sequential>();
  const int64_t out = c->out_channels;
  s->append(std::move(c));
  s->append(bn(out, momentum));
  s->append(std::make_shared<nn::ReLU>());
  return s;
}

// DeepLabv3.pytorch's init of every conv: N(0, sqrt(2 / (k * k * out))).
void he_init_convs(nn::Module& module, Generator& gen) {
  for (auto& [name, m] : module.named_modules()) {
    if (auto* c = dynamic_cast<nn::Conv2d*>(m)) {
      const double n = static_cast<double>(c->kernel_h * c->kernel_w * c->out_channels);
      nn::init::normal_(c->weight, gen, 0.0, std::sqrt(2.0 / n));
    }
  }
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Options

DeepLabV3Options DeepLabV3Options::torchvision() {
  return DeepLabV3Options();
}

DeepLabV3Options DeepLabV3Options::study() {
  DeepLabV3Options o;
  o.output_stride = 16;
  o.layout = DeepLabLayout::study;
  o.aux = false;
  o.aspp_dropout = 0.0;
  o.backbone_bn_momentum = 0.05;
  o.head_bn_momentum = 0.0003;
  o.he_init_head = true;
  o.align_corners = true;
  return o;
}

std::vector<int64_t> deeplab_aspp_rates(const DeepLabV3Options& o) {
  if (!o.aspp_rates.empty()) return o.aspp_rates;
  if (o.output_stride == 16) return {6, 12, 18};
  return {12, 24, 36};
}

// ---------------------------------------------------------------------------------------------
// ASPP

ASPP::ASPP(int64_t in_channels, const std::vector<int64_t>& rates_, int64_t channels,
           double dropout, double bn_momentum, std::shared_ptr<Generator> dropout_gen,
           Generator& gen)
    : nn::Module("ASPP"), rates(rates_) {
  SEG_CHECK(in_channels >= 1 && channels >= 1, "ASPP: invalid channels (in ", in_channels, ", out ",
            channels, ")");
  for (int64_t r : rates) SEG_CHECK(r >= 1, "ASPP: rates must be >= 1, got ", r);
  convs = register_module("convs", std::make_shared<nn::Sequential>());
  convs->append(conv_bn_relu(conv(in_channels, channels, 1, 1, false, gen), bn_momentum));
  for (int64_t r : rates) {
    convs->append(conv_bn_relu(conv(in_channels, channels, 3, r, false, gen), bn_momentum));
  }
  auto pooling = std::make_shared<nn::Sequential>();  // torchvision's ASPPPooling
  pooling->append(std::make_shared<nn::AdaptiveAvgPool2d>(1, 1));
  pooling->append(conv(in_channels, channels, 1, 1, false, gen));
  pooling->append(bn(channels, bn_momentum));
  pooling->append(std::make_shared<nn::ReLU>());
  convs->append(pooling);

  const int64_t branches = static_cast<int64_t>(convs->size());
  project = register_module("project", std::make_shared<nn::Sequential>());
  project->append(conv(branches * channels, channels, 1, 1, false, gen));
  project->append(bn(channels, bn_momentum));
  project->append(std::make_shared<nn::ReLU>());
  project->append(std::make_shared<nn::Dropout>(dropout, std::move(dropout_gen)));
}

Tensor ASPP::forward(const Tensor& x) {
  SEG_CHECK(x.defined() && x.dim() == 4, "ASPP: expected a 4-D input (n, c, h, w), got ", x.str());
  std::vector<Tensor> branches;  // (n, c, h, w) each
  const size_t spatial = convs->size() - 1;
  for (size_t i = 0; i < spatial; ++i) branches.push_back((*convs)[i]->forward(x));
  Tensor pooled = (*convs)[spatial]->forward(x);              // (n, c, 1, 1)
  const Tensor& weight = project->at<nn::Conv2d>(0)->weight;  // (c, (R + 2) c, 1, 1)
  Tensor y = aspp_projection(branches, pooled, weight);       // (n, c, h, w)
  for (size_t i = 1; i < project->size(); ++i) y = (*project)[i]->forward(y);
  return y;
}

// ---------------------------------------------------------------------------------------------
// DeepLabV3

DeepLabV3::DeepLabV3(const DeepLabV3Options& opts, Generator& gen,
                     std::shared_ptr<Generator> dropout_gen)
    : nn::Module("DeepLabV3"), options(opts), dropout_generator(std::move(dropout_gen)) {
  SEG_CHECK(dropout_generator != nullptr, "DeepLabV3: the dropout generator is null");
  SEG_CHECK(opts.output_stride == 8 || opts.output_stride == 16, "DeepLabV3: output_stride ",
            opts.output_stride, " is not supported (8 or 16)");
  SEG_CHECK(opts.num_classes >= 1 && opts.aspp_channels >= 1, "DeepLabV3: invalid options (",
            "num_classes ", opts.num_classes, ", aspp_channels ", opts.aspp_channels, ")");

  ResNetOptions ro;
  ro.depth = opts.backbone_depth;
  ro.blocks = opts.backbone_blocks;
  ro.base_channels = opts.base_channels;
  ro.replace_stride_with_dilation = {false, opts.output_stride == 8, true};
  ro.multi_grid = opts.multi_grid;
  ro.num_classes = 0;
  ro.bn_momentum = opts.backbone_bn_momentum;
  backbone = register_module("backbone", std::make_shared<ResNet>(ro, gen));

  const int64_t c = opts.aspp_channels;
  const double m = opts.head_bn_momentum;
  classifier = register_module("classifier", std::make_shared<nn::Sequential>());
  aspp = classifier->append(std::make_shared<ASPP>(backbone->layer_channels(4),
                                                   deeplab_aspp_rates(opts), c, opts.aspp_dropout,
                                                   m, dropout_generator, gen));
  if (opts.layout == DeepLabLayout::torchvision) {
    classifier->append(conv(c, c, 3, 1, false, gen));
    classifier->append(bn(c, m));
    classifier->append(std::make_shared<nn::ReLU>());
  }
  classifier->append(conv(c, opts.num_classes, 1, 1, true, gen));

  if (opts.aux) {
    const int64_t in = backbone->layer_channels(3), inter = in / 4;
    aux_classifier = register_module("aux_classifier", std::make_shared<nn::Sequential>());
    aux_classifier->append(conv(in, inter, 3, 1, false, gen));
    aux_classifier->append(bn(inter, m));
    aux_classifier->append(std::make_shared<nn::ReLU>());
    aux_classifier->append(std::make_shared<nn::Dropout>(opts.aux_dropout, dropout_generator));
    aux_classifier->append(conv(inter, opts.num_classes, 1, 1, true, gen));
  }
  if (opts.he_init_head) {
    he_init_convs(*classifier, gen);
    if (aux_classifier) he_init_convs(*aux_classifier, gen);
  }
}

DeepLabOutput DeepLabV3::forward_all(const Tensor& x, bool upsample) {
  SEG_CHECK(x.defined() && x.dim() == 4, "DeepLabV3: expected input (n, c, h, w), got ", x.str());
  ResNetFeatures f = backbone->features(x);
  DeepLabOutput result;
  result.out = classifier->forward(f.layer4);
  if (aux_classifier) result.aux = aux_classifier->forward(f.layer3);
  if (upsample) {
    const int64_t h = x.size(2), w = x.size(3);
    result.out = upsample_bilinear2d(result.out, h, w, options.align_corners);
    if (result.aux.defined()) {
      result.aux = upsample_bilinear2d(result.aux, h, w, options.align_corners);
    }
  }
  return result;
}

Tensor DeepLabV3::forward(const Tensor& x) {
  return forward_all(x, true).out;
}

std::vector<Tensor> DeepLabV3::backbone_parameters() const {
  return backbone->parameters();
}

std::vector<Tensor> DeepLabV3::head_parameters() const {
  std::vector<Tensor> out = classifier->parameters();
  if (aux_classifier) {
    for (const Tensor& p : aux_classifier->parameters()) out.push_back(p);
  }
  return out;
}

}  // namespace seg::models
