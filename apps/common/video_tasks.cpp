#include "apps/common/video_tasks.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "data/png.h"
#include "data/transforms.h"
#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/metrics.h"
#include "engine/ops.h"
#include "models/future.h"
#include "models/pretext.h"

namespace seg::app {

using nlohmann::json;

namespace {

// ---- shared config ----

struct VideoExperiment {
  TrainingOptions train;
  models::ResNetOptions backbone;  // the pretext tasks' (future frames has its own encoder)
  data::Split train_split = data::Split::train, val_split = data::Split::val;
  data::VideoOptions video;
  int64_t samples = 4;
};

constexpr data::ResizeOptions kStudyVideoSize{1, 128, 256, data::Interp::area};

VideoExperiment read_video_experiment(Config& c, const TrainingDefaults& defaults,
                                      bool with_backbone, bool with_samples) {
  VideoExperiment ex;
  if (with_backbone) {
    models::ResNetOptions& b = ex.backbone;
    b.depth = static_cast<int>(c.get_int("model.backbone.depth", 101, 50, 101));
    SEG_CHECK(b.depth == 50 || b.depth == 101, "config: model.backbone.depth must be 50 or 101, got ",
              b.depth);
    const std::vector<int64_t> blocks = c.get_int_list("model.backbone.blocks", {}, 1, 64);
    SEG_CHECK(blocks.empty() || blocks.size() == 4,
              "config: model.backbone.blocks must hold 4 block counts (or none)");
    b.blocks.assign(blocks.begin(), blocks.end());
    b.base_channels = c.get_int("model.backbone.base_channels", 64, 1, 1024);
    b.bn_momentum = c.get_double("model.backbone.bn_momentum", 0.1, 0.0, 1.0);
    b.num_classes = 0;
  }
  ex.train_split =
      data::parse_split(c.get_string("data.train_split", "train", {"train", "val", "test"}));
  ex.val_split = data::parse_split(c.get_string("data.val_split", "val", {"train", "val", "test"}));
  ex.video.resize = read_resize_options(c, "data.resize", kStudyVideoSize);
  const std::string norm =
      c.get_string("data.normalization", "imagenet", {"imagenet", "cityscapes"});
  ex.video.norm =
      norm == "imagenet" ? data::kImageNetNormalization : data::kCityscapesNormalization;
  ex.video.flip = c.get_bool("data.flip", true);
  if (with_samples) ex.samples = c.get_int("train.samples", 4, 0, 1000);
  ex.train = read_training_options(c, defaults);
  ex.video.seed = ex.train.seed;
  return ex;
}

std::vector<int> int_list(Config& c, const std::string& key, const std::vector<int>& fallback,
                          int64_t lo, int64_t hi) {
  const std::vector<int64_t> d(fallback.begin(), fallback.end());
  const std::vector<int64_t> v = c.get_int_list(key, d, lo, hi);
  return std::vector<int>(v.begin(), v.end());
}

data::CityscapesOptions where_of(const VideoExperiment& ex, const std::filesystem::path& root,
                                 data::Split split) {
  data::CityscapesOptions where;
  where.root = root;
  where.split = split;
  where.skip_incomplete = ex.train.skip_incomplete;
  return where;
}

// The training set (augmented) or the validation set (no flips: fixed samples).
data::VideoOptions video_options(const VideoExperiment& ex, bool training) {
  data::VideoOptions o = ex.video;
  if (!training) o.flip = false;
  return o;
}

std::unique_ptr<data::Dataset> checked(std::unique_ptr<data::Dataset> set,
                                       const std::filesystem::path& root, data::Split split,
                                       int64_t limit) {
  SEG_CHECK(set->size() > 0, "Cityscapes ", root.string(), ": the ", data::split_name(split),
            " split has no video snippets (leftImg8bit_sequence)");
  return limit_dataset(std::move(set), limit);
}

std::string backbone_text(const models::ResNetOptions& b) {
  std::string s = "ResNet-" + std::to_string(b.depth);
  if (!b.blocks.empty()) {
    s = "ResNet (blocks";
    for (int n : b.blocks) s += " " + std::to_string(n);
    s += ", base " + std::to_string(b.base_channels) + ")";
  }
  return s;
}

std::string millions(const nn::Module& m) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2fM parameters",
                static_cast<double>(count_parameters(m)) / 1e6);
  return buf;
}

