#include "apps/common/train_segmentation.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "data/labels.h"
#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"

namespace seg::app {

using nlohmann::json;

namespace {

constexpr int64_t kIgnoreIndex = 255;

int64_t labelled_pixels(const Tensor& labels) {
  int64_t n = 0;
  for (int32_t v : to_vector<int32_t>(labels)) n += v != kIgnoreIndex;
  return n;
}

json scores_json(const EvaluationResult& r) {
  json iou = json::array();
  for (double v : r.scores.iou) iou.push_back(std::isnan(v) ? json() : json(v));
  return {{"miou", std::isnan(r.scores.mean_iou) ? json() : json(r.scores.mean_iou)},
          {"pixel_accuracy",
           std::isnan(r.scores.pixel_accuracy) ? json() : json(r.scores.pixel_accuracy)},
          {"loss", std::isnan(r.loss) ? json() : json(r.loss)},
          {"iou", iou},
          {"images", r.images}};
}

}  // namespace

std::vector<std::string> segmentation_class_names(int64_t num_classes) {
  std::vector<std::string> names;
  if (num_classes != static_cast<int64_t>(data::kNumTrainClasses)) return names;
  for (std::string_view n : data::kTrainIdNames) names.emplace_back(n);
  return names;
}

EvaluationResult evaluate_segmentation(
    SegmentationModel& model, data::Loader& loader, Device device, int64_t num_classes,
    bool want_loss, const std::function<bool()>& stop,
    const std::function<void(const Tensor&, const data::Batch&)>& on_batch) {
  model.module().eval();
  NoGradGuard no_grad;
  EvaluationResult r;
  Tensor confusion = zeros({num_classes, num_classes}, DType::i64, device);
  double loss_sum = 0.0;
  int64_t pixels = 0;
  const bool upsample = want_loss || static_cast<bool>(on_batch);
  loader.start_epoch(0);
  while (std::optional<data::Batch> batch = loader.next()) {
    if (stop && stop()) {
      r.interrupted = true;
      break;
    }
    const Tensor images = batch->at("image").to(device);
    const Tensor labels = batch->at("label").to(device);
    const SegmentationModel::Output out = model.forward(images, upsample);
    accumulate_confusion(confusion, out.out, labels, kIgnoreIndex, model.align_corners());
    if (want_loss) {
      CrossEntropyOptions ce;
      ce.ignore_index = kIgnoreIndex;
      ce.reduction = Reduction::sum;
      loss_sum += cross_entropy(out.out, labels, ce).item();
      pixels += labelled_pixels(batch->at("label"));
    }
    if (on_batch) on_batch(out.out, *batch);
    r.images += images.size(0);
  }
  r.confusion = confusion.to(Device::cpu());
  r.scores = segmentation_scores(r.confusion);
  r.loss = pixels > 0 ? loss_sum / static_cast<double>(pixels) : std::nan("");
  return r;
}

namespace {

class SegmentationTask final : public TrainingTask {
 public:
  explicit SegmentationTask(SegmentationExperiment ex) : ex_(std::move(ex)) {}
  const TrainingOptions& options() const override { return ex_.train; }
  std::string score_name() const override { return "miou"; }
  std::string score_label() const override { return "mIoU"; }
  bool higher_is_better() const override { return true; }

  void build(const std::filesystem::path& root, Generator& gen) override {
    train_set_ = make_segmentation_dataset(ex_, root, ex_.train_split, /*training=*/true);
    val_set_ = make_segmentation_dataset(ex_, root, ex_.val_split, /*training=*/false);
    model_ = make_segmentation_model(ex_, gen);
  }
  const data::Dataset& train_set() const override { return *train_set_; }
  const data::Dataset& val_set() const override { return *val_set_; }
  nn::Module& module() override { return model_->module(); }
  std::vector<std::vector<Tensor>> parameter_groups() override {
    return app::parameter_groups(*model_);
  }
  std::vector<std::pair<std::string, Generator*>> generators() override {
    return model_->generators();
  }
  std::string describe() const override { return model_->describe(); }

  Tensor loss(const data::Batch& batch, Device device) override {
    const Tensor images = batch.at("image").to(device);
    const Tensor labels = batch.at("label").to(device);
    CrossEntropyOptions ce;
    ce.ignore_index = kIgnoreIndex;
    const SegmentationModel::Output out = model_->forward(images, /*upsample=*/true);
    Tensor loss = cross_entropy(out.out, labels, ce);
    if (out.aux.defined()) loss = loss + ex_.aux_weight * cross_entropy(out.aux, labels, ce);
    return loss;
  }

  ValidationResult validate(data::Loader& loader, const ValidationContext& context) override {
    const EvaluationResult r = evaluate_segmentation(*model_, loader, context.device,
                                                     ex_.num_classes, /*want_loss=*/true,
                                                     context.stop);
    ValidationResult v;
    v.interrupted = r.interrupted;
    v.loss = r.loss;
    v.score = r.scores.mean_iou;
    v.samples = r.images;
    v.record = scores_json(r);
    char line[160];
    std::snprintf(line, sizeof(line), "loss %.4f  mIoU %.4f  pixel acc %.4f", r.loss,
                  r.scores.mean_iou, r.scores.pixel_accuracy);
    v.summary = line;
    return v;
  }

 private:
  SegmentationExperiment ex_;
  std::unique_ptr<data::Dataset> train_set_, val_set_;
  std::unique_ptr<SegmentationModel> model_;
};

}  // namespace

int train_segmentation_main(const char* program, const char* arch, int argc,
                            const char* const* argv) {
  return training_main(
      program, std::string("Trains a ") + arch + " segmentation model on Cityscapes (19 classes).",
      argc, argv, [&](Config& config) -> std::unique_ptr<TrainingTask> {
        SegmentationExperiment ex = read_segmentation_experiment(config);
        SEG_CHECK(ex.arch == arch, program, " trains model.arch '", arch, "', but ",
                  config.origin(), " names '", ex.arch, "'");
        return std::make_unique<SegmentationTask>(std::move(ex));
      });
}

}  // namespace seg::app
