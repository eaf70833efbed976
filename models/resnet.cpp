// ResNet (design notes in resnet.h). Construction mirrors torchvision's ResNet.__init__ and
// _make_layer line by line, so that names, registration order and dilations are the same.
#include "models/resnet.h"

#include <string>

#include "engine/nn/init.h"

namespace seg::models {

namespace {

// torchvision's init of every conv: kaiming_normal_(mode="fan_out", nonlinearity="relu").
void he_fan_out(const std::shared_ptr<nn::Conv2d>& conv, Generator& gen) {
  nn::init::kaiming_normal_(conv->weight, gen, 0.0, nn::init::FanMode::fan_out,
                            nn::init::Nonlinearity::relu);
}

std::shared_ptr<nn::Conv2d> make_conv(int64_t in, int64_t out, int64_t k, int64_t stride,
                                      int64_t pad, int64_t dilation, Generator& gen) {
  auto conv = std::make_shared<nn::Conv2d>(in, out, k, gen,
                                           Conv2dOptions::make(stride, pad, dilation), false);
  he_fan_out(conv, gen);
  return conv;
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + std::to_string(v[i]);
  return "(" + s + ")";
}

}  // namespace

std::vector<int> resnet_blocks(int depth) {
  if (depth == 50) return {3, 4, 6, 3};
  if (depth == 101) return {3, 4, 23, 3};
  SEG_CHECK(false, "ResNet: depth ", depth, " is not supported (50 or 101; or give the blocks)");
  return {};
}

// ---------------------------------------------------------------------------------------------
// Bottleneck

Bottleneck::Bottleneck(int64_t in_channels, int64_t width, int64_t stride_, int64_t dilation_,
                       bool with_downsample, double bn_momentum, Generator& gen)
    : nn::Module("Bottleneck"), stride(stride_), dilation(dilation_) {
  const int64_t out = width * kExpansion;
  auto bn = [&](int64_t c) { return std::make_shared<nn::BatchNorm2d>(c, 1e-5, bn_momentum); };
  conv1 = register_module("conv1", make_conv(in_channels, width, 1, 1, 0, 1, gen));
  bn1 = register_module("bn1", bn(width));
  conv2 = register_module("conv2", make_conv(width, width, 3, stride, dilation, dilation, gen));
  bn2 = register_module("bn2", bn(width));
  conv3 = register_module("conv3", make_conv(width, out, 1, 1, 0, 1, gen));
  bn3 = register_module("bn3", bn(out));
  register_module("relu", std::make_shared<nn::ReLU>());
  if (with_downsample) {
    downsample = register_module("downsample", std::make_shared<nn::Sequential>());
    downsample->append(make_conv(in_channels, out, 1, stride, 0, 1, gen));
    downsample->append(bn(out));
  }
}

Tensor Bottleneck::forward(const Tensor& x) {
  Tensor y = relu(bn1->forward(conv1->forward(x)));
  y = relu(bn2->forward(conv2->forward(y)));
  y = bn3->forward(conv3->forward(y));
  return relu(y + (downsample ? downsample->forward(x) : x));
}

// ---------------------------------------------------------------------------------------------
// ResNet

ResNet::ResNet(const ResNetOptions& opts, Generator& gen) : nn::Module("ResNet"), options(opts) {
  const std::vector<int> counts = opts.blocks.empty() ? resnet_blocks(opts.depth) : opts.blocks;
  SEG_CHECK(counts.size() == 4, "ResNet: blocks ", join(counts), " must have 4 counts");
  for (int c : counts) SEG_CHECK(c >= 1, "ResNet: blocks ", join(counts), " must all be >= 1");
  SEG_CHECK(opts.base_channels >= 1 && opts.in_channels >= 1 && opts.num_classes >= 0,
            "ResNet: invalid options (base_channels ", opts.base_channels, ", in_channels ",
            opts.in_channels, ", num_classes ", opts.num_classes, ")");
  SEG_CHECK(opts.multi_grid.empty() || opts.multi_grid.size() == static_cast<size_t>(counts[3]),
            "ResNet: multi_grid has ", opts.multi_grid.size(), " multipliers but layer4 has ",
            counts[3], " blocks");
  for (int64_t m : opts.multi_grid) {
    SEG_CHECK(m >= 1, "ResNet: multi_grid multipliers must be >= 1, got ", m);
  }

  const int64_t b = opts.base_channels;
  conv1 = register_module("conv1", make_conv(opts.in_channels, b, 7, 2, 3, 1, gen));
  bn1 = register_module("bn1", std::make_shared<nn::BatchNorm2d>(b, 1e-5, opts.bn_momentum));
  relu = register_module("relu", std::make_shared<nn::ReLU>());
  maxpool = register_module("maxpool", std::make_shared<nn::MaxPool2d>(3, 2, 1));

  // torchvision's _make_layer, with its running `inplanes` and `dilation`.
  int64_t inplanes = b;
  int64_t dilation = 1;
  for (int i = 0; i < 4; ++i) {
    const int64_t planes = b << i;
    int64_t stride = i == 0 ? 1 : 2;
    const int64_t previous_dilation = dilation;
    if (i > 0 && opts.replace_stride_with_dilation[i - 1]) {
      dilation *= stride;
      stride = 1;
    }
    const bool downsample = stride != 1 || inplanes != planes * Bottleneck::kExpansion;
    layers[i] =
        register_module("layer" + std::to_string(i + 1), std::make_shared<nn::Sequential>());
    for (int j = 0; j < counts[i]; ++j) {
      int64_t block_dilation = j == 0 ? previous_dilation : dilation;
      if (i == 3 && !opts.multi_grid.empty()) block_dilation = dilation * opts.multi_grid[j];
      auto block = std::make_shared<Bottleneck>(j == 0 ? inplanes : planes * Bottleneck::kExpansion,
                                                planes, j == 0 ? stride : 1, block_dilation,
                                                j == 0 && downsample, opts.bn_momentum, gen);
      blocks_[i].push_back(layers[i]->append(block));
    }
    inplanes = planes * Bottleneck::kExpansion;
  }
  if (opts.num_classes > 0) {
    register_module("avgpool", std::make_shared<nn::AdaptiveAvgPool2d>(1, 1));
    fc = register_module("fc", std::make_shared<nn::Linear>(inplanes, opts.num_classes, gen));
  }
}

ResNetFeatures ResNet::features(const Tensor& x) {
  SEG_CHECK(x.defined() && x.dim() == 4 && x.size(1) == options.in_channels,
            "ResNet: expected input (n, ", options.in_channels, ", h, w), got ", x.str());
  ResNetFeatures f;
  Tensor y = maxpool->forward(relu->forward(bn1->forward(conv1->forward(x))));
  f.layer1 = layers[0]->forward(y);
  f.layer2 = layers[1]->forward(f.layer1);
  f.layer3 = layers[2]->forward(f.layer2);
  f.layer4 = layers[3]->forward(f.layer3);
  return f;
}

Tensor ResNet::forward(const Tensor& x) {
  Tensor y = features(x).layer4;
  if (!fc) return y;
  return fc->forward(adaptive_avg_pool2d(y, 1, 1).flatten(1));
}

int ResNet::output_stride() const {
  int s = 4;
  for (bool dilated : options.replace_stride_with_dilation) s *= dilated ? 1 : 2;
  return s;
}

const std::vector<std::shared_ptr<Bottleneck>>& ResNet::blocks(int layer) const {
  SEG_CHECK(layer >= 1 && layer <= 4, "ResNet: layer ", layer, " is not one of 1..4");
  return blocks_[layer - 1];
}

std::vector<int64_t> ResNet::block_dilations(int layer) const {
  std::vector<int64_t> out;
  for (const auto& block : blocks(layer)) out.push_back(block->dilation);
  return out;
}

int64_t ResNet::layer_channels(int layer) const {
  SEG_CHECK(layer >= 1 && layer <= 4, "ResNet: layer ", layer, " is not one of 1..4");
  return options.base_channels * Bottleneck::kExpansion << (layer - 1);
}

}  // namespace seg::models