std::string fmt(const char* format, double a, double b = 0.0, double c = 0.0, double d = 0.0) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), format, a, b, c, d);
  return buf;
}

double ratio(double num, int64_t den) {
  return den > 0 ? num / static_cast<double>(den) : std::nan("");
}

// A Lab image (3, h, w) f32 on the CPU as RGB bytes into `rgb` at column offset x0 of a canvas
// `canvas_w` wide.
void put_lab(const float* lab, int64_t h, int64_t w, std::vector<uint8_t>& rgb, int64_t canvas_w,
             int64_t x0, int64_t y0) {
  const int64_t plane = h * w;
  for (int64_t y = 0; y < h; ++y) {
    for (int64_t x = 0; x < w; ++x) {
      const int64_t k = y * w + x;
      const std::array<float, 3> c = data::lab_to_rgb({lab[k], lab[plane + k], lab[2 * plane + k]});
      uint8_t* out = rgb.data() + ((y0 + y) * canvas_w + x0 + x) * 3;
      for (int q = 0; q < 3; ++q) {
        out[q] = static_cast<uint8_t>(std::lround(std::clamp(c[static_cast<size_t>(q)], 0.0f, 1.0f) * 255.0f));
      }
    }
  }
}

// An RGB image (3, h, w) whose values are (v - offset) * scale in [0, 1] per channel.
void put_rgb(const float* img, int64_t h, int64_t w, const std::array<float, 3>& mean,
             const std::array<float, 3>& std, std::vector<uint8_t>& rgb, int64_t canvas_w,
             int64_t x0, int64_t y0) {
  const int64_t plane = h * w;
  for (int q = 0; q < 3; ++q) {
    for (int64_t y = 0; y < h; ++y) {
      for (int64_t x = 0; x < w; ++x) {
        const float v = img[q * plane + y * w + x] * std[static_cast<size_t>(q)] +
                        mean[static_cast<size_t>(q)];
        rgb[static_cast<size_t>(((y0 + y) * canvas_w + x0 + x) * 3 + q)] =
            static_cast<uint8_t>(std::lround(std::clamp(v, 0.0f, 1.0f) * 255.0f));
      }
    }
  }
}

// What every video task shares: its experiment, its two datasets and its network.
template <class Net>
class VideoTask : public TrainingTask {
 public:
  VideoTask(std::string score_name, std::string score_label, bool higher_is_better)
      : score_name_(std::move(score_name)),
        score_label_(std::move(score_label)),
        higher_is_better_(higher_is_better) {}
  const TrainingOptions& options() const override { return ex_.train; }
  std::string score_name() const override { return score_name_; }
  std::string score_label() const override { return score_label_; }
  bool higher_is_better() const override { return higher_is_better_; }
  std::string unit() const override { return "snippet"; }
  const data::Dataset& train_set() const override { return *train_set_; }
  const data::Dataset& val_set() const override { return *val_set_; }
  nn::Module& module() override { return *net_; }
  std::vector<std::vector<Tensor>> parameter_groups() override { return {net_->parameters()}; }

 protected:
  // The loop's defaults for the video tasks: batch 8, Adam at `lr`, this task's score.
  TrainingDefaults defaults(double lr) const {
    TrainingDefaults d;
    d.batch_size = 8;
    d.optimizer = "adam";
    d.lr = lr;
    d.score = score_name_;
    d.higher_is_better = higher_is_better_;
    return d;
  }

  // The training set (augmented) and the validation set (fixed) of dataset type DS.
  template <class DS, class TaskOptions>
  void make_sets(const std::filesystem::path& root, const TaskOptions& task) {
    train_set_ = checked(std::make_unique<DS>(where_of(ex_, root, ex_.train_split),
                                              video_options(ex_, true), task),
                         root, ex_.train_split, ex_.train.limit_train);
    val_set_ = checked(std::make_unique<DS>(where_of(ex_, root, ex_.val_split),
                                            video_options(ex_, false), task),
                       root, ex_.val_split, ex_.train.limit_val);
  }

