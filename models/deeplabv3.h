// DeepLabv3 on the ResNet backbone, with torchvision's names (torchvision/models/segmentation/
// deeplabv3.py, `deeplabv3_resnet101`), so its state_dicts load unchanged:
//   backbone.*                      ResNet without fc (torchvision's IntermediateLayerGetter)
//   classifier.0                    ASPP
//     convs.0.{0,1}                 1x1 conv, BN (+ ReLU)
//     convs.{1..R}.{0,1}            3x3 conv at each rate, BN (+ ReLU)
//     convs.{R+1}.{1,2}             image pooling: (GAP,) 1x1 conv, BN (+ ReLU)
//     project.{0,1}                 1x1 conv ((R + 2) * c -> c, no bias), BN (+ ReLU, Dropout)
//   classifier.1..4                 torchvision's head: 3x3 conv, BN, (ReLU,) 1x1 conv with bias
//   aux_classifier.{0,1,4}          FCN head on layer3: 3x3 conv, BN, (ReLU, Dropout,) 1x1 conv
//
// Two head layouts:
// - `torchvision`: as above; ASPP dropout 0.5, auxiliary dropout 0.1; head convs PyTorch's default
//   init; every BN momentum 0.1.
// - `study` (DeepLabv3.pytorch, the code the study ran; FINDINGS.md): the ASPP projection
//   (conv, BN, ReLU) feeds the 1x1 classifier with bias directly, no dropout, no 3x3 conv. Its
//   names here reuse torchvision's: the classifier is `classifier.1`. The mapping from
//   DeepLabv3.pytorch's names is
//     conv1, bn1, layer*          -> backbone.conv1, backbone.bn1, backbone.layer*
//     aspp.aspp1, aspp.aspp1_bn   -> classifier.0.convs.0.0, classifier.0.convs.0.1
//     aspp.aspp{2,3,4}{,_bn}      -> classifier.0.convs.{1,2,3}.{0,1}
//     aspp.aspp5, aspp.aspp5_bn   -> classifier.0.convs.4.1, classifier.0.convs.4.2
//     aspp.conv2, aspp.bn2        -> classifier.0.project.0, classifier.0.project.1
//     aspp.conv3                  -> classifier.1
//   BN momentum 0.05 in the backbone and 0.0003 in the ASPP (PyTorch's convention), every conv
//   (head included) N(0, sqrt(2 / (k * k * out))), output stride 16 (layer4 dilations 1, 2, 2),
//   logits upsampled to the input with align_corners=True (torchvision: False).
//
// Design notes
// - The projection of the concatenated branches is the fused op aspp_projection (engine/ops.h):
//   the image-pooling branch enters as a per-(image, channel) bias and is never broadcast or
//   concatenated, on every backend; `classifier.0.project.0.weight` is its (c, (R + 2) * c, 1, 1)
//   weight. The ASPP's `project.0` conv module holds that weight and is not called itself.
// - Output stride 8 dilates layer3 and layer4 (replace_stride_with_dilation (F, T, T)), 16 only
//   layer4 (F, F, T). ASPP rates default to (12, 24, 36) at 8 and (6, 12, 18) at 16; any number
//   of rates is allowed.
// - Dropout draws from a Generator shared with the caller (std::shared_ptr, never global), so a
//   trainer can save and restore its state with the checkpoint.
// - The auxiliary FCN head works on layer3 (channels 16 * base) with an inner width of a quarter
//   of that (torchvision's FCNHead(1024, classes): 256).
// - Training needs more than one value per channel in every BN, including the image-pooling
//   branch's BN on (n, c, 1, 1): a batch of one image is an error in training mode, as PyTorch.
#pragma once

#include <memory>
#include <vector>

#include "models/resnet.h"

