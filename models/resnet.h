// ResNet-50/101 as torchvision's (torchvision/models/resnet.py, v1.5: the stride sits on the 3x3
// conv), with the same module and parameter names, so torchvision state_dicts load unchanged:
//   conv1  bn1  relu  maxpool  layer{1..4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}
//   layer{1..4}.0.downsample.{0,1}  [fc]
//
// Design notes
// - Dilation follows torchvision's `_make_layer` exactly: a layer whose stride is replaced by
//   dilation (`replace_stride_with_dilation`, one flag per layer2..layer4) multiplies the running
//   dilation by 2 and drops its stride; its first block still uses the dilation from before the
//   layer ("previous_dilation"), the others the new one. At output stride 16 (layer4 dilated) the
//   layer4 blocks therefore have dilations (1, 2, 2): the block dilations of DeepLabv3.pytorch, the
//   code the study ran (FINDINGS.md). At output stride 8: layer3 (1, 2, ..., 2), layer4 (2, 4, 4).
// - Multi-grid (DeepLabv3 paper, section 3.2): `multi_grid` gives one multiplier per layer4 block;
//   block i then has dilation rate * multi_grid[i], rate being layer4's dilation (2 at output
//   stride 16, 4 at 8, 1 when layer4 keeps its stride), for every block including the first. E.g.
//   (1, 2, 4) at output stride 16 gives (2, 4, 8). Empty: torchvision's rule above.
// - Padding of every 3x3 conv equals its dilation (the spatial size only changes by the stride).
// - Init as torchvision: convs kaiming_normal_(fan_out, relu), i.e. N(0, sqrt(2 / (k * k * out))),
//   which is also DeepLabv3.pytorch's backbone init; BN weight 1, bias 0; fc PyTorch's Linear
//   default. Draws come from the caller's Generator (values differ from PyTorch's, distributions
//   do not).
// - Small models for tests and demos: `blocks` replaces the per-depth block counts, and
//   `base_channels` (64 in torchvision) scales every width: the stem has base channels, layer i
//   (1..4) has 3x3 width base * 2^(i-1) and output 4 * base * 2^(i-1).
#pragma once

#include <array>
#include <memory>
#include <vector>

#include "engine/nn/layers.h"

namespace seg::models {

struct ResNetOptions {
  int depth = 101;          // 50 or 101: blocks per layer (3, 4, 6, 3) or (3, 4, 23, 3)
  std::vector<int> blocks;  // when non-empty (4 counts >= 1), replaces the depth's block counts
  int64_t base_channels = 64;
  int64_t in_channels = 3;
  std::array<bool, 3> replace_stride_with_dilation = {false, false, false};  // layer2..layer4
  std::vector<int64_t> multi_grid;  // one multiplier per layer4 block, or empty (see above)
  int64_t num_classes = 0;          // > 0: global average pool + fc, as torchvision's classifier
  double bn_momentum = 0.1;         // PyTorch's convention: new = (1 - m) * old + m * batch
};

// torchvision's Bottleneck: 1x1 (in -> width), 3x3 (width -> width, stride, dilation), 1x1
// (width -> 4 * width), each followed by BN; ReLU after the first two and after the residual sum.
class Bottleneck : public nn::Module {
 public:
  static constexpr int64_t kExpansion = 4;
  Bottleneck(int64_t in_channels, int64_t width, int64_t stride, int64_t dilation, bool downsample,
             double bn_momentum, Generator& gen);
  Tensor forward(const Tensor& x) override;

  const int64_t stride, dilation;
  std::shared_ptr<nn::Conv2d> conv1, conv2, conv3;
  std::shared_ptr<nn::BatchNorm2d> bn1, bn2, bn3;
  std::shared_ptr<nn::Sequential> downsample;  // (1x1 conv with the stride, BN), or null
};

// The maps the heads need: each layer's output. Spatial sizes are the input's divided by the
// layer's stride (rounded up at each stride-2 step); b = base_channels, s = output_stride().
struct ResNetFeatures {
  Tensor layer1;  // (n, 4b, h/4, w/4)
  Tensor layer2;  // (n, 8b, h/8, w/8)
  Tensor layer3;  // (n, 16b, h/16, w/16), or h/8, w/8 when layer3 is dilated
  Tensor layer4;  // (n, 32b, h/s, w/s)
};

class ResNet : public nn::Module {
 public:
  ResNet(const ResNetOptions& options, Generator& gen);

  // Every layer's output. Any h, w >= 1.
  ResNetFeatures features(const Tensor& x);
  // With fc: logits (n, num_classes); without: layer4's output.
  Tensor forward(const Tensor& x) override;

  // 8, 16 or 32, from the dilation flags.
  int output_stride() const;
  // The blocks of layer i (1..4).
  const std::vector<std::shared_ptr<Bottleneck>>& blocks(int layer) const;
  // The 3x3 dilation of each block of layer i (1..4).
  std::vector<int64_t> block_dilations(int layer) const;
  // Channels of layer i's output (1..4): 4 * base * 2^(i-1).
  int64_t layer_channels(int layer) const;

  const ResNetOptions options;
  std::shared_ptr<nn::Conv2d> conv1;
  std::shared_ptr<nn::BatchNorm2d> bn1;
  std::shared_ptr<nn::ReLU> relu;
  std::shared_ptr<nn::MaxPool2d> maxpool;
  std::array<std::shared_ptr<nn::Sequential>, 4> layers;  // layer1..layer4
  std::shared_ptr<nn::Linear> fc;                         // null without num_classes

 private:
  std::array<std::vector<std::shared_ptr<Bottleneck>>, 4> blocks_;
};

// The block counts of a ResNet depth: 50 -> (3, 4, 6, 3), 101 -> (3, 4, 23, 3); other depths are
// an error naming the supported ones.
std::vector<int> resnet_blocks(int depth);

}  // namespace seg::models