  VideoExperiment ex_;
  std::unique_ptr<data::Dataset> train_set_, val_set_;
  std::unique_ptr<Net> net_;

 private:
  std::string score_name_, score_label_;
  bool higher_is_better_;
};

// ---- pretext_triplet ----

class TripletTask final : public VideoTask<models::TripletNet> {
 public:
  explicit TripletTask(Config& c) : VideoTask("accuracy", "triplet accuracy", true) {
    const TrainingDefaults d = defaults(1e-3);
    net_options_.embedding_dim = c.get_int("model.embedding_dim", 0, 0, 1 << 16);
    p_ = c.get_string("loss.distance", "l1", {"l1", "l2"}) == "l1" ? 1 : 2;
    margin_ = c.get_double("loss.margin", 1.0, 0.0, 1e6);
    triplet_.positive_within = static_cast<int>(c.get_int("data.positive_within", 3, 1, 29));
    triplet_.negative_beyond = static_cast<int>(c.get_int("data.negative_beyond", 10, 1, 15));
    ex_ = read_video_experiment(c, d, /*with_backbone=*/true, /*with_samples=*/false);
    net_options_.backbone = ex_.backbone;
  }

  void build(const std::filesystem::path& root, Generator& gen) override {
    make_sets<data::TripletDataset>(root, triplet_);
    net_ = std::make_unique<models::TripletNet>(net_options_, gen);
  }
  std::string describe() const override {
    return "TripletNet (" + backbone_text(net_options_.backbone) + ", embedding " +
           std::to_string(net_->embedding_dim()) + ", L" + std::to_string(p_) + " margin " +
           fmt("%g", margin_) + ", " + millions(*net_) + ")";
  }

  models::TripletEmbeddings embed(const data::Batch& batch, Device device) {
    return net_->embed(batch.at("anchor").to(device), batch.at("positive").to(device),
                       batch.at("negative").to(device));
  }
  Tensor loss(const data::Batch& batch, Device device) override {
    return models::triplet_loss(embed(batch, device), p_, margin_);
  }
  ValidationResult validate(data::Loader& loader, const ValidationContext& context) override {
    net_->eval();
    NoGradGuard no_grad;
    ValidationResult v;
    double loss_sum = 0.0;
    int64_t correct = 0;
    loader.start_epoch(0);
    while (std::optional<data::Batch> batch = loader.next()) {
      if (context.stop && context.stop()) {
        v.interrupted = true;
        return v;
      }
      const models::TripletEmbeddings e = embed(*batch, context.device);
      const int64_t n = e.anchor.size(0);
      loss_sum += models::triplet_loss(e, p_, margin_).item() * static_cast<double>(n);
      correct += models::triplet_correct(e, p_);
      v.samples += n;
    }
    v.loss = ratio(loss_sum, v.samples);
    v.score = ratio(static_cast<double>(correct), v.samples);
    v.record = {{"chance", 0.5}};
    v.summary = fmt("loss %.4f  triplet accuracy %.4f (chance 0.5)", v.loss, v.score);
    return v;
  }

 private:
  models::TripletNetOptions net_options_;
  data::TripletOptions triplet_;
  int p_ = 1;
  double margin_ = 1.0;
};

// ---- pretext_order ----

class OrderTask final : public VideoTask<models::FrameOrderNet> {
 public:
  explicit OrderTask(Config& c) : VideoTask("accuracy", "order accuracy", true) {
    const TrainingDefaults d = defaults(1e-5);
    order_.offsets = int_list(c, "data.offsets", {8, 10, 12}, 0, data::kSnippetLength - 1);
    SEG_CHECK(order_.offsets.size() == 3 || order_.offsets.size() == 4,
              "config: data.offsets must hold 3 or 4 frame offsets, got ", order_.offsets.size());
    net_options_.num_frames = static_cast<int>(order_.offsets.size());
    net_options_.pair_hidden = c.get_int("model.pair_hidden", 512, 1, 1 << 16);
    net_options_.dropout = c.get_double("model.dropout", 0.5, 0.0, 0.99);
    ex_ = read_video_experiment(c, d, /*with_backbone=*/true, /*with_samples=*/false);
    net_options_.backbone = ex_.backbone;
  }

