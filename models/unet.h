// UNet as in Pytorch-UNet (milesial/Pytorch-UNet, the version the study ran), with the same module
// and parameter names, so its state_dict loads into ours and back:
//   inc.double_conv.{0,1,3,4}   down{i}.maxpool_conv.1.double_conv.*   up{i}.up (transposed conv)
//   up{i}.conv.double_conv.*    outc.conv
//
// Design notes
// - DoubleConv = (conv3x3 pad 1 -> BN -> ReLU) x 2; Down = MaxPool2d(2) then DoubleConv;
//   Up = ConvTranspose2d(in, in/2, 2, stride 2) (or bilinear x2 with align_corners=True and a
//   DoubleConv with in/2 middle channels), pad the upsampled map to the skip's size (odd sizes),
//   concatenate [skip, up], DoubleConv; OutConv = conv1x1 with bias.
// - `base_channels` (64 in the paper) and `depth` (4) scale the network down for tests and demos:
//   channels are base * 2^level; the bottom level is halved with bilinear upsampling, as upstream.
// - conv_bias: the 2020 Pytorch-UNet that the study used gives the 3x3 convs a bias (later
//   versions dropped it); both are supported.
#pragma once

#include <memory>

#include "engine/nn/layers.h"

namespace seg::models {

struct UNetOptions {
  int64_t in_channels = 3;
  int64_t num_classes = 19;
  int64_t base_channels = 64;
  int depth = 4;
  bool bilinear = false;
  bool conv_bias = true;
};

class DoubleConv : public nn::Module {
 public:
  DoubleConv(int64_t in, int64_t out, int64_t mid, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<nn::Sequential> double_conv;
};

class Down : public nn::Module {
 public:
  Down(int64_t in, int64_t out, bool bias, Generator& gen);
  Tensor forward(const Tensor& x) override;
  std::shared_ptr<nn::Sequential> maxpool_conv;
};

class Up : public nn::Module {
 public:
  Up(int64_t in, int64_t out, bool bilinear, bool bias, Generator& gen);
  using nn::Module::forward;  // the single-input form throws: Up takes two inputs
  // x: the coarser map to upsample; skip: the encoder map of the finer level.
  Tensor forward(const Tensor& x, const Tensor& skip);
  std::shared_ptr<nn::Module> up;
  std::shared_ptr<DoubleConv> conv;
};

class UNet : public nn::Module {
 public:
  UNet(const UNetOptions& options, Generator& gen);
  // (n, in_channels, h, w) -> logits (n, num_classes, h, w); any h, w >= 2^depth.
  Tensor forward(const Tensor& x) override;

  const UNetOptions options;
  std::shared_ptr<DoubleConv> inc;
  std::vector<std::shared_ptr<Down>> downs;  // down1 .. down{depth}
  std::vector<std::shared_ptr<Up>> ups;      // up1 .. up{depth}
  std::shared_ptr<nn::Conv2d> outc_conv;     // outc.conv
};

}  // namespace seg::models
