#include "apps/common/segmentation.h"

#include <algorithm>
#include <cstdio>
#include <map>

#include "engine/error.h"

namespace seg::app {

namespace {

data::ResizeOptions read_resize(Config& c, const std::string& prefix,
                                const data::ResizeOptions& d) {
  data::ResizeOptions r;
  r.downsample = static_cast<int>(c.get_int(prefix + ".downsample", d.downsample, 1, 64));
  r.height = static_cast<int>(c.get_int(prefix + ".height", d.height, 0, 1 << 15));
  r.width = static_cast<int>(c.get_int(prefix + ".width", d.width, 0, 1 << 15));
  r.interp = data::parse_interp(c.get_string(prefix + ".interp",
                                             d.interp == data::Interp::area ? "area" : "bilinear",
                                             {"area", "bilinear"}));
  SEG_CHECK((r.height == 0) == (r.width == 0), "config: ", prefix,
            ".height and .width are given together (or neither)");
  SEG_CHECK(r.height == 0 || r.downsample == 1, "config: ", prefix,
            " takes downsample or height/width, not both");
  return r;
}

// The first `count` samples of a dataset.
class SubsetDataset final : public data::Dataset {
 public:
  SubsetDataset(std::unique_ptr<data::Dataset> base, int64_t count)
      : base_(std::move(base)), count_(std::min(count, base_->size())) {}
  int64_t size() const override { return count_; }
  data::Sample get(int64_t index, uint64_t epoch) const override {
    return base_->get(index, epoch);
  }
  std::string describe(int64_t index) const override { return base_->describe(index); }
  const data::ScanReport& report() const override { return base_->report(); }