  void build(const std::filesystem::path& root, Generator& gen) override {
    make_sets<data::FrameOrderDataset>(root, order_);
    // The dropout stream is the run's own, seeded apart from the weights'.
    net_ = std::make_unique<models::FrameOrderNet>(
        net_options_, gen, std::make_shared<Generator>(ex_.train.seed + 0x9E3779B97F4A7C15ull));
  }
  std::vector<std::pair<std::string, Generator*>> generators() override {
    return {{"dropout", net_->dropout_generator.get()}};
  }
  std::string describe() const override {
    return "FrameOrderNet (" + backbone_text(net_options_.backbone) + ", " +
           std::to_string(net_options_.num_frames) + " frames, " +
           std::to_string(net_->num_classes()) + " orders, " + millions(*net_) + ")";
  }

  Tensor loss(const data::Batch& batch, Device device) override {
    return cross_entropy(net_->forward(batch.at("frames").to(device)), batch.at("label").to(device));
  }
  ValidationResult validate(data::Loader& loader, const ValidationContext& context) override {
    net_->eval();
    NoGradGuard no_grad;
    ValidationResult v;
    double loss_sum = 0.0;
    int64_t correct = 0;
    loader.start_epoch(0);
    while (std::optional<data::Batch> batch = loader.next()) {
      if (context.stop && context.stop()) {
        v.interrupted = true;
        return v;
      }
      const Tensor logits = net_->forward(batch->at("frames").to(context.device));
      const Tensor labels = batch->at("label");
      const int64_t n = labels.size(0);
      loss_sum += cross_entropy(logits, labels.to(context.device)).item() * static_cast<double>(n);
      const std::vector<int64_t> pred = to_vector<int64_t>(argmax(logits, 1).to(Device::cpu()).to(DType::i64));
      const std::vector<int32_t> truth = to_vector<int32_t>(labels);
      for (size_t i = 0; i < truth.size(); ++i) correct += pred[i] == truth[i];
      v.samples += n;
    }
    const double chance = 1.0 / static_cast<double>(net_->num_classes());
    v.loss = ratio(loss_sum, v.samples);
    v.score = ratio(static_cast<double>(correct), v.samples);
    v.record = {{"chance", chance}};
    v.summary = fmt("loss %.4f  order accuracy %.4f (chance %.4f)", v.loss, v.score, chance);
    return v;
  }

 private:
  models::FrameOrderNetOptions net_options_;
  data::FrameOrderOptions order_;
};

// ---- pretext_colorize ----

class ColorizeTask final : public VideoTask<models::ColorizationNet> {
 public:
  explicit ColorizeTask(Config& c) : VideoTask("error", "colorization error", false) {
    const TrainingDefaults d = defaults(1e-4);
    color_.references = int_list(c, "data.references", {0, 4, 8}, 0, data::kSnippetLength - 1);
    SEG_CHECK(!color_.references.empty(), "config: data.references must name at least one frame");
    color_.target = static_cast<int>(c.get_int("data.target", 12, 0, data::kSnippetLength - 1));
    net_options_.embed_dim = c.get_int("model.embed_dim", 64, 1, 1 << 16);
    net_options_.temperature = c.get_double("model.temperature", 1.0, 1e-6, 1e6);
    net_options_.output_stride =
        static_cast<int>(c.get_int("model.output_stride", 8, 8, 32));
    SEG_CHECK(net_options_.output_stride == 8 || net_options_.output_stride == 16 ||
                  net_options_.output_stride == 32,
              "config: model.output_stride must be 8, 16 or 32, got ", net_options_.output_stride);
    net_options_.mode =
        c.get_string("colorize.mode", "ab", {"ab", "bins"}) == "ab" ? models::ColorMode::ab
                                                                    : models::ColorMode::bins;
    // Bins mode: an odd count puts ab = (0, 0), the colour of every grey pixel, at a bin's centre;
    // with an even count it sits on a corner and is quantised 0.7 bin widths away.
    net_options_.bins = c.get_int("colorize.bins", 17, 2, 64);
    ex_ = read_video_experiment(c, d, /*with_backbone=*/true, /*with_samples=*/true);
    net_options_.backbone = ex_.backbone;
  }

