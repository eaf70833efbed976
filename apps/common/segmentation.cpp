#include "apps/common/segmentation.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "engine/error.h"

namespace seg::app {

namespace {

class UNetModel final : public SegmentationModel {
 public:
  UNetModel(const models::UNetOptions& options, Generator& gen) : net_(options, gen) {}
  nn::Module& module() override { return net_; }
  Output forward(const Tensor& images, bool) override { return {net_.forward(images), Tensor()}; }
  std::vector<Tensor> backbone_parameters() override { return net_.parameters(); }
  std::vector<Tensor> head_parameters() override { return {}; }
  std::string describe() const override {
    const models::UNetOptions& o = net_.options;
    char buf[160];
    std::snprintf(buf, sizeof(buf),
                  "UNet (base %lld channels, depth %d, %s up-sampling, %.2fM parameters)",
                  static_cast<long long>(o.base_channels), o.depth,
                  o.bilinear ? "bilinear" : "transposed-conv",
                  static_cast<double>(count_parameters(net_)) / 1e6);
    return buf;
  }

 private:
  models::UNet net_;
};

class DeepLabModel final : public SegmentationModel {
 public:
  DeepLabModel(const models::DeepLabV3Options& options, Generator& gen, uint64_t dropout_seed)
      : net_(options, gen, std::make_shared<Generator>(dropout_seed)) {}
  nn::Module& module() override { return net_; }
  Output forward(const Tensor& images, bool upsample) override {
    models::DeepLabOutput o = net_.forward_all(images, upsample);
    return {o.out, o.aux};
  }
  std::vector<Tensor> backbone_parameters() override { return net_.backbone_parameters(); }
  std::vector<Tensor> head_parameters() override { return net_.head_parameters(); }
  bool align_corners() const override { return net_.options.align_corners; }
  std::vector<std::pair<std::string, Generator*>> generators() override {
    return {{"dropout", net_.dropout_generator.get()}};
  }
  std::string describe() const override {
    const models::DeepLabV3Options& o = net_.options;
    std::string rates;
    for (int64_t r : models::deeplab_aspp_rates(o)) {
      if (!rates.empty()) rates += ",";
      rates += std::to_string(r);
    }
    char buf[256];
    std::snprintf(
        buf, sizeof(buf),
        "DeepLabv3-ResNet%d (%s head, output stride %d, ASPP rates %s%s, %.2fM parameters)",
        o.backbone_depth, o.layout == models::DeepLabLayout::study ? "study" : "torchvision",
        o.output_stride, rates.c_str(), o.aux ? ", aux head" : "",
        static_cast<double>(count_parameters(net_)) / 1e6);
    return buf;
  }

