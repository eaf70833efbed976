// The segmentation experiment: its config (every key, with defaults and ranges), the model it
// names, and the datasets, optimiser and schedule it describes. Shared by train_unet,
// train_deeplab and evaluate, so that one config file drives training and evaluation alike.
//
// Config keys (configs/*.json; defaults in read_segmentation_experiment):
//   description                free text (what the config reproduces), printed at the start
//   model.arch                 "unet" | "deeplabv3"
//   model.num_classes          19
//   model.unet.*               base_channels 64, depth 4, bilinear false, conv_bias true
//   model.deeplabv3.*          preset "torchvision" | "study" (the defaults of every key below:
//                              models/deeplabv3.h), backbone_depth 50 | 101, output_stride 8 | 16,
//                              aspp_rates, multi_grid, aux, aspp_dropout, aux_dropout,
//                              backbone_bn_momentum, head_bn_momentum, align_corners,
//                              he_init_head, aspp_channels; small models: base_channels, blocks
//   init.file                  pretrained weights (safetensors) for a new run, e.g. an ImageNet
//                              ResNet from scripts/export_torchvision_resnet.py; init.mappings
//                              {file prefix: model prefix} ({"": "backbone."}), init.drop (file
//                              prefixes left out, ["fc."]), init.allow_unexpected (false). Every
//                              tensor under the mapped model prefixes must load (models/init.h).
//   data.train_split/val_split "train" / "val"
//   data.labels                "label_ids" (gtFine labelIds, mapped) | "train_ids"
//   data.resize.*, data.val_resize.*   downsample, height, width, interp ("area" | "bilinear");
//                              val_resize defaults to resize
//   data.normalization         "cityscapes" (the study's UNet statistics) | "imagenet"
//   data.scale                 [min, max] random log-uniform scale (training)
//   data.crop                  [h, w] random crop with padding (training); [0, 0]: none
//   data.flip                  horizontal flip p = 0.5 (training)
//   data.workers               loader threads; data.skip_incomplete; data.limit_train/limit_val
//                              (the first N samples; 0: all)
//   train.device               "cpu" | "cuda" | "cuda:N"
//   train.epochs / train.iterations   length (iterations > 0 overrides epochs)
//   train.batch_size, train.val_batch_size, train.seed, train.log_every (iterations),
//   train.val_every_epochs, train.val_every_iterations (0: off), train.checkpoint_every
//   (iterations; 0: at each epoch end and validation only), train.aux_weight
//   optim.name                 "sgd" | "rmsprop" | "adam" | "adamw", with lr, momentum,
//                              weight_decay, dampening, nesterov, alpha, eps, centered, beta1,
//                              beta2, amsgrad as PyTorch; optim.head_lr_mult (the head's group)
//   schedule.name              "none" | "poly" | "step" | "cosine" | "plateau";
//                              schedule.per "iteration" | "epoch" (poly, step, cosine);
//                              power; step_size, gamma; plateau: metric "val_loss" | "val_miou",
//                              factor, patience, threshold, cooldown, min_lr (stepped at each
//                              validation)
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "apps/common/config.h"
#include "data/datasets.h"
#include "engine/nn/module.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/scheduler.h"
#include "models/deeplabv3.h"
#include "models/init.h"
#include "models/unet.h"

namespace seg::app {

struct SegmentationExperiment {
  std::string description;  // free text, printed at the start
  // model
  std::string arch;
  int64_t num_classes = 19;
  models::UNetOptions unet;
  models::DeepLabV3Options deeplab;
  // pretrained initialisation (new runs)
  std::string init_file;
  models::PretrainedOptions init;
  // data
  data::Split train_split = data::Split::train, val_split = data::Split::val;
  data::LabelSource labels = data::LabelSource::label_ids;
  data::ResizeOptions train_resize, val_resize;
  data::Normalization normalization = data::kCityscapesNormalization;
  float scale_min = 1.0f, scale_max = 1.0f;
  int crop_h = 0, crop_w = 0;
  bool flip = false;
  int workers = 2;
  bool skip_incomplete = false;
  int64_t limit_train = 0, limit_val = 0;
  // training
  std::string device = "cpu";
  int64_t epochs = 1, iterations = 0;
  int64_t batch_size = 1, val_batch_size = 1;
  uint64_t seed = 0;
  int64_t log_every = 10;
  int64_t val_every_epochs = 1, val_every_iterations = 0;
  int64_t checkpoint_every = 0;
  double aux_weight = 0.4;
  // optimiser
  std::string optimizer = "sgd";
  double lr = 0.01, momentum = 0.0, weight_decay = 0.0, dampening = 0.0;
  bool nesterov = false, centered = false, amsgrad = false;
  double alpha = 0.99, eps = 1e-8, beta1 = 0.9, beta2 = 0.999;
  double head_lr_mult = 1.0;
  // schedule
  std::string schedule = "none", schedule_per = "iteration";
  double power = 0.9;
  int64_t step_size = 1;
  double gamma = 0.1;
  std::string plateau_metric = "val_loss";
  ReduceLROnPlateauOptions plateau;
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

std::unique_ptr<Optimizer> make_optimizer(const SegmentationExperiment& ex,
                                          SegmentationModel& model);

// The schedule: an LRScheduler (poly, step, cosine), a ReduceLROnPlateau, or neither.
// `total_steps` is the number of scheduler steps of the whole run (iterations or epochs, as
// schedule.per says).
struct Schedule {
  std::unique_ptr<LRScheduler> scheduler;
  std::unique_ptr<ReduceLROnPlateau> plateau;
  bool per_iteration = true;
};
Schedule make_schedule(const SegmentationExperiment& ex, Optimizer& optimizer, int64_t iterations,
                       int64_t epochs);

// Number of parameters (elements) of a module.
int64_t count_parameters(const nn::Module& module);

}  // namespace seg::app