  void build(const std::filesystem::path& root, Generator& gen) override {
    make_sets<data::ColorizationDataset>(root, color_);
    net_ = std::make_unique<models::ColorizationNet>(net_options_, gen);
  }
  std::string describe() const override {
    const bool ab = net_options_.mode == models::ColorMode::ab;
    return "ColorizationNet (" + backbone_text(net_options_.backbone) + ", output stride " +
           std::to_string(net_options_.output_stride) + ", embedding " +
           std::to_string(net_options_.embed_dim) + ", temperature " +
           fmt("%g", net_options_.temperature) + ", " +
           (ab ? std::string("ab regression") : std::to_string(net_options_.bins) + "x" +
                                                    std::to_string(net_options_.bins) + " ab bins") +
           ", " + std::to_string(color_.references.size()) + " references, " + millions(*net_) + ")";
  }

  Tensor loss(const data::Batch& batch, Device device) override {
    return net_->forward_loss(batch.at("grey").to(device), batch.at("lab").to(device)).loss;
  }

  ValidationResult validate(data::Loader& loader, const ValidationContext& context) override {
    net_->eval();
    NoGradGuard no_grad;
    ValidationResult v;
    double loss_sum = 0.0, error_sum = 0.0, baseline_sum = 0.0;
    int64_t written = 0;
    const int64_t refs = static_cast<int64_t>(color_.references.size());
    loader.start_epoch(0);
    while (std::optional<data::Batch> batch = loader.next()) {
      if (context.stop && context.stop()) {
        v.interrupted = true;
        return v;
      }
      const Tensor grey = batch->at("grey").to(context.device);
      const Tensor lab = batch->at("lab").to(context.device);
      const int64_t n = lab.size(0), h = lab.size(3), w = lab.size(4);
      const models::ColorizationOutput out = net_->forward_loss(grey, lab);
      loss_sum += out.loss.item() * static_cast<double>(n);
      const Tensor ab = net_->predicted_ab(out.prediction, h, w);  // (n, 2, H, W)
      const Tensor target_lab = lab.select(1, refs);                // (n, 3, H, W)
      error_sum += models::colorization_error(ab, target_lab).item() * static_cast<double>(n);
      // The baseline: every pixel of the target the mean ab of its sample's references.
      const Tensor ref_ab = lab.narrow(1, 0, refs).narrow(2, 1, 2);  // (n, R, 2, H, W)
      const Tensor mean_ab = mean(ref_ab, {1, 3, 4}).unsqueeze(2).unsqueeze(3);  // (n, 2, 1, 1)
      const Tensor flat = mean_ab.expand({n, 2, h, w}).contiguous();
      baseline_sum += models::colorization_error(flat, target_lab).item() * static_cast<double>(n);
      if (written < ex_.samples) {
        written += write_samples(context.samples_dir, *batch, grey.select(1, refs), ab, target_lab,
                                 ex_.samples - written);
      }
      v.samples += n;
    }
    v.loss = ratio(loss_sum, v.samples);
    v.score = ratio(error_sum, v.samples);
    const double baseline = ratio(baseline_sum, v.samples);
    v.record = {{"mean_colour_error", number_or_null(baseline)}};
    v.summary = fmt("loss %.4f  colorization error %.3f (the references' mean colour: %.3f)",
                    v.loss, v.score, baseline);
    return v;
  }

 private:
  // One PNG per sample: the grey target, our colourisation, the true colours, side by side.
  int64_t write_samples(const std::filesystem::path& dir, const data::Batch& batch,
                        const Tensor& target_grey, const Tensor& ab, const Tensor& target_lab,
                        int64_t most) {
    std::filesystem::create_directories(dir);
    const Tensor colourised = models::colorized_lab(target_grey, ab).to(Device::cpu()).contiguous();
    const Tensor truth = target_lab.to(Device::cpu()).contiguous();
    const Tensor grey_lab = models::colorized_lab(target_grey, zeros_like(ab)).to(Device::cpu()).contiguous();
    const int64_t n = std::min<int64_t>(most, truth.size(0)), h = truth.size(2), w = truth.size(3);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<uint8_t> rgb(static_cast<size_t>(3 * w * h * 3));
      put_lab(grey_lab.select(0, i).contiguous().data<float>(), h, w, rgb, 3 * w, 0, 0);
      put_lab(colourised.select(0, i).contiguous().data<float>(), h, w, rgb, 3 * w, w, 0);
      put_lab(truth.select(0, i).contiguous().data<float>(), h, w, rgb, 3 * w, 2 * w, 0);
      data::write_png_rgb(dir / (batch.ids[static_cast<size_t>(i)] + "_colorized.png"),
                          static_cast<int>(3 * w), static_cast<int>(h), rgb.data());
    }
    return n;
  }

  models::ColorizationNetOptions net_options_;
  data::ColorizationOptions color_;
};

