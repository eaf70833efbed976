// The segmentation experiment: its config (every key, with defaults and ranges), the model it
// names, and the datasets, optimiser and schedule it describes. Shared by train_unet,
// train_deeplab and evaluate, so that one config file drives training and evaluation alike.
//
// Config keys (configs/*.json; defaults in read_segmentation_experiment), beside the training
// loop's (apps/common/training.h: train.*, optim.*, schedule.*, init.*, data.workers, ...):
//   model.arch                 "unet" | "deeplabv3"
//   model.num_classes          19
//   model.unet.*               base_channels 64, depth 4, bilinear false, conv_bias true
//   model.deeplabv3.*          preset "torchvision" | "study" (the defaults of every key below:
//                              models/deeplabv3.h), backbone_depth 50 | 101, output_stride 8 | 16,
//                              aspp_rates, multi_grid, aux, aspp_dropout, aux_dropout,
//                              backbone_bn_momentum, head_bn_momentum, align_corners,
//                              he_init_head, aspp_channels; small models: base_channels, blocks
//   init.*                     (training.h) default mapping {"": "backbone."}, dropping "fc.":
//                              an ImageNet ResNet, or a pretext run's checkpoint with
//                              {"backbone.": "backbone."} (every backbone tensor must load)
//   data.train_split/val_split "train" / "val"
//   data.labels                "label_ids" (gtFine labelIds, mapped) | "train_ids"
//   data.resize.*, data.val_resize.*   downsample, height, width, interp ("area" | "bilinear");
//                              val_resize defaults to resize
//   data.normalization         "cityscapes" (the study's UNet statistics) | "imagenet"
//   data.scale                 [min, max] random log-uniform scale (training)
//   data.crop                  [h, w] random crop with padding (training); [0, 0]: none
//   data.flip                  horizontal flip p = 0.5 (training)
//   train.aux_weight           the auxiliary head's loss weight (0.4)
//   schedule.metric            (plateau) "val_loss" | "val_miou"
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "apps/common/config.h"
#include "apps/common/training.h"
#include "data/datasets.h"
#include "engine/nn/module.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/scheduler.h"
#include "models/deeplabv3.h"
#include "models/init.h"
#include "models/unet.h"

namespace seg::app {

struct SegmentationExperiment {
  TrainingOptions train;  // the loop's keys (training.h)
  // model
  std::string arch;
  int64_t num_classes = 19;
  models::UNetOptions unet;
  models::DeepLabV3Options deeplab;
  // data
  data::Split train_split = data::Split::train, val_split = data::Split::val;
  data::LabelSource labels = data::LabelSource::label_ids;
  data::ResizeOptions train_resize, val_resize;
  data::Normalization normalization = data::kCityscapesNormalization;
  float scale_min = 1.0f, scale_max = 1.0f;
  int crop_h = 0, crop_w = 0;
  bool flip = false;
  double aux_weight = 0.4;
};

// Reads every key above from `config` (the caller calls config.check_all_read() after).
SegmentationExperiment read_segmentation_experiment(Config& config);

// A segmentation network as the apps use it.
class SegmentationModel {
 public:
  struct Output {
    Tensor out;  // (n, classes, h, w) logits: at the input's size, or below it (see forward)
    Tensor aux;  // an auxiliary head's logits, or undefined
  };
  virtual ~SegmentationModel() = default;
  virtual nn::Module& module() = 0;
  // upsample: logits at the input's size; otherwise at the network's own output size (what the
  // fused confusion-matrix kernel upsamples on the fly).
  virtual Output forward(const Tensor& images, bool upsample) = 0;
  // The parameter groups: the backbone at the base lr, the head at lr * head_lr_mult. A network
  // without that split has every parameter in the first group and none in the second.
  virtual std::vector<Tensor> backbone_parameters() = 0;
  virtual std::vector<Tensor> head_parameters() = 0;
  // How the network's own logits are resized to the labels (bilinear, PyTorch's align_corners).
  virtual bool align_corners() const { return false; }
  // Random streams the forward pass draws from (dropout), for checkpoints.
  virtual std::vector<std::pair<std::string, Generator*>> generators() { return {}; }
  virtual std::string describe() const = 0;
};

// Builds the network the experiment names, initialised from `gen`.
std::unique_ptr<SegmentationModel> make_segmentation_model(const SegmentationExperiment& ex,
                                                           Generator& gen);

// The training or validation dataset (validation: no augmentation, val_resize).
std::unique_ptr<data::Dataset> make_segmentation_dataset(const SegmentationExperiment& ex,
                                                         const std::filesystem::path& root,
                                                         data::Split split, bool training);

// The parameter groups of the optimiser: the backbone, then the head (training.h's make_optimizer).
std::vector<std::vector<Tensor>> parameter_groups(SegmentationModel& model);

}  // namespace seg::app