 private:
  std::unique_ptr<data::Dataset> base_;
  int64_t count_;
};

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

int64_t count_parameters(const nn::Module& module) {
  int64_t n = 0;
  for (const Tensor& p : module.parameters()) n += p.numel();
  return n;
}

SegmentationExperiment read_segmentation_experiment(Config& c) {
  SegmentationExperiment ex;
  ex.description = c.get_string("description", "");
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
  // pretrained initialisation
  ex.init_file = c.get_string("init.file", "");
  if (!ex.init_file.empty()) {
    const models::PretrainedOptions imagenet = models::imagenet_backbone_options();
    std::map<std::string, std::string> fallback;
    for (const models::PrefixMapping& m : imagenet.mappings)
      fallback[m.file_prefix] = m.module_prefix;
    ex.init.mappings.clear();
    for (const auto& [from, to] : c.get_string_map("init.mappings", fallback)) {
      ex.init.mappings.push_back({from, to});
    }
    // Longest file prefixes first, so that a specific mapping wins over a general one.
    std::stable_sort(ex.init.mappings.begin(), ex.init.mappings.end(),
                     [](const models::PrefixMapping& a, const models::PrefixMapping& b) {
                       return a.file_prefix.size() > b.file_prefix.size();
                     });
    ex.init.drop = c.get_string_list("init.drop", imagenet.drop);
    ex.init.allow_unexpected = c.get_bool("init.allow_unexpected", false);
  }
  // data
  ex.train_split =
      data::parse_split(c.get_string("data.train_split", "train", {"train", "val", "test"}));
  ex.val_split = data::parse_split(c.get_string("data.val_split", "val", {"train", "val", "test"}));
  ex.labels = c.get_string("data.labels", "label_ids", {"label_ids", "train_ids"}) == "label_ids"
                  ? data::LabelSource::label_ids
                  : data::LabelSource::train_ids;
  ex.train_resize = read_resize(c, "data.resize", data::ResizeOptions{});
  ex.val_resize = read_resize(c, "data.val_resize", ex.train_resize);
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
  ex.workers = static_cast<int>(c.get_int("data.workers", 2, 0, 256));
  ex.skip_incomplete = c.get_bool("data.skip_incomplete", false);
  ex.limit_train = c.get_int("data.limit_train", 0, 0);
  ex.limit_val = c.get_int("data.limit_val", 0, 0);
  // training
  ex.device = c.get_string("train.device", "cpu");
  parse_device(ex.device);  // checked here, resolved by the app
  ex.epochs = c.get_int("train.epochs", 1, 1);
  ex.iterations = c.get_int("train.iterations", 0, 0);
  ex.batch_size = c.get_int("train.batch_size", 1, 1, 4096);
  ex.val_batch_size = c.get_int("train.val_batch_size", 1, 1, 4096);
  ex.seed = static_cast<uint64_t>(c.get_int("train.seed", 0, 0));
  ex.log_every = c.get_int("train.log_every", 10, 1);
  ex.val_every_epochs = c.get_int("train.val_every_epochs", 1, 0);
  ex.val_every_iterations = c.get_int("train.val_every_iterations", 0, 0);
  ex.checkpoint_every = c.get_int("train.checkpoint_every", 0, 0);
  ex.aux_weight = c.get_double("train.aux_weight", 0.4, 0.0, 100.0);
  // optimiser
  ex.optimizer = c.get_string("optim.name", "sgd", {"sgd", "rmsprop", "adam", "adamw"});
  ex.lr = c.get_double("optim.lr", 0.01, 0.0, 100.0);
  ex.weight_decay = c.get_double("optim.weight_decay", 0.0, 0.0, 10.0);
  ex.eps = c.get_double("optim.eps", 1e-8, 0.0, 1.0);
  ex.head_lr_mult = c.get_double("optim.head_lr_mult", 1.0, 0.0, 1e4);
  if (ex.optimizer == "sgd" || ex.optimizer == "rmsprop") {
    ex.momentum = c.get_double("optim.momentum", 0.0, 0.0, 1.0);
  }
  if (ex.optimizer == "sgd") {
    ex.dampening = c.get_double("optim.dampening", 0.0, 0.0, 1.0);
    ex.nesterov = c.get_bool("optim.nesterov", false);
  } else if (ex.optimizer == "rmsprop") {
    ex.alpha = c.get_double("optim.alpha", 0.99, 0.0, 1.0);
    ex.centered = c.get_bool("optim.centered", false);
  } else {
    ex.beta1 = c.get_double("optim.beta1", 0.9, 0.0, 1.0);
    ex.beta2 = c.get_double("optim.beta2", 0.999, 0.0, 1.0);
    ex.amsgrad = c.get_bool("optim.amsgrad", false);
  }
  // schedule
  ex.schedule =
      c.get_string("schedule.name", "none", {"none", "poly", "step", "cosine", "plateau"});
  if (ex.schedule == "poly" || ex.schedule == "step" || ex.schedule == "cosine") {
    ex.schedule_per = c.get_string("schedule.per", ex.schedule == "poly" ? "iteration" : "epoch",
                                   {"iteration", "epoch"});
  }
  if (ex.schedule == "poly") ex.power = c.get_double("schedule.power", 0.9, 0.0, 100.0);
  if (ex.schedule == "step") {
    ex.step_size = c.get_int("schedule.step_size", 1, 1);
    ex.gamma = c.get_double("schedule.gamma", 0.1, 0.0, 1.0);
  }
  if (ex.schedule == "plateau") {
    ex.plateau_metric = c.get_string("schedule.metric", "val_loss", {"val_loss", "val_miou"});
    ex.plateau.mode = ex.plateau_metric == "val_loss" ? PlateauMode::min : PlateauMode::max;
    ex.plateau.factor = c.get_double("schedule.factor", 0.1, 0.0, 0.999999);
    ex.plateau.patience = c.get_int("schedule.patience", 10, 0);
    ex.plateau.threshold = c.get_double("schedule.threshold", 1e-4, 0.0, 1.0);
    ex.plateau.cooldown = c.get_int("schedule.cooldown", 0, 0);
    ex.plateau.min_lrs = {c.get_double("schedule.min_lr", 0.0, 0.0, 100.0)};
  }
  return ex;
}

std::unique_ptr<SegmentationModel> make_segmentation_model(const SegmentationExperiment& ex,
                                                           Generator& gen) {
  if (ex.arch == "unet") return std::make_unique<UNetModel>(ex.unet, gen);
  // The dropout stream is the run's own, seeded apart from the weights'.
  return std::make_unique<DeepLabModel>(ex.deeplab, gen, ex.seed + 0x9E3779B97F4A7C15ull);
}

std::unique_ptr<data::Dataset> make_segmentation_dataset(const SegmentationExperiment& ex,
                                                         const std::filesystem::path& root,
                                                         data::Split split, bool training) {
  data::CityscapesOptions where;
  where.root = root;
  where.split = split;
  where.labels = ex.labels;
  where.skip_incomplete = ex.skip_incomplete;
  data::SegmentationOptions o;
  o.norm = ex.normalization;
  o.seed = ex.seed;
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
  const int64_t limit = training ? ex.limit_train : ex.limit_val;
  if (limit > 0) set = std::make_unique<SubsetDataset>(std::move(set), limit);
  return set;
}

namespace {

// An optimiser of type Opt over the groups, each group's options from options_of(g).
template <class Opt, class Options, class F>
std::unique_ptr<Optimizer> grouped(const std::vector<std::vector<Tensor>>& groups, F options_of) {
  std::vector<ParamGroupSpec<Options>> specs;
  for (size_t g = 0; g < groups.size(); ++g) specs.push_back({groups[g], options_of(g)});
  return std::make_unique<Opt>(specs);
}

}  // namespace

std::unique_ptr<Optimizer> make_optimizer(const SegmentationExperiment& ex,
                                          SegmentationModel& model) {
  std::vector<std::vector<Tensor>> groups{model.backbone_parameters()};
  if (std::vector<Tensor> head = model.head_parameters(); !head.empty()) groups.push_back(head);
  const auto lr_of = [&](size_t g) { return g == 0 ? ex.lr : ex.lr * ex.head_lr_mult; };
  if (ex.optimizer == "sgd") {
    return grouped<SGD, SGDOptions>(groups, [&](size_t g) {
      return SGDOptions{.lr = lr_of(g),
                        .momentum = ex.momentum,
                        .dampening = ex.dampening,
                        .weight_decay = ex.weight_decay,
                        .nesterov = ex.nesterov};
    });
  }
  if (ex.optimizer == "rmsprop") {
    return grouped<RMSprop, RMSpropOptions>(groups, [&](size_t g) {
      return RMSpropOptions{.lr = lr_of(g),
                            .alpha = ex.alpha,
                            .eps = ex.eps,
                            .weight_decay = ex.weight_decay,
                            .momentum = ex.momentum,
                            .centered = ex.centered};
    });
  }
  if (ex.optimizer == "adam") {
    return grouped<Adam, AdamOptions>(groups, [&](size_t g) {
      return AdamOptions{.lr = lr_of(g),
                         .beta1 = ex.beta1,
                         .beta2 = ex.beta2,
                         .eps = ex.eps,
                         .weight_decay = ex.weight_decay,
                         .amsgrad = ex.amsgrad};
    });
  }
  return grouped<AdamW, AdamWOptions>(groups, [&](size_t g) {
    return AdamWOptions{.lr = lr_of(g),
                        .beta1 = ex.beta1,
                        .beta2 = ex.beta2,
                        .eps = ex.eps,
                        .weight_decay = ex.weight_decay,
                        .amsgrad = ex.amsgrad};
  });
}

Schedule make_schedule(const SegmentationExperiment& ex, Optimizer& optimizer, int64_t iterations,
                       int64_t epochs) {
  Schedule s;
  s.per_iteration = ex.schedule_per == "iteration";
  const int64_t total = s.per_iteration ? iterations : epochs;
  if (ex.schedule == "poly") {
    s.scheduler = std::make_unique<PolynomialLR>(optimizer, total, ex.power);
  } else if (ex.schedule == "step") {
    s.scheduler = std::make_unique<StepLR>(optimizer, ex.step_size, ex.gamma);
  } else if (ex.schedule == "cosine") {
    s.scheduler = std::make_unique<CosineAnnealingLR>(optimizer, total);
  } else if (ex.schedule == "plateau") {
    s.plateau = std::make_unique<ReduceLROnPlateau>(optimizer, ex.plateau);
  }
  return s;
}

}  // namespace seg::app