// ---- train_future ----

class FutureTask final : public VideoTask<models::FutureFrameNet> {
 public:
  explicit FutureTask(Config& c) : VideoTask("l1", "L1", false) {
    const TrainingDefaults d = defaults(1e-3);
    future_.inputs = int_list(c, "data.inputs", {0, 2, 4}, 0, data::kSnippetLength - 1);
    future_.targets = int_list(c, "data.targets", {6, 8, 10}, 0, data::kSnippetLength - 1);
    SEG_CHECK(!future_.inputs.empty() && !future_.targets.empty(),
              "config: data.inputs and data.targets must each name at least one frame");
    net_options_.inputs = static_cast<int64_t>(future_.inputs.size());
    net_options_.outputs = static_cast<int64_t>(future_.targets.size());
    net_options_.base_channels = c.get_int("model.base_channels", 32, 1, 4096);
    net_options_.levels = static_cast<int>(c.get_int("model.levels", 4, 1, 8));
    net_options_.residual = c.get_bool("model.residual", false);
    ex_ = read_video_experiment(c, d, /*with_backbone=*/false, /*with_samples=*/true);
  }

  void build(const std::filesystem::path& root, Generator& gen) override {
    make_sets<data::FutureFrameDataset>(root, future_);
    net_ = std::make_unique<models::FutureFrameNet>(net_options_, gen);
  }
  std::string describe() const override {
    return "FutureFrameNet (" + std::to_string(net_options_.inputs) + " -> " +
           std::to_string(net_options_.outputs) + " frames, base " +
           std::to_string(net_options_.base_channels) + ", " + std::to_string(net_options_.levels) +
           " levels" + (net_options_.residual ? ", residual on the last frame" : "") + ", " +
           millions(*net_) + ")";
  }

  Tensor predict(const Tensor& inputs) {
    return net_->forward(inputs, symmetric(inputs.select(1, inputs.size(1) - 1)));
  }
  Tensor loss(const data::Batch& batch, Device device) override {
    return l1_loss(predict(batch.at("inputs").to(device)), batch.at("targets").to(device));
  }

  ValidationResult validate(data::Loader& loader, const ValidationContext& context) override {
    net_->eval();
    NoGradGuard no_grad;
    ValidationResult v;
    double l1_sum = 0.0, repeat_sum = 0.0, psnr_sum = 0.0, ssim_sum = 0.0;
    int64_t written = 0;
    loader.start_epoch(0);
    while (std::optional<data::Batch> batch = loader.next()) {
      if (context.stop && context.stop()) {
        v.interrupted = true;
        return v;
      }
      const Tensor inputs = batch->at("inputs").to(context.device);     // (n, K, 3, H, W)
      const Tensor targets = batch->at("targets").to(context.device);   // (n, M, 3, H, W), [-1, 1]
      const Tensor pred = predict(inputs);
      const int64_t n = targets.size(0), m = targets.size(1), h = targets.size(3), w = targets.size(4);
      l1_sum += l1_loss(pred, targets).item() * static_cast<double>(n);
      // The last input frame, repeated, in the targets' [-1, 1] scale.
      const Tensor last = symmetric(inputs.select(1, inputs.size(1) - 1)).unsqueeze(1).expand({n, m, 3, h, w});
      repeat_sum += l1_loss(last, targets).item() * static_cast<double>(n);
      // PSNR and SSIM on [0, 1], each predicted frame an image.
      const Tensor p01 = mul_scalar(add_scalar(pred, 1.0), 0.5).reshape({n * m, 3, h, w});
      const Tensor t01 = mul_scalar(add_scalar(targets, 1.0), 0.5).reshape({n * m, 3, h, w});
      psnr_sum += mean_psnr(p01, t01) * static_cast<double>(n);
      ssim_sum += mean_ssim(p01, t01) * static_cast<double>(n);
      if (written < ex_.samples) {
        written += write_samples(context.samples_dir, *batch, inputs, targets, pred, ex_.samples - written);
      }
      v.samples += n;
    }
    v.loss = ratio(l1_sum, v.samples);
    v.score = v.loss;
    const double repeat = ratio(repeat_sum, v.samples);
    const double psnr = ratio(psnr_sum, v.samples), ssim = ratio(ssim_sum, v.samples);
    v.record = {{"psnr", number_or_null(psnr)},
                {"ssim", number_or_null(ssim)},
                {"repeat_last_l1", number_or_null(repeat)}};
    v.summary = fmt("L1 %.4f (the last input repeated: %.4f)  PSNR %.2f dB  SSIM %.4f", v.loss,
                    repeat, psnr, ssim);
    return v;
  }