 private:
  models::DeepLabV3 net_;
};

}  // namespace

SegmentationExperiment read_segmentation_experiment(Config& c) {
  SegmentationExperiment ex;
  // model
  ex.arch = c.require_string("model.arch", {"unet", "deeplabv3"});
  ex.num_classes = c.get_int("model.num_classes", 19, 1, 255);
  if (ex.arch == "unet") {
    ex.unet.in_channels = 3;
    ex.unet.num_classes = ex.num_classes;
    ex.unet.base_channels = c.get_int("model.unet.base_channels", 64, 1, 4096);
    ex.unet.depth = static_cast<int>(c.get_int("model.unet.depth", 4, 1, 8));
    ex.unet.bilinear = c.get_bool("model.unet.bilinear", false);
    ex.unet.conv_bias = c.get_bool("model.unet.conv_bias", true);
  } else {
    const std::string preset =
        c.get_string("model.deeplabv3.preset", "torchvision", {"torchvision", "study"});
    models::DeepLabV3Options& d = ex.deeplab;
    d = preset == "study" ? models::DeepLabV3Options::study()
                          : models::DeepLabV3Options::torchvision();
    d.num_classes = ex.num_classes;
    d.backbone_depth =
        static_cast<int>(c.get_int("model.deeplabv3.backbone_depth", d.backbone_depth, 50, 101));
    SEG_CHECK(d.backbone_depth == 50 || d.backbone_depth == 101,
              "config: model.deeplabv3.backbone_depth must be 50 or 101, got ", d.backbone_depth);
    const std::vector<int64_t> blocks = c.get_int_list("model.deeplabv3.blocks", {}, 1, 64);
    SEG_CHECK(blocks.empty() || blocks.size() == 4,
              "config: model.deeplabv3.blocks must hold 4 block counts (or none)");
    d.backbone_blocks.assign(blocks.begin(), blocks.end());
    d.base_channels = c.get_int("model.deeplabv3.base_channels", d.base_channels, 1, 1024);
    d.output_stride =
        static_cast<int>(c.get_int("model.deeplabv3.output_stride", d.output_stride, 8, 16));
    SEG_CHECK(d.output_stride == 8 || d.output_stride == 16,
              "config: model.deeplabv3.output_stride must be 8 or 16, got ", d.output_stride);
    d.multi_grid = c.get_int_list("model.deeplabv3.multi_grid", d.multi_grid, 1, 64);
    d.aspp_rates = c.get_int_list("model.deeplabv3.aspp_rates", d.aspp_rates, 1, 1024);
    d.aspp_channels = c.get_int("model.deeplabv3.aspp_channels", d.aspp_channels, 1, 4096);
    d.aux = c.get_bool("model.deeplabv3.aux", d.aux);
    d.aspp_dropout = c.get_double("model.deeplabv3.aspp_dropout", d.aspp_dropout, 0.0, 0.99);
    d.aux_dropout = c.get_double("model.deeplabv3.aux_dropout", d.aux_dropout, 0.0, 0.99);
    d.backbone_bn_momentum =
        c.get_double("model.deeplabv3.backbone_bn_momentum", d.backbone_bn_momentum, 0.0, 1.0);
    d.head_bn_momentum =
        c.get_double("model.deeplabv3.head_bn_momentum", d.head_bn_momentum, 0.0, 1.0);
    d.align_corners = c.get_bool("model.deeplabv3.align_corners", d.align_corners);
    d.he_init_head = c.get_bool("model.deeplabv3.he_init_head", d.he_init_head);
  }
  // data
  ex.train_split =
      data::parse_split(c.get_string("data.train_split", "train", {"train", "val", "test"}));
  ex.val_split = data::parse_split(c.get_string("data.val_split", "val", {"train", "val", "test"}));
  ex.labels = c.get_string("data.labels", "label_ids", {"label_ids", "train_ids"}) == "label_ids"
                  ? data::LabelSource::label_ids
                  : data::LabelSource::train_ids;
  ex.train_resize = read_resize_options(c, "data.resize", data::ResizeOptions{});
  ex.val_resize = read_resize_options(c, "data.val_resize", ex.train_resize);
  const std::string norm =
      c.get_string("data.normalization", ex.arch == "unet" ? "cityscapes" : "imagenet",
                   {"cityscapes", "imagenet"});
  ex.normalization =
      norm == "cityscapes" ? data::kCityscapesNormalization : data::kImageNetNormalization;
  const std::vector<double> scale = c.get_double_list("data.scale", {1.0, 1.0}, 0.05, 20.0, 2);
  SEG_CHECK(scale[0] <= scale[1], "config: data.scale must be [min, max] with min <= max, got [",
            scale[0], ", ", scale[1], "]");
  ex.scale_min = static_cast<float>(scale[0]);
  ex.scale_max = static_cast<float>(scale[1]);
  const std::vector<int64_t> crop = c.get_int_list("data.crop", {0, 0}, 0, 1 << 15, 2);
  SEG_CHECK((crop[0] == 0) == (crop[1] == 0),
            "config: data.crop must be [h, w] with both > 0, or [0, 0]");
  ex.crop_h = static_cast<int>(crop[0]);
  ex.crop_w = static_cast<int>(crop[1]);
  ex.flip = c.get_bool("data.flip", false);
  ex.aux_weight = c.get_double("train.aux_weight", 0.4, 0.0, 100.0);
  ex.train = read_training_options(c, TrainingDefaults{});
  return ex;
}

std::unique_ptr<SegmentationModel> make_segmentation_model(const SegmentationExperiment& ex,
                                                           Generator& gen) {
  if (ex.arch == "unet") return std::make_unique<UNetModel>(ex.unet, gen);
  // The dropout stream is the run's own, seeded apart from the weights'.
  return std::make_unique<DeepLabModel>(ex.deeplab, gen, ex.train.seed + 0x9E3779B97F4A7C15ull);
}

std::unique_ptr<data::Dataset> make_segmentation_dataset(const SegmentationExperiment& ex,
                                                         const std::filesystem::path& root,
                                                         data::Split split, bool training) {
  data::CityscapesOptions where;
  where.root = root;
  where.split = split;
  where.labels = ex.labels;
  where.skip_incomplete = ex.train.skip_incomplete;
  data::SegmentationOptions o;
  o.norm = ex.normalization;
  o.seed = ex.train.seed;
  if (training) {
    o.resize = ex.train_resize;
    o.scale_min = ex.scale_min;
    o.scale_max = ex.scale_max;
    o.crop_h = ex.crop_h;
    o.crop_w = ex.crop_w;
    o.flip = ex.flip;
  } else {
    o.resize = ex.val_resize;
  }
  std::unique_ptr<data::Dataset> set = std::make_unique<data::SegmentationDataset>(where, o);
  SEG_CHECK(set->size() > 0, "Cityscapes ", root.string(), ": the ", data::split_name(split),
            " split has no annotated images");
  return limit_dataset(std::move(set), training ? ex.train.limit_train : ex.train.limit_val);
}

std::vector<std::vector<Tensor>> parameter_groups(SegmentationModel& model) {
  return {model.backbone_parameters(), model.head_parameters()};
}

}  // namespace seg::app