namespace seg::models {

enum class DeepLabLayout { torchvision, study };

struct DeepLabV3Options {
  // Backbone.
  int backbone_depth = 101;          // 50 or 101
  std::vector<int> backbone_blocks;  // small models: 4 block counts replacing the depth's
  int64_t base_channels = 64;        // small models: backbone width (see ResNetOptions)
  int output_stride = 8;             // 8 or 16
  std::vector<int64_t> multi_grid;   // layer4 multipliers (ResNetOptions::multi_grid)
  // Head.
  DeepLabLayout layout = DeepLabLayout::torchvision;
  std::vector<int64_t> aspp_rates;  // empty: (12, 24, 36) at output stride 8, (6, 12, 18) at 16
  int64_t aspp_channels = 256;      // width of every ASPP branch and of the projection
  bool aux = false;                 // the auxiliary FCN head on layer3
  int64_t num_classes = 19;
  double aspp_dropout = 0.5;  // after the projection (torchvision); 0 = none
  double aux_dropout = 0.1;   // in the auxiliary head
  // Batch norm momenta, PyTorch's convention (new = (1 - m) * old + m * batch).
  double backbone_bn_momentum = 0.1;
  double head_bn_momentum = 0.1;  // ASPP, head and auxiliary head
  // The bilinear upsampling of the logits to the input size: align_corners=false as torchvision,
  // true as DeepLabv3.pytorch.
  bool align_corners = false;
  // Head conv init: false = PyTorch's default (torchvision), true = N(0, sqrt(2 / (k * k * out)))
  // (DeepLabv3.pytorch). The backbone always uses the latter (both agree there).
  bool he_init_head = false;

  // torchvision's deeplabv3_resnet101 (these defaults).
  static DeepLabV3Options torchvision();
  // The study's DeepLabv3.pytorch: ResNet-101, output stride 16, rates (6, 12, 18), study layout,
  // no aux head, no dropout, BN momenta 0.05 / 0.0003, He init of the head, logits upsampled
  // with align_corners=true.
  static DeepLabV3Options study();
};

struct DeepLabOutput {
  Tensor out;  // (n, classes, h, w), or (n, classes, h/s, w/s) without upsampling
  Tensor aux;  // the same from the auxiliary head; undefined without it
};

// torchvision's ASPP: a 1x1 branch, one 3x3 branch per rate, image pooling, then the fused
// projection (conv, BN, ReLU, Dropout).
class ASPP : public nn::Module {
 public:
  ASPP(int64_t in_channels, const std::vector<int64_t>& rates, int64_t channels, double dropout,
       double bn_momentum, std::shared_ptr<Generator> dropout_gen, Generator& gen);
  // (n, in, h, w) -> (n, channels, h, w).
  Tensor forward(const Tensor& x) override;

  const std::vector<int64_t> rates;
  std::shared_ptr<nn::Sequential> convs;    // R + 2 branches (torchvision's ModuleList)
  std::shared_ptr<nn::Sequential> project;  // conv (weight only), BN, ReLU, Dropout
};

class DeepLabV3 : public nn::Module {
 public:
  // `gen` draws the initial weights; `dropout_gen` (not null) is held for the dropout layers.
  DeepLabV3(const DeepLabV3Options& options, Generator& gen,
            std::shared_ptr<Generator> dropout_gen);

  // x (n, in, h, w). upsample: logits bilinearly resized to (h, w) (align_corners=false as
  // torchvision; options.align_corners for the study's layout); otherwise at the backbone's
  // resolution (1/output_stride, rounded up).
  DeepLabOutput forward_all(const Tensor& x, bool upsample);
  // forward_all(x, true).out
  Tensor forward(const Tensor& x) override;

  // The two parameter groups (the head gets the learning-rate multiplier): the backbone's, and
  // the ASPP's, head's and auxiliary head's. Together they are parameters(), each once.
  std::vector<Tensor> backbone_parameters() const;
  std::vector<Tensor> head_parameters() const;

  const DeepLabV3Options options;
  const std::shared_ptr<Generator> dropout_generator;
  std::shared_ptr<ResNet> backbone;
  std::shared_ptr<ASPP> aspp;                      // classifier.0
  std::shared_ptr<nn::Sequential> classifier;      // ASPP, then the layout's head
  std::shared_ptr<nn::Sequential> aux_classifier;  // null without the auxiliary head
};

// The ASPP rates the options resolve to (their own, or the output stride's defaults).
std::vector<int64_t> deeplab_aspp_rates(const DeepLabV3Options& options);

}  // namespace seg::models