 private:
  // A normalised input frame (..., 3, H, W) in the targets' [-1, 1] scale.
  Tensor symmetric(const Tensor& x) const {
    const data::Normalization& norm = ex_.video.norm;
    const Tensor m = from_vector(std::vector<float>(norm.mean.begin(), norm.mean.end()), {3, 1, 1}, x.device());
    const Tensor s = from_vector(std::vector<float>(norm.std.begin(), norm.std.end()), {3, 1, 1}, x.device());
    return add_scalar(mul_scalar(x * s + m, 2.0), -1.0);
  }

  // One PNG per sample: the inputs, then the true future frames (top row) and the predicted ones
  // (bottom row, under the truth).
  int64_t write_samples(const std::filesystem::path& dir, const data::Batch& batch,
                        const Tensor& inputs, const Tensor& targets, const Tensor& pred, int64_t most) {
    std::filesystem::create_directories(dir);
    const Tensor in = inputs.to(Device::cpu()).contiguous();
    const Tensor tr = targets.to(Device::cpu()).contiguous();
    const Tensor pr = pred.to(Device::cpu()).contiguous();
    const int64_t k = in.size(1), m = tr.size(1), h = tr.size(3), w = tr.size(4);
    const int64_t n = std::min<int64_t>(most, tr.size(0)), cw = (k + m) * w;
    const data::Normalization& norm = ex_.video.norm;
    const std::array<float, 3> half{0.5f, 0.5f, 0.5f};
    for (int64_t i = 0; i < n; ++i) {
      std::vector<uint8_t> rgb(static_cast<size_t>(cw * 2 * h * 3), 0);
      for (int64_t f = 0; f < k; ++f) {
        const float* src = in.select(0, i).select(0, f).contiguous().data<float>();
        put_rgb(src, h, w, norm.mean, norm.std, rgb, cw, f * w, 0);
        put_rgb(src, h, w, norm.mean, norm.std, rgb, cw, f * w, h);
      }
      for (int64_t f = 0; f < m; ++f) {
        put_rgb(tr.select(0, i).select(0, f).contiguous().data<float>(), h, w, half, half, rgb, cw,
                (k + f) * w, 0);
        put_rgb(pr.select(0, i).select(0, f).contiguous().data<float>(), h, w, half, half, rgb, cw,
                (k + f) * w, h);
      }
      data::write_png_rgb(dir / (batch.ids[static_cast<size_t>(i)] + "_future.png"),
                          static_cast<int>(cw), static_cast<int>(2 * h), rgb.data());
    }
    return n;
  }

  models::FutureFrameNetOptions net_options_;
  data::FutureFrameOptions future_;
};

}  // namespace

std::unique_ptr<TrainingTask> read_triplet_task(Config& config) {
  return std::make_unique<TripletTask>(config);
}
std::unique_ptr<TrainingTask> read_order_task(Config& config) {
  return std::make_unique<OrderTask>(config);
}
std::unique_ptr<TrainingTask> read_colorize_task(Config& config) {
  return std::make_unique<ColorizeTask>(config);
}
std::unique_ptr<TrainingTask> read_future_task(Config& config) {
  return std::make_unique<FutureTask>(config);
}

}  // namespace seg::app
